"""`hma tokenize` start-up: the driver reads the tokenizer from its metadata (no model build), the
actors check the model they load against it, and the summary cuts the start-up into phases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hma.pipeline.store import TokenizerInfo, committed_units
from hma.pipeline.tokenize_job import TokenizeJobConfig, run_tokenize, tokenizer_info
from hma.tokenize.checkpoint import WEIGHTS_FILE, CheckpointError, load_tokenizer
from tests.helpers.tokenize_fixtures import save_tiny_tokenizer, write_video_source

FRAME = (64, 64)
FAST = {"episodes_per_unit": 2, "progress": False, "write_cpus": 0.25, "load_cpus": 0.5}


@pytest.mark.parametrize("arch", ["fsq", "kl"])
def test_metadata_describes_the_tokenizer_as_the_loaded_model_does(tmp_path, arch):
    url = save_tiny_tokenizer(arch, str(tmp_path / arch))
    loaded = TokenizerInfo.from_tokenizer(load_tokenizer(url), url, FRAME)
    assert tokenizer_info(url, FRAME) == loaded
    with pytest.raises(ValueError, match="60x64 is not a multiple"):
        tokenizer_info(url, (60, 64))


def test_weights_of_another_checkpoint_are_refused_before_anything_runs(tmp_path):
    a = save_tiny_tokenizer("fsq", str(tmp_path / "a"))
    b = save_tiny_tokenizer("fsq", str(tmp_path / "b"), preset="small")
    shutil.copy(os.path.join(b, WEIGHTS_FILE), os.path.join(a, WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=f"{a}/{WEIGHTS_FILE}.*another checkpoint"):
        tokenizer_info(a, FRAME)


def test_modified_weights_stop_the_job_naming_the_file(ray_cluster, tmp_path):
    """The header still names the right fingerprint; the actors hash the weights and refuse."""
    ckpt = save_tiny_tokenizer("fsq", str(tmp_path / "fsq"))
    weights = os.path.join(ckpt, WEIGHTS_FILE)
    data = bytearray(Path(weights).read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last tensor
    Path(weights).write_bytes(bytes(data))
    source = write_video_source(str(tmp_path / "video"), count=2)
    store = str(tmp_path / "store.zarr")
    config = TokenizeJobConfig(sources=[source], tokenizer=ckpt, store=store, **FAST)
    with pytest.raises(Exception, match="weights do not match the fingerprint") as err:
        run_tokenize(config)
    assert weights in str(err.value)
    assert not committed_units(store)


def test_the_startup_breakdown_covers_the_startup(ray_cluster, tmp_path):
    ckpt = save_tiny_tokenizer("fsq", str(tmp_path / "fsq"))
    source = write_video_source(str(tmp_path / "video"), count=4)
    config = TokenizeJobConfig(
        sources=[source], tokenizer=ckpt, store=str(tmp_path / "store.zarr"), **FAST
    )
    summary = run_tokenize(config)
    assert summary.ok
    phases = summary.startup_breakdown()
    assert all(seconds >= 0 for seconds in phases.values())
    assert sum(phases.values()) == pytest.approx(summary.startup_seconds)
    # the actor and load milestones came back with the rows, in a possible order (the actor's
    # process may predate the job: Ray can hand an idle worker to a new actor)
    marks = summary.milestones
    assert marks["actor_boot"] <= marks["actor_init"] <= marks["actor_ready"]
    assert 0 < marks["actor_ready"] < summary.startup_seconds
    assert marks["pipeline"] <= marks["load_at"] < summary.startup_seconds
    assert any(line.startswith("start-up: ") for line in summary.lines())
