"""Raw video format (manifest.jsonl + mp4 + actions parquet): round trips, foreign manifests, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hma.episodes import load_registry
from hma.errors import EpisodeError, FormatError
from hma.formats import detect_format, load_row, mp4, video

MAX_MEAN_ABS_ERROR = 6.0
REGISTRY = load_registry()


def episodes_for(make_episode, count=3, **kwargs):
    eps = []
    for seed in range(count):
        steps = 8 + 3 * seed
        ep = make_episode(
            dataset="pusht", steps=steps, seed=seed, split="val" if seed == 1 else "train", **kwargs
        )
        rng = np.random.default_rng(seed)
        ep.extras = {
            "reward": rng.normal(size=steps).astype(np.float32),
            "column": rng.normal(size=(steps, 1)),
            "grid": rng.integers(0, 4, (steps, 2, 3)).astype(np.int32),
        }
        ep.episode_id = f"pusht/run {seed}"  # not a safe file name: the writer must cope
        ep.meta = {"seed": seed}
        ep.frames[..., 2] = index_code(steps)
        ep.success = [True, None, False][seed]
        if seed == 2:
            ep.state = None
        eps.append(ep)
    return eps


def index_code(steps: int) -> np.ndarray:
    """Blue level per frame, 12 apart: a frame decoded one step off is caught beyond codec noise."""
    return (20 + 12 * np.arange(steps) % 220)[:, None, None].astype(np.uint8)


def assert_round_trip(got, want):
    assert (got.dataset, got.episode_id, got.split, got.hz) == (
        want.dataset,
        want.episode_id,
        want.split,
        want.hz,
    )
    assert (got.instruction, got.success, got.meta) == (want.instruction, want.success, want.meta)
    assert got.actions.dtype == np.float32 and np.array_equal(got.actions, want.actions)
    if want.state is None:
        assert got.state is None
    else:
        assert np.array_equal(got.state, want.state)
    assert got.extras.keys() == want.extras.keys()
    for key, arr in want.extras.items():
        assert got.extras[key].dtype == arr.dtype, key
        assert np.array_equal(got.extras[key], arr), key
    assert got.frames.shape == want.frames.shape
    error = np.abs(got.frames.astype(np.int16) - want.frames.astype(np.int16)).mean()
    assert error < MAX_MEAN_ABS_ERROR
    blue = got.frames[..., 2].mean(axis=(1, 2))
    assert np.abs(blue - want.frames[..., 2].mean(axis=(1, 2))).max() < 4, blue


def test_round_trip(tmp_path, make_episode):
    episodes = episodes_for(make_episode, size=45)  # odd size: padded for yuv420p, cropped back
    url = str(tmp_path / "raw")
    assert video.write(episodes, url, REGISTRY) == 3
    assert detect_format(url) == "video"
    refs = video.list_refs(url, None)
    assert [r["episode_id"] for r in refs] == [ep.episode_id for ep in episodes]
    for ref, episode in zip(refs, episodes, strict=True):
        assert_round_trip(video.load(ref), episode)
    with open(f"{url}/manifest.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert lines[0]["video"].startswith("videos/") and lines[0]["video"].endswith(".mp4")
    assert os.path.exists(f"{url}/{lines[0]['actions']}")
    with pytest.raises(FormatError, match="already exists"):
        video.write(episodes, url, REGISTRY)


def test_s3_round_trip(s3_bucket, make_episode):
    episodes = episodes_for(make_episode)
    url = f"{s3_bucket}/raw"
    video.write(episodes, url, REGISTRY)
    assert detect_format(url) == "video"
    for ref, episode in zip(video.list_refs(url, None), episodes, strict=True):
        assert_round_trip(video.load(ref), episode)


def write_foreign(root, lines, frames=8, actions=8):
    """A manifest as another tool would write it: minimal keys, variable-length list columns."""
    os.makedirs(root / "clips", exist_ok=True)
    mp4.write_mp4(np.full((frames, 32, 32, 3), 90, np.uint8), str(root / "clips/a.mp4"), 10)
    table = pa.table({"action": [[0.1 * i, -0.1 * i] for i in range(actions)]})
    pq.write_table(table, root / "clips/a.parquet")
    with open(root / "manifest.jsonl", "w") as f:
        f.write("\n".join(json.dumps(line) for line in lines) + "\n")


def test_foreign_manifest_with_defaults(tmp_path):
    write_foreign(
        tmp_path, [{"episode_id": "a", "video": "clips/a.mp4", "actions": "clips/a.parquet"}]
    )
    with pytest.raises(FormatError, match="dataset"):
        video.list_refs(str(tmp_path), None)
    (ref,) = video.list_refs(str(tmp_path / "manifest.jsonl"), "pusht")
    episode = video.load(ref)
    assert (episode.split, episode.hz, episode.success, episode.state) == (
        "train",
        10.0,
        None,
        None,
    )
    assert episode.actions.shape == (8, 2) and episode.actions.dtype == np.float32
    assert episode.frames.shape == (8, 32, 32, 3)


def test_missing_actions_file_names_episode_and_file(tmp_path):
    line = {
        "episode_id": "ep-7",
        "dataset": "pusht",
        "video": "clips/a.mp4",
        "actions": "nope.parquet",
    }
    write_foreign(tmp_path, [line])
    (ref,) = video.list_refs(str(tmp_path), None)
    with pytest.raises(FormatError, match="ep-7") as err:
        video.load(ref)
    assert "nope.parquet" in str(err.value)


def test_actions_length_mismatch_is_reported(tmp_path):
    line = {
        "episode_id": "short",
        "dataset": "pusht",
        "video": "clips/a.mp4",
        "actions": "clips/a.parquet",
    }
    write_foreign(tmp_path, [line], frames=8, actions=6)
    (ref,) = video.list_refs(str(tmp_path), None)
    with pytest.raises(FormatError, match="8 frames but actions file .* has 6 rows"):
        video.load(ref)
    row = load_row(ref, REGISTRY)  # in the pipeline: a labelled rejected row, not a crash
    assert "short" in row["error"] and "6 rows" in row["error"]


def test_wrong_action_width_is_rejected_by_validation(tmp_path):
    line = {"episode_id": "wide", "dataset": "robosuite_lift", "video": "clips/a.mp4"}
    write_foreign(tmp_path, [{**line, "actions": "clips/a.parquet"}])
    (ref,) = video.list_refs(str(tmp_path), None)
    row = load_row(ref, REGISTRY)
    assert EpisodeError.__name__ in row["error"] and "action dim 2" in row["error"]


def test_corrupt_video_names_file(tmp_path):
    line = {
        "episode_id": "bad",
        "dataset": "pusht",
        "video": "clips/a.mp4",
        "actions": "clips/a.parquet",
    }
    write_foreign(tmp_path, [line])
    with open(tmp_path / "clips/a.mp4", "r+b") as f:
        f.truncate(300)
    (ref,) = video.list_refs(str(tmp_path), None)
    with pytest.raises(FormatError, match="a.mp4") as err:
        video.load(ref)
    assert "bad" in str(err.value)


def test_bad_manifest_lines_name_the_line(tmp_path):
    write_foreign(tmp_path, [{"episode_id": "a", "video": "clips/a.mp4"}])
    with pytest.raises(FormatError, match=r"manifest.jsonl:1: missing key\(s\) actions"):
        video.list_refs(str(tmp_path), "pusht")
    good = {"episode_id": "a", "video": "clips/a.mp4", "actions": "clips/a.parquet"}
    with open(tmp_path / "manifest.jsonl", "w") as f:
        f.write(json.dumps(good) + "\n\n{not json\n")
    with pytest.raises(FormatError, match="manifest.jsonl:3: not valid JSON"):
        video.list_refs(str(tmp_path), "pusht")
    assert not video.sniff(str(tmp_path / "elsewhere"))
