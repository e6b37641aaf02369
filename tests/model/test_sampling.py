"""Rollouts: the KV-cached path equals full recomputation (past the window too), the cost per
frame stays flat, committed tokens stay fixed, and temperature / top_k shape the samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hma.model import HMA
from hma.model.heads.maskgit import MaskGITHead, MaskGITHeadConfig
from hma.model.sampling import unmasked_after
from hma.stats import ActionStats
from tests.model.conftest import random_batch, tiny


def _spy_on_head(model) -> list[torch.Tensor]:
    """Record every trunk output the video head samples from."""
    seen: list[torch.Tensor] = []
    sample = model.video_head.sample

    def spy(cond, *args, **kwargs):
        seen.append(cond.clone())
        return sample(cond, *args, **kwargs)

    model.video_head.sample = spy
    return seen


def _rollout(model, batch, use_cache, mode, horizon, seed=7):
    prompt = batch.tokens[:, :2]
    actions = batch.actions[:, :1].repeat(1, 2 + horizon, 1) if mode == "forward" else None
    g = torch.Generator().manual_seed(seed)
    return model.rollout(
        prompt, actions, batch.datasets, horizon=horizon, mode=mode, steps=3,
        temperature=1.0, generator=g, use_cache=use_cache,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("conditioning", "mode"),
    [("concat+modulate", "forward"), ("concat+modulate", "full"), ("cross_attention", "full"),
     ("add", "passive")],
)  # fmt: skip
def test_cached_rollout_equals_recomputation(conditioning, mode):
    model = HMA(tiny(conditioning=conditioning)).eval()
    for block in model.blocks:  # adaLN starts at zero: make the action path live
        if block.modulation is not None:
            torch.nn.init.normal_(block.modulation[1].weight, std=0.2)
    batch = random_batch(model.config)
    horizon = 2 * model.config.window + 1  # past the window: the context slides
    seen = _spy_on_head(model)
    cached = _rollout(model, batch, True, mode, horizon)
    cached_cond, seen[:] = list(seen), []
    full = _rollout(model, batch, False, mode, horizon)
    assert torch.equal(cached.tokens, full.tokens)
    assert len(cached_cond) == len(seen) == 3 * horizon
    for a, b in zip(cached_cond, seen, strict=True):  # the same trunk outputs at every pass
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cached.actions, full.actions, rtol=1e-4, atol=1e-5)


def test_cached_step_equals_training_forward():
    """Per-frame cached outputs equal the plain forward pass over the window."""
    model = HMA(tiny()).eval()
    batch = random_batch(model.config)
    reference = model(batch.tokens, batch.actions, batch.datasets)
    cache = model.new_cache()
    for t in range(model.config.window):
        step = model(
            batch.tokens[:, t : t + 1], batch.actions[:, t : t + 1], batch.datasets,
            cache=cache, append=True,
        )  # fmt: skip
        torch.testing.assert_close(step.video[:, 0], reference.video[:, t], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(step.action[:, 0], reference.action[:, t], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("horizon", [16, 160])
def test_cost_per_frame_is_flat(horizon):
    """After the prompt, one frame at a time runs through the trunk, against at most window - 1
    cached frames, however long the rollout."""
    model = HMA(tiny()).eval()
    batch = random_batch(model.config, rows=1)
    seen: list[tuple[int, int]] = []

    def record(block, args, kwargs):
        x, temporal = args[0], args[1]
        past = temporal.past[0][0].shape[2] if temporal.past and temporal.past[0] else 0
        seen.append((x.shape[1], past))

    handle = model.blocks[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        _rollout(model, batch, True, "forward", horizon)
    finally:
        handle.remove()
    frames_in_flight = {f for f, _ in seen[1:]}  # seen[0]: the prompt, committed at once
    assert frames_in_flight == {1}
    assert max(p for _, p in seen) == model.config.window - 1
    # 3 unmask passes + 1 commit pass per new frame (the last frame needs no commit)
    assert len(seen) == 1 + 3 * horizon + (horizon - 1)


def test_unmask_schedule_commits_every_token_once():
    for steps in (1, 2, 4, 8):
        left = [unmasked_after(k, steps, 16) for k in range(steps)]
        assert left[-1] == 0 and all(a >= b for a, b in zip([16, *left], left, strict=False))


def test_committed_tokens_are_never_resampled():
    """With steps = S each pass commits one token: the head is asked only for the tokens still
    masked (S, S-1, ..., 1), so a committed token is never drawn again."""
    model = HMA(tiny()).eval()
    batch = random_batch(model.config, rows=2)
    seen = _spy_on_head(model)
    s = model.config.tokens_per_frame
    _ = model.rollout(batch.tokens[:, :2], batch.actions[:, :3], batch.datasets, horizon=1, steps=s)
    assert [c.shape[1] for c in seen] == list(range(s, 0, -1))


def test_temperature_changes_the_distribution():
    head = MaskGITHead(MaskGITHeadConfig(), d_model=8, vocab_size=10)
    cond = torch.randn(1, 1, 8).expand(1, 4000, 8)  # one distribution, 4000 draws

    def histogram(temperature, top_k=None):
        g = torch.Generator().manual_seed(0)
        tokens, _ = head.sample(cond, temperature, g, top_k=top_k)
        return torch.bincount(tokens.flatten(), minlength=10).float() / tokens.numel()

    with torch.no_grad():
        head.proj.weight.mul_(20)
    probs = head.proj(cond[0, 0]).softmax(-1)
    cold, warm, hot = histogram(0.5), histogram(1.0), histogram(5.0)
    torch.testing.assert_close(warm, probs, atol=0.03, rtol=0)
    entropy = [-(h[h > 0] * h[h > 0].log()).sum() for h in (cold, warm, hot)]
    assert entropy[0] < entropy[1] < entropy[2]
    greedy = histogram(0.0)
    assert greedy[probs.argmax()] == 1.0
    assert (histogram(5.0, top_k=2) > 0).sum() == 2


def test_factorised_vocab_samples_and_scores_codes():
    head = MaskGITHead(MaskGITHeadConfig(factors=(4, 5)), d_model=8, vocab_size=20)
    cond = torch.randn(3, 6, 8)
    tokens, conf = head.sample(cond, 1.0, torch.Generator().manual_seed(0))
    assert tokens.shape == (3, 6) and int(tokens.max()) < 20 and (conf > 0).all()
    target = torch.arange(18).view(3, 6)
    assert torch.equal(head.digits(target)[..., 0] * 5 + head.digits(target)[..., 1], target)
    mask = torch.ones(3, 6, dtype=torch.bool)
    torch.testing.assert_close(head.loss(target, cond, mask) * 2, head.nll(target, cond).mean())


def test_raw_actions_use_dataset_statistics():
    model = HMA(tiny()).eval()
    batch = random_batch(model.config, rows=2)
    stats = {
        "arm": ActionStats.of(np.random.default_rng(0).normal(3, 2, (50, 3))),  # stride 2
        "pusher": ActionStats.of(np.random.default_rng(1).normal(-1, 4, (50, 2))),
    }
    result = model.rollout(
        batch.tokens[:, :2], None, batch.datasets, horizon=1, mode="full", stats=stats
    )
    assert [r.shape for r in result.raw_actions] == [(3, 2, 3), (3, 2, 2)]
    arm = result.actions[0, :, :6].reshape(3, 2, 3).double().numpy()
    expected = arm * stats["arm"].std + stats["arm"].mean  # z-score inverse
    np.testing.assert_allclose(result.raw_actions[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        stats["arm"].normalise(result.raw_actions[0].numpy()), arm, atol=1e-5
    )
