"""Token store: per-frame proprioceptive state at the kept frames, its train stats, windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from hma import storage
from hma.episodes import load_registry
from hma.pipeline import store
from hma.pipeline.store import StoreError, reader
from hma.pipeline.store.layout import write_json, zarr_store
from hma.pipeline.store.reader import TokenStore, WindowSampler
from hma.pipeline.store.summary import inspect_lines
from hma.stats import ActionStats
from tests.helpers.store_data import info, label_of, labelled, state_label

LIFT = "robosuite_lift"  # stride 2 in the registry, so finalize accepts it
STRIDE = 2
S = 5
WINDOW = 3
# (episode number, kept frames, split) per unit
UNITS = {
    "u0": [(0, 6, "train"), (1, 4, "val")],
    "u1": [(2, 7, "train"), (3, 5, "train")],
}


def write(url: str, state_dim: int = S) -> dict[int, store.EncodedEpisode]:
    """The UNITS episodes of LIFT with state of `state_dim`, and in u1 one pusht episode without."""
    store.create_store(url, info())
    episodes = {}
    for unit, specs in UNITS.items():
        eps = [
            labelled(e, frames, STRIDE, split=split, state_dim=state_dim)
            for e, frames, split in specs
        ]
        episodes.update({e: ep for (e, _, _), ep in zip(specs, eps, strict=True)})
        if unit == "u1":
            eps.append(labelled(9, 4, stride=1, action_dim=2, dataset="pusht"))
        store.write_unit(url, unit, eps, [], len(eps))
    return episodes


def number(episode_id: str) -> int:
    return int(episode_id.split("-")[-1])


def train_state(episodes: dict[int, store.EncodedEpisode]) -> np.ndarray:
    """float64 [N,S]: the state rows of every train episode."""
    rows = [ep.state for ep in episodes.values() if ep.split == "train"]
    return np.concatenate(rows).astype(np.float64)


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store.zarr")
    return request.getfixturevalue("s3_bucket") + "/store.zarr"


def test_state_round_trips_at_the_kept_frames(url):
    write(url)
    ts = TokenStore.open(url)
    view = ts.dataset(LIFT)
    assert view.state_dim == S and ts.dataset("pusht").state_dim == 0
    for i, episode_id in enumerate(view.episode_ids):
        frames = np.arange(view.length[i])
        want = state_label(number(episode_id), frames, STRIDE, S)  # raw steps 0, s, 2s, ...
        np.testing.assert_array_equal(ts.read_state(LIFT, i, 0, len(frames)), want)
        np.testing.assert_array_equal(ts.read_state(LIFT, i, 1, 3), want[1:3])
    assert ts.read_state("pusht", 0, 0, 4).shape == (4, 0)

    arr = zarr.open_array(zarr_store(url), path=f"{LIFT}/shards/u1/state", mode="r")
    assert arr.dtype == np.float32 and arr.shape == (12, S) and arr.shards is not None
    assert not storage.exists(storage.join(url, "pusht/shards/u1/state/zarr.json"))
    commit = json.loads(storage.read_fresh(storage.join(url, "_commits", "u1.json")))
    assert commit["datasets"][LIFT]["state_dim"] == S
    assert commit["datasets"]["pusht"]["state_dim"] == 0
    assert commit["datasets"]["pusht"]["state_train_stats"] is None


def test_state_reads_the_same_past_the_in_memory_cache(tmp_path, monkeypatch):
    url = str(tmp_path / "s.zarr")
    write(url)
    cached = TokenStore.open(url)
    episodes = range(len(cached.dataset(LIFT)))
    want = [cached.read_state(LIFT, i, 1, 3) for i in episodes]
    assert isinstance(cached._open(LIFT, 0).state, np.ndarray)
    monkeypatch.setattr(reader, "ACTIONS_CACHE_BYTES", 0)  # every array stays on disk
    uncached = TokenStore.open(url)
    for i in episodes:
        np.testing.assert_array_equal(uncached.read_state(LIFT, i, 1, 3), want[i])
    assert isinstance(uncached._open(LIFT, 0).state, zarr.Array)


def test_state_train_stats_match_numpy_and_finalize(tmp_path):
    url = str(tmp_path / "s.zarr")
    train = train_state(write(url))
    stats = TokenStore.open(url).dataset(LIFT).state_stats
    assert stats.count == len(train) == 6 + 7 + 5  # the val episode's rows are left out
    np.testing.assert_allclose(stats.mean, train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, train.std(0), rtol=1e-10)
    np.testing.assert_array_equal(stats.min, train.min(0))
    np.testing.assert_array_equal(stats.max, train.max(0))

    store.finalize(url, load_registry())
    attrs = zarr.open_group(zarr_store(url), path=LIFT, mode="r").attrs
    assert attrs["state_dim"] == S
    finalized = ActionStats.from_dict(attrs["state_stats"])
    np.testing.assert_array_equal(finalized.mean, stats.mean)
    np.testing.assert_array_equal(finalized.m2, stats.m2)
    pusht = zarr.open_group(zarr_store(url), path="pusht", mode="r").attrs
    assert pusht["state_dim"] == 0 and pusht["state_stats"] is None

    report = store.inspect_store(url)
    assert report["datasets"][LIFT]["state_dim"] == S
    text = "\n".join(inspect_lines(report))
    assert "state dim 5" in text and "state mean" in text and "state dim 0" in text


def test_windows_carry_normalised_state(url):
    episodes = write(url)
    ts = TokenStore.open(url)
    view = ts.dataset(LIFT)
    train = train_state(episodes)
    windows = WindowSampler(ts, WINDOW, seed=3).sample(LIFT, 40)
    for w in windows:
        episode, frame = label_of(w.tokens)
        assert (episode == number(w.episode_id)).all()
        raw = state_label(number(w.episode_id), frame, STRIDE, S)  # the tokens' own frames
        assert w.state.dtype == np.float32 and w.state.shape == (WINDOW, S)
        np.testing.assert_allclose(w.state, view.state_stats.normalise(raw))
        expected = (raw - train.mean(0)) / train.std(0)
        np.testing.assert_allclose(w.state, expected, rtol=1e-4, atol=1e-5)
    assert {w.episode_id for w in windows} == {f"{LIFT}-{e}" for e in (0, 2, 3)}
    pusht = WindowSampler(ts, WINDOW, datasets=["pusht"]).sample("pusht", 2)
    assert all(w.state.shape == (WINDOW, 0) and w.state.dtype == np.float32 for w in pusht)


def test_a_store_without_state_reads_state_dim_0(tmp_path):
    url = str(tmp_path / "s.zarr")
    write(url, state_dim=0)
    ts = TokenStore.open(url)
    view = ts.dataset(LIFT)
    assert view.state_dim == 0 and view.state_stats is None
    assert ts.read_state(LIFT, 0, 0, 6).shape == (6, 0)
    for w in WindowSampler(ts, WINDOW).sample(LIFT, 5):
        assert w.state.shape == (WINDOW, 0) and w.state.dtype == np.float32
    assert not storage.exists(storage.join(url, f"{LIFT}/shards/u0/state/zarr.json"))


def test_a_store_written_before_state_was_kept_still_reads(tmp_path):
    url = str(tmp_path / "s.zarr")
    write(url, state_dim=0)
    for unit in UNITS:  # commit records as they were: no state keys
        path = storage.join(url, "_commits", f"{unit}.json")
        commit = json.loads(storage.read_fresh(path))
        for record in commit["datasets"].values():
            del record["state_dim"], record["state_train_stats"]
        write_json(path, commit)
    ts = TokenStore.open(url)
    assert ts.dataset(LIFT).state_dim == 0 and ts.dataset(LIFT).state_stats is None
    (w,) = WindowSampler(ts, WINDOW).sample(LIFT, 1)
    assert w.state.shape == (WINDOW, 0)
    store.finalize(url, load_registry())
    assert zarr.open_group(zarr_store(url), path=LIFT, mode="r").attrs["state_dim"] == 0


@pytest.mark.parametrize(
    ("widths", "words"),
    [
        ((3, 0), f"'{LIFT}-1': no state, but episode '{LIFT}-0' of this unit has state width 3"),
        ((0, 3), f"'{LIFT}-1': state width 3, but episode '{LIFT}-0' of this unit has no state"),
        (
            (3, 4),
            f"'{LIFT}-1': state width 4, but episode '{LIFT}-0' of this unit has state width 3",
        ),
    ],
)
def test_mixed_state_widths_in_one_dataset_are_refused(tmp_path, widths, words):
    url = str(tmp_path / "s.zarr")
    store.create_store(url, info())
    eps = [labelled(e, 4, STRIDE, state_dim=width) for e, width in enumerate(widths)]
    with pytest.raises(StoreError) as e:
        store.write_unit(url, "u", eps, [], 2)
    assert url in str(e.value) and f"dataset '{LIFT}'" in str(e.value) and words in str(e.value)
    assert store.committed_units(url) == set()


def test_state_of_the_wrong_length_is_refused(tmp_path):
    url = str(tmp_path / "s.zarr")
    store.create_store(url, info())
    ep = labelled(0, 4, STRIDE, state_dim=S)
    ep.state = ep.state[:3]
    with pytest.raises(StoreError, match=rf"'{LIFT}-0': state \[3, 5\], expected \[4,5\]"):
        store.write_unit(url, "u", [ep], [], 1)


def test_units_disagreeing_on_state_dim_are_refused(tmp_path):
    url = str(tmp_path / "s.zarr")
    store.create_store(url, info())
    store.write_unit(url, "u0", [labelled(0, 4, STRIDE, state_dim=3)], [], 1)
    store.write_unit(url, "u1", [labelled(1, 4, STRIDE)], [], 1)
    with pytest.raises(
        StoreError, match=f"'{LIFT}' has state_dim 3 in unit 'u0' but 0 in unit 'u1'"
    ):
        TokenStore.open(url)
