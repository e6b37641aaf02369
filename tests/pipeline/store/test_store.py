"""Token store writer: layout and dtypes, commits, retries, finalize stats and counts, inspect."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr
from PIL import Image

from hma import storage
from hma.envs.procedural import moving_block_frames
from hma.episodes import load_registry
from hma.pipeline import store
from hma.pipeline.store import Rejection, StoreError, writer
from hma.pipeline.store.layout import zarr_store
from hma.pipeline.store.reader import TokenStore
from hma.pipeline.store.summary import STRIP_FRAMES, inspect_lines, success_line
from hma.stats import ActionStats
from hma.tokenize.checkpoint import build_tokenizer
from hma.tokenize.presets import fsq
from tests.helpers.store_data import GRID, info, labelled, random_episode


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path) -> str:
    return _url(request, tmp_path, request.param)


def _url(request, tmp_path, where: str) -> str:
    if where == "local":
        return str(tmp_path / "store.zarr")
    return request.getfixturevalue("s3_bucket") + "/store.zarr"


@pytest.mark.parametrize(
    "where,kind", [("local", "vq"), ("local", "soft"), ("s3", "vq")], ids=["vq", "soft", "s3-vq"]
)
def test_units_round_trip_with_compact_dtypes(request, tmp_path, where, kind):
    url = _url(request, tmp_path, where)
    store.create_store(url, info(kind))
    rng = np.random.default_rng(0)
    units = {
        "u1": [random_episode(rng, "a", 9, kind), random_episode(rng, "b", 4, kind, "val")],
        "u2": [random_episode(rng, "c", 7, kind)],
    }
    for unit, eps in units.items():
        commit = store.write_unit(url, unit, eps, [], len(eps))
        assert commit["datasets"]["robosuite_lift"]["episodes"] == len(eps)
    assert store.committed_units(url) == {"u1", "u2"}

    ts = TokenStore.open(url)
    view = ts.dataset("robosuite_lift")
    assert view.episode_ids == ["a", "b", "c"]
    assert view.split.tolist() == ["train", "val", "train"]
    for i, ep in enumerate(units["u1"] + units["u2"]):
        tokens, actions = ts.read_episode("robosuite_lift", i)
        np.testing.assert_array_equal(actions, ep.actions)
        if kind == "vq":
            assert tokens.dtype == np.int64
            np.testing.assert_array_equal(tokens, ep.tokens)
        else:
            np.testing.assert_array_equal(tokens, ep.tokens.astype(np.float16).astype(np.float32))

    arr = zarr.open_array(zarr_store(url), path="robosuite_lift/shards/u1/tokens", mode="r")
    assert arr.dtype == (np.uint16 if kind == "vq" else np.float16)
    assert arr.shards is not None and arr.shape[0] == 13


def test_large_vocab_is_stored_as_uint32(tmp_path):
    url = str(tmp_path / "s.zarr")
    store.create_store(url, info(vocab=70000))
    ep = random_episode(np.random.default_rng(1), "big", 5, vocab=70000)
    ep.tokens[0, 0, 0] = 69999
    store.write_unit(url, "u", [ep], [], 1)
    arr = zarr.open_array(zarr_store(url), path="robosuite_lift/shards/u/tokens", mode="r")
    assert arr.dtype == np.uint32
    np.testing.assert_array_equal(
        TokenStore.open(url).read_episode("robosuite_lift", 0)[0], ep.tokens
    )


def test_tokens_outside_the_vocab_are_refused(tmp_path):
    url = str(tmp_path / "s.zarr")
    store.create_store(url, info(vocab=100))
    ep = labelled(3, 5)  # labels 3000.. >= vocab 100
    with pytest.raises(StoreError, match="robosuite_lift-3.*vocabulary"):
        store.write_unit(url, "u", [ep], [], 1)
    assert store.committed_units(url) == set()


def test_a_unit_without_commit_is_invisible(url, monkeypatch):
    store.create_store(url, info())
    store.write_unit(url, "done", [labelled(0, 5)], [], 1)
    real = writer.write_json

    def crash_before_commit(target: str, obj):
        if "_commits" in target:
            raise RuntimeError("worker died")
        real(target, obj)

    monkeypatch.setattr(writer, "write_json", crash_before_commit)
    with pytest.raises(RuntimeError):
        store.write_unit(url, "crashed", [labelled(1, 6)], [Rejection("pusht", "x", "s", "r")], 2)
    monkeypatch.undo()
    assert storage.exists(storage.join(url, "robosuite_lift/shards/crashed/tokens/zarr.json"))

    assert store.committed_units(url) == {"done"}
    ts = TokenStore.open(url)
    assert ts.dataset("robosuite_lift").episode_ids == ["robosuite_lift-0"]
    assert ts.quarantine() == []
    summary = store.finalize(url, load_registry())
    assert (summary.read, summary.committed, summary.quarantined) == (1, 1, 0)


def test_a_retried_unit_replaces_its_earlier_attempt(url):
    store.create_store(url, info())
    store.write_unit(url, "u", [labelled(0, 5), labelled(1, 7)], [], 2)
    store.write_unit(url, "other", [labelled(2, 4)], [], 1)
    # the retry saw one episode fewer (its source was rejected this time) and one frame more
    retry = [labelled(0, 6)]
    store.write_unit(url, "u", retry, [Rejection("robosuite_lift", "x", "src", "bad")], 2)

    ts = TokenStore.open(url)
    view = ts.dataset("robosuite_lift")
    assert sorted(view.episode_ids) == ["robosuite_lift-0", "robosuite_lift-2"]
    assert int(view.length.sum()) == 6 + 4
    arr = zarr.open_array(zarr_store(url), path="robosuite_lift/shards/u/tokens", mode="r")
    assert arr.shape[0] == 6  # the first attempt's 12 frames are gone, not shadowed
    i = view.episode_ids.index("robosuite_lift-0")
    np.testing.assert_array_equal(ts.read_episode("robosuite_lift", i)[0], retry[0].tokens)
    assert [q["episode_id"] for q in ts.quarantine()] == ["x"]
    summary = store.finalize(url, load_registry())
    assert (summary.read, summary.committed, summary.quarantined) == (3, 2, 1)


def test_finalize_merges_exact_train_stats_and_conserves_counts(url):
    store.create_store(url, info())
    rng = np.random.default_rng(2)
    # pixel-scale offsets, where a naive E[x^2] - E[x]^2 would lose digits; val far away
    units = {
        f"u{k}": [
            random_episode(rng, f"e{k}{j}", int(rng.integers(1, 9)), offset=300.0) for j in range(3)
        ]
        + [random_episode(rng, f"v{k}", 5, split="val", offset=-1000.0)]
        for k in range(4)
    }
    units["u1"].append(random_episode(rng, "p0", 6, dataset="pusht", stride=1, action_dim=2))
    rejected = {"u2": [Rejection("pusht", "p1", "src.mp4", "episode shorter than stride")]}
    for unit, eps in units.items():
        bad = rejected.get(unit, [])
        store.write_unit(url, unit, eps, bad, len(eps) + len(bad))

    summary = store.finalize(url, load_registry())
    train = np.concatenate(
        [
            ep.actions.reshape(-1, 7)
            for eps in units.values()
            for ep in eps
            if ep.split == "train" and ep.dataset == "robosuite_lift"
        ]
    ).astype(np.float64)
    attrs = zarr.open_group(zarr_store(url), path="robosuite_lift", mode="r").attrs
    stats = ActionStats.from_dict(attrs["action_stats"])
    assert stats.count == len(train)
    np.testing.assert_allclose(stats.mean, train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, train.std(0), rtol=1e-10)
    np.testing.assert_array_equal(stats.min, train.min(0))
    np.testing.assert_array_equal(stats.max, train.max(0))
    assert attrs["stride"] == 2 and attrs["action_dim"] == 7
    assert attrs["registry"]["embodiment"] == "panda"
    assert attrs["shards"] == ["u0", "u1", "u2", "u3"]
    assert attrs["splits"] == {"train": 12, "val": 4}

    lift, pusht = summary.datasets["robosuite_lift"], summary.datasets["pusht"]
    assert (lift.read, lift.committed, lift.quarantined) == (16, 16, 0)
    assert (pusht.read, pusht.committed, pusht.quarantined) == (2, 1, 1)
    assert summary.read == 18 and summary.conserved
    assert lift.frames == sum(len(ep.tokens) for eps in units.values() for ep in eps[:4])
    assert lift.tokens == lift.frames * GRID[0] * GRID[1]
    assert lift.bytes > 0
    table = summary.table()
    assert "robosuite_lift" in table and "pusht" in table and "conserved" in table
    assert json.loads(json.dumps(summary.to_dict()))["datasets"]["pusht"]["quarantined"] == 1


def test_finalize_refuses_a_stride_the_registry_does_not_have(tmp_path):
    url = str(tmp_path / "s.zarr")
    store.create_store(url, info())
    ep = random_episode(np.random.default_rng(3), "p", 4, dataset="pusht", stride=3, action_dim=2)
    store.write_unit(url, "u", [ep], [], 1)
    with pytest.raises(StoreError, match="'pusht'.*stride 3.*registry says stride 1"):
        store.finalize(url, load_registry())


def test_a_store_refuses_another_tokenizer(url):
    store.create_store(url, info(fingerprint="a" * 64))
    store.create_store(url, info(fingerprint="a" * 64))  # same tokenizer: fine (resume)
    with pytest.raises(StoreError) as e:
        store.create_store(url, info(fingerprint="b" * 64))
    assert "a" * 64 in str(e.value) and "b" * 64 in str(e.value) and url in str(e.value)


def test_inspect_and_decode_strip(tmp_path):
    tok = build_tokenizer(fsq("tiny"))
    url = str(tmp_path / "s.zarr")
    store.create_store(url, store.TokenizerInfo.from_tokenizer(tok, "mem://tiny", (64, 64)))
    frames = [moving_block_frames(n, 64, seed) for seed, n in enumerate((10, 3))]
    eps = [
        store.EncodedEpisode(
            "pusht", f"ep{i}", "train", True, tok.encode(f).numpy(), np.zeros((len(f), 1, 2))
        )
        for i, f in enumerate(frames)
    ]
    store.write_unit(url, "u", eps, [Rejection("pusht", "gone", "src", "unreadable")], 3)
    store.finalize(url, load_registry())

    report = json.loads(json.dumps(store.inspect_store(url)))  # the CLI prints it as JSON
    assert report["fingerprint"] == tok.fingerprint
    assert (report["read"], report["committed"], report["quarantined"]) == (3, 2, 1)
    assert report["datasets"]["pusht"]["frames"] == 13
    assert report["datasets"]["pusht"]["success"]["success"] == 2
    assert "    success 2/2 labelled, 100%" in inspect_lines(report)
    assert success_line({"success": 1, "failure": 1, "unknown": 8}) == "success 2/10 labelled, 50%"
    assert success_line({"success": 0, "failure": 0, "unknown": 3}) == "success 0/3 labelled"
    assert report["quarantine"][0]["reason"] == "unreadable"

    out = str(tmp_path / "strip.png")
    assert store.decode_strip(url, 2, tok, out) == out
    strip = np.asarray(Image.open(out))
    assert strip.shape == (2 * 64, STRIP_FRAMES * 64, 3)
    which = np.unique(np.linspace(0, 9, STRIP_FRAMES).round().astype(int))
    first = tok.decode(eps[0].tokens[which]).numpy()[0]  # decoded in the same batch
    np.testing.assert_array_equal(strip[:64, :64], first)
    assert not strip[64:, 3 * 64 :].any()  # the 3-frame episode leaves the rest of its row black

    other = build_tokenizer(fsq("tiny"))  # fresh random weights: another fingerprint
    with pytest.raises(StoreError, match=other.fingerprint):
        store.decode_strip(url, 1, other, out)
    assert os.path.getsize(out) > 0
