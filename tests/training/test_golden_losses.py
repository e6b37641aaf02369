"""Golden loss curves: seeded tiny runs of the world model and the tokenizer whose first losses
are stored in tests/golden/ and must repeat within a tolerance.

A refactor of the training layer (optimiser, schedule, clipping, masking, losses, state) that
changes what a step computes fails here, instead of silently changing every later run. After an
intended change to training, regenerate the files and say why in the commit:

    HMA_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/training/test_golden_losses.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from hma.envs.procedural import moving_block_frames
from hma.model import HMA, Batch, model_config
from hma.pipeline.pretrain.step import StepConfig, make_state, train_step
from hma.tokenize import trainer
from hma.tokenize.losses import LossConfig
from hma.tokenize.presets import fsq
from hma.training.optim import OptimConfig
from tests.helpers.threads import one_torch_thread

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
UPDATE = os.environ.get("HMA_UPDATE_GOLDEN") == "1"
STEPS = 12
# fp32 on one CPU thread repeats to the last bit; the tolerance covers other CPUs' kernels.
RTOL = 1e-4
WIDTHS = {"arm": 6, "pusher": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def _check(name: str, losses: list[float]) -> None:
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"steps": len(losses), "losses": losses}, indent=1) + "\n")
        pytest.skip(f"wrote {path}")
    golden = json.loads(path.read_text())["losses"]
    assert len(losses) == len(golden)
    for step, (got, want) in enumerate(zip(losses, golden, strict=True)):
        assert got == pytest.approx(want, rel=RTOL), f"{name}: step {step} loss {got} != {want}"


def _windows(config, rows: int, seed: int) -> Batch:
    """vq windows of a block stepping by its frame's action, rows alternating two datasets."""
    g = torch.Generator().manual_seed(seed)
    h, w = config.grid
    t = config.window
    names = [list(WIDTHS)[r % len(WIDTHS)] for r in range(rows)]
    tokens = torch.ones(rows, t, h, w, dtype=torch.long)
    actions = torch.zeros(rows, t, config.action_width)
    for r, name in enumerate(names):
        y, x = torch.randint(0, h, (2,), generator=g).tolist()
        for f in range(t):
            tokens[r, f, y, x] = 5
            dy, dx = torch.randint(-1, 2, (2,), generator=g).tolist()
            actions[r, f, :2] = torch.tensor([dy, dx], dtype=torch.float32)
            actions[r, f, 2 : WIDTHS[name]] = torch.randn(WIDTHS[name] - 2, generator=g)
            y, x = (y + dy) % h, (x + dx) % w
    return Batch(tokens, actions, names)


def test_world_model_golden_losses():
    torch.manual_seed(0)
    config = model_config("tiny", datasets=dict(WIDTHS))
    optim = OptimConfig(lr=3e-3, warmup_steps=3)
    state = make_state(HMA(config), optim, STEPS, "ddp", torch.device("cpu"))
    step = StepConfig(grad_accum=2, modes={"forward": 1.0, "full": 1.0})
    losses = []
    for i in range(STEPS):
        micro = [_windows(config, 4, seed=2 * i + k) for k in range(step.grad_accum)]
        losses.append(train_step(state, micro, step, seed=0, rank=0)["loss"])
    _check("world_model_tiny", losses)


def test_tokenizer_golden_losses():
    torch.manual_seed(0)
    frames = torch.from_numpy(moving_block_frames(8, 32, seed=1))
    state = trainer.make_state(
        fsq("tiny"),
        LossConfig(adversarial_weight=0.1),
        trainer.TokenizerOptimConfig(warmup_steps=3),
    )
    losses = [trainer.train_step(state, frames, progress=i / STEPS)["loss"] for i in range(STEPS)]
    _check("tokenizer_fsq_tiny", losses)
