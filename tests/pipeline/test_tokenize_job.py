"""`hma tokenize` on the session Ray cluster: every format into vq and soft stores, S3, resume
after a killed driver, a killed tokenizer worker, and bad input quarantined with its reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import yaml

from hma import cli, storage
from hma.cli.tokens import tokenize
from hma.envs.procedural import STATE_DIM, procedural_episodes
from hma.episodes import keep_frames
from hma.formats import write_episodes
from hma.pipeline.cluster import loopback_environment
from hma.pipeline.plan import UNKNOWN_DATASET
from hma.pipeline.store import committed_units
from hma.pipeline.store.reader import TokenStore
from hma.pipeline.tokenize_job import TokenizeJobConfig, run_tokenize
from hma.pipeline.tokenize_summary import RunCounts, TokenizeSummary
from tests.helpers.tokenize_fixtures import (
    assert_store_matches,
    expected_content,
    save_tiny_tokenizer,
    store_content,
    write_mixed_sources,
    write_video_source,
)

FAST = {"episodes_per_unit": 2, "progress": False, "write_cpus": 0.25, "load_cpus": 0.5}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenize")


@pytest.fixture(scope="module")
def fsq_ckpt(workdir) -> str:
    return save_tiny_tokenizer("fsq", str(workdir / "fsq"))


@pytest.fixture(scope="module")
def mixed(workdir) -> list[dict]:
    return write_mixed_sources(str(workdir / "mixed"))


@pytest.fixture(scope="module")
def video(workdir) -> list[dict]:
    """A 12-episode video source for the interruption tests (one episode per unit there)."""
    return [write_video_source(str(workdir / "video12"), count=12)]


def _config(sources, ckpt, store_url, **kw) -> TokenizeJobConfig:
    return TokenizeJobConfig(
        sources=sources, tokenizer=ckpt, store=store_url, frame_size=(64, 64), **{**FAST, **kw}
    )


def test_every_format_into_a_vq_store_then_resume_is_a_no_op(
    ray_cluster, workdir, fsq_ckpt, mixed, capsys
):
    url = str(workdir / "vq.zarr")
    summary = run_tokenize(_config(mixed, fsq_ckpt, url))
    assert summary.ok, summary.lines()
    # 2 episodes per unit: pusht 5 -> 3, lift 4 -> 2, tabletop 2 train + 1 val shard -> 2, reach 2
    assert summary.units_committed == summary.units_planned == 9
    assert {k: (c.read, c.committed, c.quarantined) for k, c in summary.datasets.items()} == {
        "pusht": (5, 5, 0),
        "robosuite_lift": (4, 4, 0),
        "tabletop": (3, 3, 0),
        "metaworld_reach": (3, 3, 0),
    }
    # kept frames: T // stride per episode
    assert summary.frames == 5 * 12 + 4 * 6 + 3 * 10 + 3 * 2
    assert_store_matches(url, expected_content(mixed, fsq_ckpt), "vq")
    assert TokenStore.open(url).dataset("robosuite_lift").stride == 2

    # the same job as a YAML spec through the CLI entry and the job-spec runner: nothing to do
    spec = workdir / "job.yaml"
    data = {"kind": "tokenize", **_config(mixed, fsq_ckpt, url).model_dump(mode="json")}
    spec.write_text(
        "#!/usr/bin/env -S python -m hma.cli tokenize --config\n" + yaml.safe_dump(data)
    )
    before = sorted(os.listdir(os.path.join(url, "_commits")))
    assert cli.main(["tokenize", "--config", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "0/0 units committed (9 already in the store)" in out
    assert "OK" in out.splitlines()[-1]
    assert sorted(os.listdir(os.path.join(url, "_commits"))) == before


def test_soft_tokens_from_an_s3_source_into_an_s3_store(ray_cluster, workdir, s3_bucket):
    ckpt = save_tiny_tokenizer("kl", str(workdir / "kl"))
    source = write_video_source(f"{s3_bucket}/raw/pusht", count=4)
    url = f"{s3_bucket}/stores/soft.zarr"
    summary = run_tokenize(_config([source], ckpt, url))
    assert summary.ok, summary.lines()
    assert len(committed_units(url)) == 2
    ts = TokenStore.open(url)
    assert ts.kind == "soft" and ts.tokenizer.latent_channels == 4
    assert_store_matches(url, expected_content([source], ckpt), "soft")


def test_resume_after_the_driver_is_killed_mid_run(ray_cluster, workdir, fsq_ckpt, video):
    url = str(workdir / "crash.zarr")
    config = _config(video, fsq_ckpt, url, episodes_per_unit=1, max_inflight_writes=1)
    spec = workdir / "crash.yaml"
    spec.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {**os.environ, **loopback_environment(), "RAY_ADDRESS": ray_cluster}
    driver = subprocess.Popen(
        [sys.executable, "-m", "hma.cli", "tokenize", "--config", str(spec)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    commits = os.path.join(url, "_commits")
    deadline = time.monotonic() + 120
    while driver.poll() is None and time.monotonic() < deadline:
        if os.path.isdir(commits) and len(os.listdir(commits)) >= 2:
            driver.send_signal(signal.SIGKILL)  # a crash: no cleanup, writers cut off anywhere
            break
        time.sleep(0.02)
    driver.wait()
    assert driver.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    done_before = committed_units(url)
    assert 2 <= len(done_before) < 12

    summary = run_tokenize(config)
    assert summary.ok, summary.lines()
    assert summary.units_skipped == len(done_before)
    assert summary.units_committed == 12 - len(done_before)
    assert_store_matches(url, expected_content(video, fsq_ckpt), "vq")


def test_the_store_keeps_state_at_the_kept_frames(ray_cluster, workdir, fsq_ckpt):
    source = str(workdir / "state_lift.hdf5")
    episodes = procedural_episodes("robosuite_lift", 3, 11, 64, 5)  # stride 2: 5 kept frames
    write_episodes(episodes, source, "robomimic")
    url = str(workdir / "state.zarr")
    summary = run_tokenize(_config([{"url": source}], fsq_ckpt, url))
    assert summary.ok, summary.lines()

    ts = TokenStore.open(url)
    view = ts.dataset("robosuite_lift")
    assert view.state_dim == STATE_DIM > 0 and len(view.units) == 2
    for ep in episodes:
        i = view.episode_ids.index(ep.episode_id)
        kept = keep_frames(len(ep), view.stride)
        np.testing.assert_array_equal(ts.read_state(view.name, i, 0, len(kept)), ep.state[kept])
    train = np.concatenate(
        [ep.state[keep_frames(len(ep), 2)] for ep in episodes if ep.split == "train"]
    )
    assert view.state_stats.count == len(train)
    np.testing.assert_allclose(view.state_stats.mean, train.mean(0, dtype=np.float64), rtol=1e-9)


def _kill_tokenizer_actor(job_id: str, store_url: str, killed: list) -> None:
    """Kill the first live TokenizeActor process of this job with SIGKILL (a crashed worker);
    record its actor id and how many units were committed at that moment."""
    from ray._private import state  # actor table incl. PIDs; needs no dashboard

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for actor in state.actors(
            job_id=ray.JobID.from_hex(job_id), actor_state_name="ALIVE"
        ).values():
            if "TokenizeActor" in actor["ActorClassName"] and actor["Pid"]:
                os.kill(actor["Pid"], signal.SIGKILL)
                commits = os.path.join(store_url, "_commits")
                done = len(os.listdir(commits)) if os.path.isdir(commits) else 0
                killed.extend([actor["ActorID"], done])
                return
        time.sleep(0.02)


def test_a_killed_tokenizer_worker_is_retried_without_duplicates(ray_cluster, workdir):
    from ray._private import state

    # a slower tokenizer and longer episodes keep the actor busy for a while after it starts
    ckpt = save_tiny_tokenizer("fsq", str(workdir / "fsq_small"), preset="small")
    video = [write_video_source(str(workdir / "video12x48"), count=12, steps=48)]
    url = str(workdir / "killed.zarr")
    killed: list[str] = []
    job = ray.get_runtime_context().get_job_id()
    killer = threading.Thread(target=_kill_tokenizer_actor, args=(job, url, killed))
    killer.start()
    summary = run_tokenize(_config(video, ckpt, url, episodes_per_unit=1, batch_episodes=1))
    killer.join()
    assert killed, "no tokenizer actor was seen alive"
    assert killed[1] < 12, "the actor was killed after the run had committed everything"
    assert state.actors(actor_id=killed[0])["NumRestarts"] >= 1  # Ray restarted it
    assert summary.ok, summary.lines()
    assert summary.units_committed == 12
    assert_store_matches(url, expected_content(video, ckpt), "vq")


def _write_actions(url: str, actions: np.ndarray) -> None:
    flat = pa.array(np.ascontiguousarray(actions, np.float32).reshape(-1))
    fs, path = storage.filesystem(url)
    pq.write_table(
        pa.table({"action": pa.FixedSizeListArray.from_arrays(flat, actions.shape[1])}), path
    )


def test_bad_input_is_quarantined_with_its_reason(ray_cluster, workdir, fsq_ckpt):
    root = str(workdir / "bad")
    write_episodes(procedural_episodes("pusht", 7, 8, 64, 3), root, "video")
    with open(os.path.join(root, "manifest.jsonl")) as f:
        lines = [json.loads(x) for x in f]
    path = {
        e["episode_id"]: (os.path.join(root, e["video"]), os.path.join(root, e["actions"]))
        for e in lines
    }
    ids = [e["episode_id"] for e in lines]
    with open(path[ids[0]][0], "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42 this is not a video")  # corrupt video
    with open(path[ids[1]][1], "wb") as f:
        f.write(b"PAR1 garbage")  # unreadable file
    good = np.zeros((8, 2), np.float32)
    _write_actions(path[ids[2]][1], np.where(np.arange(8)[:, None] == 3, np.nan, good))  # NaN
    _write_actions(path[ids[3]][1], good[:6])  # length mismatch: 6 actions, 8 frames
    _write_actions(path[ids[4]][1], np.zeros((8, 3), np.float32))  # wrong action dim
    with open(os.path.join(root, "manifest.jsonl"), "a") as f:
        f.write("{not json\n")  # a damaged manifest line
    broken = os.path.join(str(workdir), "broken.hdf5")
    with open(broken, "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)  # an HDF5 signature, then nothing valid
    short = os.path.join(str(workdir), "short.hdf5")  # robosuite_lift has stride 2
    write_episodes(procedural_episodes("robosuite_lift", 1, 1, 64, 4), short, "robomimic")
    sources = [
        {"url": root},
        {"url": broken, "format": "robomimic", "dataset": "robosuite_lift"},
        {"url": short},
    ]
    url = str(workdir / "bad.zarr")
    summary = run_tokenize(_config(sources, fsq_ckpt, url, episodes_per_unit=4))

    assert summary.ok, summary.lines()  # bad input does not stop the run or break the counts
    counts = {k: (c.read, c.committed, c.quarantined) for k, c in summary.datasets.items()}
    # the damaged manifest line names no dataset it could be counted under
    assert counts == {"pusht": (7, 2, 5), UNKNOWN_DATASET: (1, 0, 1), "robosuite_lift": (2, 0, 2)}
    reasons = {q["episode_id"]: q["reason"] for q in TokenStore.open(url).quarantine()}
    manifest = os.path.join(root, "manifest.jsonl")
    assert "video" in reasons[ids[0]].lower()
    assert "cannot read actions file" in reasons[ids[1]]
    assert "non-finite" in reasons[ids[2]]
    assert "6 rows" in reasons[ids[3]]
    assert "action dim 3" in reasons[ids[4]]
    assert "not valid JSON" in reasons[f"{manifest}:8"]
    assert "HDF5" in reasons[broken]
    assert "shorter than stride" in reasons["robosuite_lift-4-0"]
    assert sorted(k[1] for k in store_content(url)) == sorted(ids[5:])


def test_counts_that_do_not_balance_fail_the_run(capsys):
    summary = TokenizeSummary(store="mem://", units_planned=1, units_committed=1)
    summary.datasets["pusht"] = RunCounts(read=3, committed=2, quarantined=0)
    assert not summary.ok
    assert "read != committed + quarantined" in "\n".join(summary.lines())
    summary.datasets["pusht"].quarantined = 1
    assert summary.ok
    summary.units_failed.append(("u1", "OSError: boom"))
    assert not summary.ok


def test_cli_reports_a_config_error(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("kind: tokenize\nsources: []\ntokenizer: x\nstore: y\n")
    assert cli.main(["tokenize", "--config", str(spec)]) == cli.EXIT_USAGE
    with pytest.raises(Exception, match="sources"):
        tokenize(type("A", (), {"config": str(spec), "address": None})())
