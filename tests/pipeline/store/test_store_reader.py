"""Token store reader: committed units only, windows inside episodes, normalised actions."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr

from hma import storage
from hma.episodes import load_registry
from hma.pipeline import store
from hma.pipeline.store import Rejection, StoreError
from hma.pipeline.store.layout import remove, zarr_store
from hma.pipeline.store.reader import TokenStore, WindowSampler
from hma.stats import ActionStats
from tests.helpers.store_data import info, label_of, labelled

WINDOW = 4
# (episode number, kept frames, split) per unit; episodes 2 and 6 are shorter than the window
UNITS = {
    "u0": [(0, 9, "train"), (1, 4, "train"), (2, 3, "train")],
    "u1": [(3, 12, "train"), (4, 6, "val")],
    "u2": [(5, 7, "train"), (6, 1, "val"), (7, 5, "val")],
}


def write(url: str, kind: str = "vq") -> dict[int, store.EncodedEpisode]:
    store.create_store(url, info(kind))
    episodes = {}
    for unit, specs in UNITS.items():
        eps = [labelled(e, frames, split=split, kind=kind) for e, frames, split in specs]
        episodes.update({e: ep for (e, _, _), ep in zip(specs, eps, strict=True)})
        bad = [
            Rejection("robosuite_lift", f"bad-{unit}", f"src/{unit}", "episode shorter than stride")
        ]
        store.write_unit(url, unit, eps, bad, len(eps) + 1)
    return episodes


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store.zarr")
    return request.getfixturevalue("s3_bucket") + "/store.zarr"


def check_window(w, view, episodes) -> None:
    """The window's tokens are consecutive frames of exactly the episode it claims."""
    e = int(w.episode_id.split("-")[-1])
    assert view.episode_ids[w.episode] == w.episode_id
    episode, frame = label_of(w.tokens)
    np.testing.assert_array_equal(episode, np.full(WINDOW, e))
    np.testing.assert_array_equal(frame, w.start + np.arange(WINDOW))
    raw = episodes[e].actions[w.start : w.start + WINDOW]  # (T, s, A)
    np.testing.assert_allclose(view.stats.normalise(raw).reshape(WINDOW, -1), w.actions)


def test_windows_stay_inside_one_episode(url):
    episodes = write(url)
    ts = TokenStore.open(url)
    view = ts.dataset("robosuite_lift")
    sampler = WindowSampler(ts, WINDOW, seed=1)
    train = [(e, f) for spec in UNITS.values() for e, f, s in spec if s == "train"]
    assert sampler.num_windows("robosuite_lift") == sum(
        f - WINDOW + 1 for _, f in train if f >= WINDOW
    )
    assert sampler.skipped == {"robosuite_lift": 1}  # episode 2 (3 frames)

    windows = sampler.sample("robosuite_lift", 100)
    for w in windows:
        assert w.tokens.dtype == np.int64 and w.tokens.shape == (WINDOW, 2, 3)
        assert w.actions.dtype == np.float32 and w.actions.shape == (WINDOW, 2 * 7)
        check_window(w, view, episodes)
    seen = {w.episode_id for w in windows}
    assert seen == {"robosuite_lift-0", "robosuite_lift-1", "robosuite_lift-3", "robosuite_lift-5"}

    val = WindowSampler(ts, WINDOW, split="val").sample("robosuite_lift", 20)
    assert {w.episode_id for w in val} == {"robosuite_lift-4", "robosuite_lift-7"}


def test_soft_windows_and_same_seed_same_windows(tmp_path):
    url = str(tmp_path / "soft.zarr")
    episodes = write(url, "soft")
    ts = TokenStore.open(url)
    a = WindowSampler(ts, WINDOW, seed=5).sample("robosuite_lift", 30)
    b = WindowSampler(pickle.loads(pickle.dumps(ts)), WINDOW, seed=5).sample("robosuite_lift", 30)
    for wa, wb in zip(a, b, strict=True):
        assert wa.tokens.dtype == np.float32 and wa.tokens.shape == (WINDOW, 4, 2, 3)
        check_window(wa, ts.dataset("robosuite_lift"), episodes)
        assert (wa.episode_id, wa.start) == (wb.episode_id, wb.start)
        np.testing.assert_array_equal(wa.tokens, wb.tokens)


def test_actions_normalise_with_train_stats_and_round_trip(tmp_path):
    url = str(tmp_path / "s.zarr")
    episodes = write(url)
    view = TokenStore.open(url).dataset("robosuite_lift")
    train = np.concatenate(
        [ep.actions.reshape(-1, 7) for ep in episodes.values() if ep.split == "train"]
    ).astype(np.float64)
    np.testing.assert_allclose(view.stats.mean, train.mean(0))
    np.testing.assert_allclose(view.stats.std, train.std(0))
    for w in WindowSampler(TokenStore.open(url), WINDOW).sample("robosuite_lift", 10):
        raw = episodes[int(w.episode_id.split("-")[-1])].actions[w.start : w.start + WINDOW]
        expected = (raw - train.mean(0)) / train.std(0)
        np.testing.assert_allclose(w.actions.reshape(WINDOW, 2, 7), expected, rtol=1e-5)
        back = view.stats.denormalise(w.actions.reshape(WINDOW, 2, 7))
        np.testing.assert_allclose(back, raw, rtol=1e-5, atol=1e-3)


def test_episode_index_and_quarantine(url):
    write(url)
    # a unit whose task died after writing shards and quarantine, before its commit
    store.write_unit(url, "u3", [labelled(9, 8)], [Rejection("pusht", "late", "s", "r")], 2)
    remove(storage.join(url, "_commits", "u3.json"))

    ts = TokenStore.open(url)
    view = ts.dataset("robosuite_lift")
    assert ts.datasets == ["robosuite_lift"] and ts.kind == "vq" and ts.fingerprint == "f" * 64
    assert view.units == ["u0", "u1", "u2"] and len(view) == 8
    assert view.length.tolist() == [f for spec in UNITS.values() for _, f, _ in spec]
    assert view.success.tolist() == [1, 0, 1, 0, 1, 0, 1, 0]  # labelled: success = even e
    assert view.stride == 2 and view.action_dim == 7 and view.spec is None  # not finalized
    tokens, actions = ts.read_episode("robosuite_lift", 3)
    assert tokens.shape == (12, 2, 3) and actions.shape == (12, 2, 7)
    episode, frame = label_of(tokens)
    assert (episode == 3).all() and (frame == np.arange(12)).all()

    q = ts.quarantine()
    assert [(r["episode_id"], r["unit"]) for r in q] == [
        ("bad-u0", "u0"),
        ("bad-u1", "u1"),
        ("bad-u2", "u2"),
    ]
    assert q[0]["reason"] == "episode shorter than stride" and q[0]["source"] == "src/u0"


def test_reader_errors_name_the_culprit(tmp_path):
    url = str(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="no token store"):
        TokenStore.open(url)
    store.create_store(url, info())
    store.write_unit(url, "u", [labelled(0, 5, split="val")], [], 1)
    ts = TokenStore.open(url)
    with pytest.raises(StoreError, match="'pusht'.*robosuite_lift"):
        ts.dataset("pusht")
    with pytest.raises(ValueError, match="robosuite_lift-0"):
        ts.read_frames("robosuite_lift", 0, 3, 9)
    with pytest.raises(StoreError, match="no train episodes"):
        WindowSampler(ts, 2, split="val").sample("robosuite_lift", 1)
    with pytest.raises(StoreError, match="no train-split episode"):
        WindowSampler(ts, 2).sample("robosuite_lift", 1)


def test_stats_from_commits_match_finalize(tmp_path):
    url = str(tmp_path / "s.zarr")
    write(url)
    store.finalize(url, load_registry())
    ts = TokenStore.open(url)
    view = ts.dataset("robosuite_lift")
    assert view.spec is not None and view.spec.stride == 2
    attrs = zarr.open_group(zarr_store(url), path="robosuite_lift", mode="r").attrs
    finalized = ActionStats.from_dict(attrs["action_stats"])
    np.testing.assert_array_equal(finalized.mean, view.stats.mean)
    np.testing.assert_array_equal(finalized.m2, view.stats.m2)
