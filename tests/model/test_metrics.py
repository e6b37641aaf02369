"""Model metrics: perplexity, decoded-frame PSNR/SSIM, and controllability (Delta-PSNR)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hma.model import HMA, model_config
from hma.model.metrics import (
    controllability,
    decode_video,
    model_rollout_fn,
    perplexity,
    perplexity_from_nll,
    video_psnr,
    video_ssim,
)
from hma.tokenize.checkpoint import build_tokenizer
from hma.tokenize.metrics import PSNR_CAP_DB
from hma.tokenize.presets import fsq

B, T0, H, A = 2, 2, 4, 3


GRID = (8, 8)  # 64 px frames through a /8 tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return build_tokenizer(fsq("tiny"))  # untrained, but its decoder maps codes to distinct frames


def test_perplexity_of_uniform_logits_is_the_vocab_size():
    k = 37
    logits = torch.zeros(4, 5, k)
    targets = torch.randint(0, k, (4, 5))
    assert perplexity(logits, targets) == pytest.approx(k)
    sharp = torch.nn.functional.one_hot(targets, k).float() * 50.0
    assert perplexity(sharp, targets) == pytest.approx(1.0, abs=1e-6)
    # the mask selects which tokens count: score a wrong token only where it is masked out
    wrong = sharp.clone()
    wrong[0, 0] = sharp[0, 0].roll(1)
    mask = torch.ones(4, 5, dtype=torch.bool)
    assert perplexity(wrong, targets) > 1.5
    mask[0, 0] = False
    assert perplexity(wrong, targets, mask) == pytest.approx(1.0, abs=1e-6)
    assert perplexity_from_nll(torch.full((10,), math.log(k))) == pytest.approx(k)
    assert perplexity_from_nll(math.log(k)) == pytest.approx(k)
    with pytest.raises(ValueError, match="vocab"):
        perplexity(torch.zeros(4, 5), targets)


def test_decoded_video_psnr_and_ssim(tokenizer):
    tokens = torch.randint(0, tokenizer.vocab_size, (B, 3, *GRID))
    video = decode_video(tokenizer, tokens)
    assert video.shape == (B, 3, 64, 64, 3) and video.dtype == torch.uint8
    assert video_psnr(video, video) == PSNR_CAP_DB
    assert video_ssim(video, video) == pytest.approx(1.0)
    other = decode_video(tokenizer, torch.randint(0, tokenizer.vocab_size, (B, 3, *GRID)))
    assert video_psnr(video, other) < 40 and video_ssim(video, other) < 0.99
    with pytest.raises(ValueError, match="dims"):
        decode_video(tokenizer, tokens[0])


def _world(prompts: torch.Tensor, actions: torch.Tensor, noise: torch.Generator | None):
    """A toy action-driven world: each new frame's codes shift by an amount set by the action."""
    k = 1000
    frames = [prompts]
    last = prompts[:, -1]
    for step in range(actions.shape[1]):
        shift = (torch.sigmoid(actions[:, step, 0]) * 400).long()  # (B,)
        last = (last + shift[:, None, None]) % k
        if noise is not None:  # a stochastic model: occasional one-code slips
            slips = torch.rand(last.shape, generator=noise) < 0.1
            last = (last + slips.long()) % k
        frames.append(last[:, None])
    return torch.cat(frames, dim=1)  # (B, T0+H, h, w)


def test_controllability_is_positive_when_actions_steer_the_video(tokenizer):
    gen = torch.Generator().manual_seed(5)
    prompts = torch.randint(0, 1000, (B, T0, *GRID), generator=gen)
    true_actions = torch.randn(B, H, A, generator=gen)
    truth = _world(prompts, true_actions, None)[:, T0:]  # (B, H, h, w) ground-truth tokens

    def follows_actions(p, a, g):
        return _world(p, a, g)

    result = controllability(follows_actions, tokenizer, prompts, true_actions, truth)
    assert len(result.psnr_random) == 5
    assert result.delta_psnr > 3.0, result
    assert result.delta_psnr == pytest.approx(result.psnr_true - sum(result.psnr_random) / 5)
    # seeded: the same call gives the same figures; frames or tokens as reference agree
    frames = decode_video(tokenizer, truth)
    again = controllability(follows_actions, tokenizer, prompts, true_actions, frames)
    assert again == result
    assert "dPSNR" in str(result)
    # per rollout: the means are the figures above, and the spread gives a standard error
    assert len(result.rollout_true) == B and np.array(result.rollout_random).shape == (5, B)
    assert result.rollout_delta.mean() == pytest.approx(result.delta_psnr)
    expected_se = result.rollout_delta.std(ddof=1) / np.sqrt(B)
    assert result.delta_psnr_se == pytest.approx(expected_se) and result.delta_psnr_se > 0


def test_controllability_is_zero_when_actions_are_ignored(tokenizer):
    gen = torch.Generator().manual_seed(6)
    prompts = torch.randint(0, 1000, (B, T0, *GRID), generator=gen)
    true_actions = torch.randn(B, H, A, generator=gen)
    truth = _world(prompts, true_actions, None)[:, T0:]

    def ignores_actions(p, a, g):
        return _world(p, torch.zeros_like(a), g)

    result = controllability(ignores_actions, tokenizer, prompts, true_actions, truth, trials=3)
    assert result.delta_psnr == pytest.approx(0.0, abs=1e-9)
    assert len(result.psnr_random) == 3
    assert result.delta_psnr_se == pytest.approx(0.0, abs=1e-9)
    one = controllability(ignores_actions, tokenizer, prompts[:1], true_actions[:1], truth[:1])
    assert one.delta_psnr_se is None  # one rollout: no spread to measure


def test_random_actions_respect_the_mask_and_rollout_length_is_checked(tokenizer):
    prompts = torch.randint(0, 1000, (B, T0, *GRID))
    true_actions = torch.randn(B, H, A)
    seen = []

    def record(p, a, g):
        seen.append(a.clone())
        return _world(p, a, g)

    mask = torch.tensor([[True, True, False], [True, False, False]])[:, None, :]  # (B, 1, A)
    truth = _world(prompts, true_actions, None)[:, T0:]
    controllability(record, tokenizer, prompts, true_actions, truth, trials=2, action_mask=mask)
    assert torch.equal(seen[0], true_actions)
    for random_actions in seen[1:]:
        assert (random_actions[~mask.expand(B, H, A)] == 0).all()
        assert (random_actions[mask.expand(B, H, A)] != 0).all()
    assert not torch.equal(seen[1], seen[2])  # each trial draws new actions

    with pytest.raises(ValueError, match="rollout_fn returned"):
        controllability(lambda p, a, g: p, tokenizer, prompts, true_actions, truth)
    with pytest.raises(ValueError, match="reference"):
        controllability(record, tokenizer, prompts, true_actions, truth[:, :2])
    with pytest.raises(ValueError, match="trials"):
        controllability(record, tokenizer, prompts, true_actions, truth, trials=0)


def test_controllability_of_an_hma_model_end_to_end(tokenizer):
    """The wrapper drives a real (untrained) HMA rollout with the tokenizer's own grid."""
    torch.manual_seed(0)
    model = HMA(
        model_config("tiny", grid=GRID, vocab_size=tokenizer.vocab_size, datasets={"toy": A})
    ).eval()
    prompts = torch.randint(0, tokenizer.vocab_size, (1, 1, *GRID))
    true_actions = torch.randn(1, 2, A)
    truth = torch.randint(0, tokenizer.vocab_size, (1, 2, *GRID))
    rollout_fn = model_rollout_fn(model, ["toy"], steps=1)
    result = controllability(rollout_fn, tokenizer, prompts, true_actions, truth, trials=2)
    assert math.isfinite(result.delta_psnr) and len(result.psnr_random) == 2
    assert result == controllability(rollout_fn, tokenizer, prompts, true_actions, truth, trials=2)
