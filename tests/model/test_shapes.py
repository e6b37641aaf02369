"""Every conditioning variant x dynamics mode runs with the maskgit head and gives the shapes of
the model contract; one combined check for the diffusion (soft token) head."""

from __future__ import annotations

import pytest
import torch

from hma.model import HMA, MODES
from tests.helpers.model import CONDITIONINGS, random_batch, tiny


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_loss_and_rollout_shapes(conditioning):
    config = tiny(conditioning=conditioning)
    model = HMA(config)
    batch = random_batch(config)
    b, t = batch.tokens.shape[:2]
    out = model(batch.tokens, batch.actions, batch.datasets)
    assert out.video.shape == (b, t, config.tokens_per_frame, config.d_model)
    assert out.action.shape == (b, t, config.action_width)
    for mode in MODES:
        losses = model.loss(batch, mode)
        assert set(losses) == {"video", "action", "state", "total"}
        assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), mode
        losses["total"].backward()
    assert (losses["video"] > 0) and (losses["action"] > 0)  # full mode trains both
    prompt = batch.tokens[:, :2]
    for mode, horizon in [("forward", 3), ("passive", 3), ("full", 3), ("policy", 0)]:
        actions = batch.actions[:, :1].repeat(1, 2 + horizon, 1) if mode == "forward" else None
        result = model.rollout(prompt, actions, batch.datasets, horizon=horizon, mode=mode)
        assert result.tokens.shape == (b, 2 + horizon, *config.grid), mode
        assert result.tokens.dtype == torch.long
        assert (result.tokens[:, :2] == prompt).all()
        assert result.actions.shape == (b, 2 + horizon, config.action_width)
        if mode in ("policy", "full"):  # predicted, zero past each row's own width
            assert result.actions[0, :, :6].abs().sum() > 0
            assert (result.actions[1, :, 4:] == 0).all()


def test_mode_losses_follow_the_masks():
    model = HMA(tiny())
    batch = random_batch(model.config)
    assert model.loss(batch, "forward")["action"] == 0  # actions given
    assert model.loss(batch, "passive")["action"] == 0
    assert model.loss(batch, "policy")["video"] == 0  # video given


def test_bad_inputs_name_the_problem():
    model = HMA(tiny())
    batch = random_batch(model.config)
    with pytest.raises(ValueError, match="vq tokens must be"):
        model(batch.tokens[:, :, :2], batch.actions, batch.datasets)
    with pytest.raises(ValueError, match="no action stem for dataset.*'cow'"):
        model(batch.tokens, batch.actions, ["cow"] * 3)
    with pytest.raises(ValueError, match="unknown mode"):
        model.loss(batch, "backward")
    with pytest.raises(ValueError, match="forward mode needs actions"):
        model.rollout(batch.tokens[:, :1], None, batch.datasets, horizon=1)
    with pytest.raises(ValueError, match="policy mode"):
        model.rollout(batch.tokens[:, :1], None, batch.datasets, horizon=1, mode="policy")


def test_diffusion_head_shapes():
    pytest.importorskip("hma.model.heads.diffusion")
    config = tiny(
        token_kind="soft",
        head="diffusion",
        diffusion={"width": 16, "depth": 1, "train_steps": 50, "sample_steps": 3},
    )
    model = HMA(config)
    batch = random_batch(config)
    for mode in MODES:
        assert torch.isfinite(model.loss(batch, mode)["total"])
    result = model.rollout(batch.tokens[:, :2], None, batch.datasets, horizon=2, mode="full")
    assert result.tokens.shape == (3, 4, config.latent_channels, *config.grid)
    assert result.tokens.dtype == torch.float32
    assert torch.equal(result.tokens[:, :2], batch.tokens[:, :2])
    with pytest.raises(ValueError, match="top_k"):
        model.rollout(batch.tokens[:, :2], None, batch.datasets, horizon=1, mode="full", top_k=3)
