"""Heterogeneous batches: rows route to their own stem/head; new datasets add only those."""

from __future__ import annotations

import pytest
import torch

from hma.model import HMA
from tests.helpers.model import random_batch, tiny


def test_mixed_batch_equals_rows_run_per_dataset():
    model = HMA(tiny()).eval()
    batch = random_batch(model.config, rows=5)  # arm, pusher, arm, pusher, arm
    mixed = model(batch.tokens, batch.actions, batch.datasets)
    for name in ("arm", "pusher"):
        rows = [i for i, d in enumerate(batch.datasets) if d == name]
        alone = model(batch.tokens[rows], batch.actions[rows], [name] * len(rows))
        torch.testing.assert_close(mixed.video[rows], alone.video, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mixed.action[rows], alone.action, rtol=1e-5, atol=1e-6)
    # each row used its own stem: running an arm row through the pusher stem differs
    other = model(batch.tokens[:1], batch.actions[:1], ["pusher"])
    assert not torch.allclose(other.video, mixed.video[:1])
    assert (mixed.action[1, :, 4:] == 0).all()  # padded past the pusher's 4 values


def test_action_loss_ignores_padding():
    model = HMA(tiny())
    batch = random_batch(model.config, rows=2)
    base = model.loss(batch, "policy", generator=torch.Generator().manual_seed(1))["action"]
    batch.actions[1, :, 4:] = 100.0  # padding of the pusher row
    again = model.loss(batch, "policy", generator=torch.Generator().manual_seed(1))["action"]
    torch.testing.assert_close(base, again)


def test_add_dataset_adds_only_a_stem_and_head():
    model = HMA(tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.add_dataset("gripper", 10)
    after = model.state_dict()
    added = sorted(set(after) - set(before))
    assert added and all(
        k.startswith(("embodiments.stems.gripper.", "embodiments.heads.gripper.")) for k in added
    )
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing else changed
    assert model.config.datasets["gripper"] == 10 and model.action_width == 10
    batch = random_batch(model.config, rows=3)  # now includes gripper rows, A_max = 10
    assert batch.datasets[2] == "gripper"
    assert torch.isfinite(model.loss(batch, "full")["total"])
    with pytest.raises(ValueError, match="already"):
        model.add_dataset("arm", 3)


def test_freeze_trunk_trains_only_stems_and_heads():
    model = HMA(tiny())
    model.add_dataset("gripper", 10)
    model.freeze_trunk()
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(k.startswith("embodiments.") for k in trainable)
    assert not any(p.requires_grad for p in model.blocks.parameters())
