"""Training masks: context frames stay given, the cosine ratio, random context, the four modes."""

from __future__ import annotations

import math

import pytest
import torch

from hma.model.masking import MaskingConfig, cosine_mask_ratio, sample_masks

CPU = torch.device("cpu")


def _masks(mode, config=None, batch=2000, frames=6, tokens=16):
    g = torch.Generator().manual_seed(0)
    return sample_masks(mode, batch, frames, tokens, config or MaskingConfig(), CPU, g)


def test_cosine_ratio():
    u = torch.tensor([0.0, 1 / 3, 0.5, 1.0])
    expected = torch.tensor([1.0, math.cos(math.pi / 6), math.cos(math.pi / 4), 0.0])
    torch.testing.assert_close(cosine_mask_ratio(u), expected)


def test_context_frames_are_given_and_future_follows_the_cosine_ratio():
    m = _masks("forward", MaskingConfig(context_frames=2, random_context_prob=0.0))
    assert not m.video[:, :2].any()
    # the mean masked fraction of future frames is E[cos(u*pi/2)] = 2/pi
    assert abs(m.video[:, 2:].float().mean() - 2 / math.pi) < 0.03


def test_random_context_length():
    always = _masks("forward", MaskingConfig(context_frames=4, random_context_prob=1.0))
    first = always.video.any(-1).float().argmax(1)[always.video.any(-1).any(-1)]
    # k is uniform in 1..5 (6 frames): every start frame occurs, frame 0 never
    assert set(first.tolist()) == {1, 2, 3, 4, 5}
    sometimes = _masks("forward", MaskingConfig(context_frames=4, random_context_prob=0.2))
    early = sometimes.video[:, 1:4].any(-1).any(-1).float().mean()
    assert 0.1 < early < 0.2  # ~0.2 * 3/5 of rows mask a frame before the default context


def test_modes():
    forward, passive, policy, full = (
        _masks(mode) for mode in ("forward", "passive", "policy", "full")
    )
    assert forward.video.any() and not forward.action.any() and not forward.null_actions
    assert passive.null_actions and not passive.action.any()
    assert policy.action.any() and not policy.video.any()
    assert full.action.any() and full.video.any()
    assert not full.action[:, 0].any()


def test_needs_two_frames_and_a_known_mode():
    with pytest.raises(ValueError, match="at least 2 frames"):
        _masks("forward", frames=1)
    with pytest.raises(ValueError, match="unknown mode 'inverse'"):
        _masks("inverse")
