"""Rollouts: the KV-cached path equals full recomputation (past the window too), the cost per
frame stays flat at `steps` trunk calls (the commit rides along with the next frame's first
pass), committed tokens stay fixed, and temperature / top_k shape the samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hma.model import HMA
from hma.model.heads.maskgit import MaskGITHead, MaskGITHeadConfig, categorical
from hma.model.sampling import unmasked_after
from hma.stats import ActionStats
from tests.helpers.model import random_batch, tiny


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


@pytest.mark.parametrize("conditioning", ["concat+modulate", "cross_attention"])
def test_prompt_longer_than_the_window(conditioning):
    """A prompt of more frames than the window: the first cached call holds them all (the
    cache's ring grows), the band hides what slid out, and the rollout equals recomputation."""
    model = HMA(tiny(conditioning=conditioning)).eval()
    prompt_frames, horizon = model.config.window + 2, 3
    batch = random_batch(model.config, rows=2, frames=prompt_frames + horizon)
    rolled = [
        model.rollout(
            batch.tokens[:, :prompt_frames],
            batch.actions,
            batch.datasets,
            horizon=horizon,
            temperature=1.0,
            generator=torch.Generator().manual_seed(3),
            use_cache=use_cache,
        )  # fmt: skip
        for use_cache in (True, False)
    ]
    assert torch.equal(rolled[0].tokens, rolled[1].tokens)


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


def _trunk_calls(model, run) -> list[tuple[int, int]]:
    """(frames in flight, cached frames) of every trunk call made by run()."""
    seen: list[tuple[int, int]] = []

    def record(block, args, kwargs):
        x, temporal = args[0], args[1]
        seen.append((x.shape[1], temporal.cache.frames if temporal.cache is not None else 0))

    handle = model.blocks[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("horizon", [16, 160])
def test_cost_per_frame_is_flat(horizon):
    """After the prompt, at most two frames run through the trunk (the new one, plus the
    finished one being committed), against at most window - 1 cached frames, however long
    the rollout."""
    model = HMA(tiny()).eval()
    batch = random_batch(model.config, rows=1)
    seen = _trunk_calls(model, lambda: _rollout(model, batch, True, "forward", horizon))
    assert seen[0] == (2 + 1, 0)  # the 2 prompt frames committed with the first new frame
    assert {f for f, _ in seen[1:]} == {1, 2}
    assert max(p for _, p in seen) == model.config.window - 1
    assert len(seen) == 3 * horizon  # 3 unmask passes per new frame, no separate commit


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_new_frame_costs_steps_trunk_calls(steps):
    """Each new frame costs exactly `steps` trunk calls: its first pass also commits the
    previous frame (2 frames in flight), the later passes run it alone."""
    model = HMA(tiny()).eval()
    horizon = model.config.window + 2  # past the window: the cache slides
    batch = random_batch(model.config, rows=2, frames=2 + horizon)
    seen = _trunk_calls(
        model,
        lambda: model.rollout(
            batch.tokens[:, :2], batch.actions, batch.datasets,
            horizon=horizon, steps=steps,
        ),
    )  # fmt: skip
    assert len(seen) == steps * horizon
    per_frame = [[f for f, _ in seen[i : i + steps]] for i in range(steps, len(seen), steps)]
    assert per_frame == [[2] + [1] * (steps - 1)] * (horizon - 1)


@pytest.mark.parametrize("conditioning", ["concat+modulate", "cross_attention"])
def test_committing_with_the_next_frame_equals_a_separate_commit(conditioning):
    """One call over [finished frames, next frame] committing only the finished ones gives the
    next frame the same outputs and leaves the same cache as a commit pass followed by a pass
    of the next frame alone (the unfolded path)."""
    model = HMA(tiny(conditioning=conditioning)).eval()
    for block in model.blocks:  # adaLN starts at zero: make the action path live
        if block.modulation is not None:
            torch.nn.init.normal_(block.modulation[1].weight, std=0.2)
    batch = random_batch(model.config, rows=2, frames=model.config.window + 2)
    tokens, actions, names = batch.tokens, batch.actions, batch.datasets
    mask = torch.zeros(2, 3, model.config.tokens_per_frame, dtype=torch.bool)
    mask[:, -1, ::2] = True  # the next frame half masked, as in an unmask pass
    separate, folded = model.new_cache(), model.new_cache()
    with torch.no_grad():
        # a cache that already slides: window - 1 frames, then 2 finished + 1 next frame
        for cache in (separate, folded):
            end = model.config.window - 1
            model(tokens[:, :end], actions[:, :end], names, cache=cache, append=True)
        t = model.config.window - 1
        model(tokens[:, t : t + 2], actions[:, t : t + 2], names, cache=separate, append=True)
        one = model(
            tokens[:, t + 2 : t + 3], actions[:, t + 2 : t + 3], names,
            video_mask=mask[:, -1:], cache=separate,
        )  # fmt: skip
        both = model(
            tokens[:, t : t + 3], actions[:, t : t + 3], names,
            video_mask=mask, cache=folded, append=2,
        )  # fmt: skip
    torch.testing.assert_close(both.video[:, -1:], one.video, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both.action[:, -1:], one.action, rtol=1e-4, atol=1e-5)
    assert folded.next_position == separate.next_position == t + 2
    assert folded.frames == separate.frames == model.config.window - 1
    for layer in range(len(model.blocks)):
        (p1, k1, v1), (p2, k2, v2) = folded.held(layer), separate.held(layer)
        assert p1.tolist() == p2.tolist() == list(range(t + 2 - (model.config.window - 1), t + 2))
        torch.testing.assert_close(k1, k2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-5)
    if conditioning == "cross_attention":
        torch.testing.assert_close(folded.context, separate.context, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="append"):
        model(tokens[:, :2], actions[:, :2], names, cache=model.new_cache(), append=3)


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


def test_inverse_cdf_draws_follow_the_probabilities():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0])
    draws = categorical(probs.expand(20_000, -1), torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=6).float() / draws.numel()
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    assert freq[probs == 0].sum() == 0  # a code of probability 0 is never drawn


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
