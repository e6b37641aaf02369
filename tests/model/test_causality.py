"""Nothing of frame t+1 (tokens, actions, masks) reaches the outputs of frames <= t, in every
conditioning variant (the reference's cross-attention variant leaks future actions)."""

from __future__ import annotations

import pytest
import torch

from hma.model import HMA, Batch, ModelConfig
from tests.helpers.model import CONDITIONINGS, random_batch, tiny

T_CUT = 1  # outputs of frames 0..T_CUT must not move when frames > T_CUT change


def live_model(conditioning: str) -> tuple[ModelConfig, HMA, Batch]:
    """A tiny model in eval mode whose action path is live, and a full-window random batch."""
    config = tiny(conditioning=conditioning)
    model = HMA(config).eval()
    # adaLN starts at zero (identity): give the modulation weights so the action path is live
    for block in model.blocks:
        if block.modulation is not None:
            torch.nn.init.normal_(block.modulation[1].weight, std=0.2)
    return config, model, random_batch(config, frames=config.window)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_future_frames_do_not_reach_the_past(conditioning):
    config, model, batch = live_model(conditioning)
    b, t = batch.tokens.shape[:2]
    video_mask = torch.rand(b, t, config.tokens_per_frame) < 0.5
    action_mask = torch.rand(b, t) < 0.5
    before = model(batch.tokens, batch.actions, batch.datasets, video_mask, action_mask)

    tokens, actions = batch.tokens.clone(), batch.actions.clone()
    tokens[:, T_CUT + 1 :] = torch.randint(0, config.vocab_size, tokens[:, T_CUT + 1 :].shape)
    actions[:, T_CUT + 1 :] += 5.0
    video_mask2, action_mask2 = video_mask.clone(), action_mask.clone()
    video_mask2[:, T_CUT + 1 :] = ~video_mask2[:, T_CUT + 1 :]
    action_mask2[:, T_CUT + 1 :] = ~action_mask2[:, T_CUT + 1 :]
    after = model(tokens, actions, batch.datasets, video_mask2, action_mask2)

    past = slice(0, T_CUT + 1)
    torch.testing.assert_close(after.video[:, past], before.video[:, past])
    torch.testing.assert_close(after.action[:, past], before.action[:, past])
    # ...while the perturbed frames themselves do change (the test can fail)
    assert not torch.allclose(after.video[:, T_CUT + 1 :], before.video[:, T_CUT + 1 :])


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_actions_condition_their_own_frame(conditioning):
    """Frame t's action reaches frame t's outputs (so the ablation variants really condition)."""
    _, model, batch = live_model(conditioning)
    before = model(batch.tokens, batch.actions, batch.datasets)
    actions = batch.actions.clone()
    actions[:, T_CUT] += 5.0
    after = model(batch.tokens, actions, batch.datasets)
    assert not torch.allclose(after.video[:, T_CUT], before.video[:, T_CUT])
    torch.testing.assert_close(after.video[:, :T_CUT], before.video[:, :T_CUT])
