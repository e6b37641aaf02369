"""A tiny model learns: it overfits a few fixture windows in every dynamics mode."""

from __future__ import annotations

import torch

from hma.model import HMA, Batch
from hma.model.masking import sample_masks
from tests.helpers.model import tiny

STEPS = 150
FACTOR = 5.0  # the held-fixed-mask loss must fall at least this much


def moving_block_windows(config, rows: int = 4) -> Batch:
    """vq windows of a block (code 5, background 1) stepping by its frame's action (dx, dy)."""
    h, w = config.grid
    g = torch.Generator().manual_seed(3)
    t = config.window
    tokens = torch.ones(rows, t, h, w, dtype=torch.long)
    actions = torch.zeros(rows, t, config.action_width)
    for r in range(rows):
        y, x = torch.randint(0, h, (2,), generator=g).tolist()
        for f in range(t):
            tokens[r, f, y, x] = 5
            dy, dx = torch.randint(-1, 2, (2,), generator=g).tolist()
            actions[r, f, :2] = torch.tensor([dy, dx], dtype=torch.float32)
            y, x = (y + dy) % h, (x + dx) % w
    return Batch(tokens, actions, ["arm"] * rows)


def test_tiny_model_overfits_fixture_windows():
    config = tiny(masking={"context_frames": 1})
    model = HMA(config)
    batch = moving_block_windows(config)
    b, t = batch.tokens.shape[:2]
    g = torch.Generator().manual_seed(0)
    fixed = sample_masks(
        "full", b, t, config.tokens_per_frame, config.masking, torch.device("cpu"), g
    )

    def held_loss() -> float:
        with torch.no_grad():
            return float(model.loss(batch, "full", masks=fixed)["total"])

    start = held_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    modes = ["forward", "full", "policy", "passive"]
    for step in range(STEPS):
        loss = model.loss(batch, modes[step % len(modes)], generator=g)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = held_loss()
    print(f"held-out-mask loss {start:.3f} -> {end:.3f} in {STEPS} steps")
    assert end * FACTOR < start, (start, end)
