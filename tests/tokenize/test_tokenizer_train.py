"""Training: a tiny tokenizer overfits; state resumes exactly; the Ray Train CLI trains, resumes, evals."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hma import formats, storage
from hma.checkpoint import STATE_JSON
from hma.cli import main
from hma.envs.procedural import moving_block_frames
from hma.tokenize import load_tokenizer, trainer
from hma.tokenize.losses import LossConfig
from hma.tokenize.presets import fsq

OVERFIT_STEPS = 200
OVERFIT_PSNR_DB = 25.0  # measured ~31 dB after 200 steps (from ~10 dB untrained)


def test_tiny_config_overfits_a_handful_of_frames(tiny_config):
    torch.manual_seed(0)
    frames = torch.from_numpy(moving_block_frames(8, 32, seed=1))
    state = trainer.make_state(
        tiny_config, LossConfig(), trainer.TokenizerOptimConfig(lr=5e-3, warmup_steps=10)
    )
    before = trainer.validation_psnr(state.net, frames, batch_size=8)
    for i in range(OVERFIT_STEPS):
        trainer.train_step(state, frames, progress=i / OVERFIT_STEPS)
    after = trainer.validation_psnr(state.net, frames, batch_size=8)
    assert before < 15 and after > OVERFIT_PSNR_DB, (before, after)


def test_resume_continues_exactly(tmp_path):
    """Weights, optimizer moments, discriminator and step survive a save/restore."""
    frames = torch.from_numpy(moving_block_frames(4, 32, seed=2))
    loss = LossConfig(adversarial_weight=0.1)
    optim = trainer.TokenizerOptimConfig(warmup_steps=2)
    torch.manual_seed(0)
    first = trainer.make_state(fsq("tiny"), loss, optim)
    for _ in range(3):
        trainer.train_step(first, frames, 0.1)
    trainer.save(first, str(tmp_path))
    second = trainer.make_state(fsq("tiny"), loss, optim)
    trainer.restore(second, str(tmp_path))
    assert second.step == 3
    a = trainer.train_step(first, frames, 0.2)
    b = trainer.train_step(second, frames, 0.2)
    assert a["loss"] == b["loss"] and a["disc"] == b["disc"]
    for p, q in zip(first.net.parameters(), second.net.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.fixture
def episode_source(tmp_path, make_episode) -> str:
    """A robomimic file of 32 px episodes: 3 train, 1 val."""
    url = str(tmp_path / "lift.hdf5")
    episodes = [
        make_episode(
            "robosuite_lift", steps=12, size=32, seed=i, split="val" if i == 3 else "train"
        )
        for i in range(4)
    ]
    formats.write_episodes(episodes, url, "robomimic")
    return url


def write_config(path, source: str, storage_path: str, name: str, max_steps: int) -> str:
    config = {
        "name": name,
        "storage_path": storage_path,
        "tokenizer": {"arch": "fsq", "preset": "tiny"},
        "data": {"sources": [{"url": source}], "frame_size": [32, 32], "shuffle_buffer": 16},
        "batch_size": 8,
        "max_steps": max_steps,
        "log_every": 1,
        "checkpoint_every": 2,
        "val_frames": 8,
        "cpus_per_worker": 0.5,  # leaves Ray Data a CPU on the 2-CPU test cluster
        "torch_threads": 1,
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_train_resume_and_eval_through_the_cli(
    ray_cluster, s3_bucket, episode_source, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    name = f"tok-{uuid.uuid4().hex[:8]}"
    runs = f"{s3_bucket}/runs"
    config = write_config(tmp_path / "c.yaml", episode_source, runs, name, max_steps=4)
    assert main(["tokenizer", "train", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "step      4/4" in out and "val_psnr" in out, out
    checkpoint = out.split("checkpoint: ")[1].split()[0]
    assert checkpoint.startswith(f"{runs}/{name}/checkpoint_")
    with storage.open_file(storage.join(checkpoint, STATE_JSON), "r") as f:
        assert json.load(f)["step"] == 4
    first = load_tokenizer(checkpoint)
    fs, path = storage.filesystem(f"{runs}/{name}/tensorboard")
    assert any("tfevents" in p for p in fs.find(path)), "no TensorBoard event file"

    # Same name, larger budget: the run resumes at step 4 instead of starting over.
    config = write_config(tmp_path / "c.yaml", episode_source, runs, name, max_steps=6)
    assert main(["tokenizer", "train", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "resumed at step 4" in out and "step      6/6" in out, out
    assert "step      1/6" not in out
    latest = load_tokenizer(f"{runs}/{name}")  # a run dir resolves to its newest checkpoint
    assert latest.fingerprint != first.fingerprint

    eval_dir = tmp_path / "eval"
    argv = ["tokenizer", "eval", "--checkpoint", f"{runs}/{name}", "--config", config]
    assert main([*argv, "--out", str(eval_dir), "--json", "--grid-frames", "3"]) == 0
    scores = json.loads(capsys.readouterr().out)
    lift = scores["datasets"]["robosuite_lift"]
    assert lift["frames"] == 12 and 0 < lift["psnr"] < 100 and -1 <= lift["ssim"] <= 1
    assert scores["fingerprint"] == latest.fingerprint
    grid = np.asarray(Image.open(lift["grid"]))
    assert grid.shape == (2 * 32 + 2, 3 * 32 + 2 * 2, 3)  # originals over reconstructions
    assert (eval_dir / "scores.json").exists()


def test_cli_reports_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "storage_path": str(tmp_path), "data": {}}))
    assert main(["tokenizer", "train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "tokenizer" in err
