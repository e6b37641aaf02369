"""The IRASim-like DiT baseline: shapes, joint (non-causal) clip denoising, parameter matching."""

from __future__ import annotations

import pytest
import torch

from hma.model.baselines import DiT, DiTConfig, matching_config, parameter_count
from hma.model.config import model_config
from hma.model.hma import HMA

B, T, C, A = 2, 5, 4, 3
GRID = (4, 4)


def tiny(**overrides) -> DiTConfig:
    fields = dict(
        latent_channels=C,
        grid=GRID,
        clip_frames=T,
        action_width=A,
        d_model=32,
        layers=2,
        heads=2,
        sample_steps=4,
    )
    return DiTConfig(**{**fields, **overrides})


def perturbed(config: DiTConfig) -> DiT:
    """A DiT whose zero-initialised (adaLN-Zero) layers are nonzero, as after training."""
    torch.manual_seed(0)
    model = DiT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_loss_sample_and_rollout_shapes():
    model = DiT(tiny())
    clip, actions = torch.randn(B, T, C, *GRID), torch.randn(B, T - 1, A)
    loss = model.loss(clip, actions, torch.Generator().manual_seed(0))
    assert loss.shape == () and loss.requires_grad
    loss.backward()

    out = model.sample(clip[:, 0], actions, 1.0, torch.Generator().manual_seed(0))
    assert out.shape == (B, T, C, *GRID) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], clip[:, 0])  # the given frame is kept, not regenerated

    prompt = clip[:, :2]
    video = model.rollout(prompt, torch.randn(B, 6, A), torch.Generator().manual_seed(0))
    assert video.shape == (B, 2 + 6, C, *GRID)  # 6 new frames = one clip of 4 + a partial clip
    assert torch.equal(video[:, :2], prompt)

    with pytest.raises(ValueError, match="actions"):
        model.loss(clip, torch.randn(B, T, A))
    with pytest.raises(ValueError, match="latents"):
        model.sample(torch.randn(B, C + 1, *GRID), actions)


def test_the_clip_is_denoised_jointly_in_both_directions():
    model = perturbed(tiny())
    x, actions = torch.randn(B, T, GRID[0] * GRID[1], C), torch.randn(B, T - 1, A)
    t = torch.full((B, T), 500)
    with torch.no_grad():
        base = model.denoise(x, t, actions)
        later = x.clone()
        later[:, 4] += 1.0  # change only the last frame
        moved = model.denoise(later, t, actions)
        acted = actions.clone()
        acted[:, 3] += 1.0  # change only the action into the last frame
        by_action = model.denoise(x, t, acted)
    # frame 1 sees frame 4 and its action: no causal mask inside a clip
    assert not torch.allclose(base[:, 1], moved[:, 1])
    assert not torch.allclose(base[:, 1], by_action[:, 1])
    # per-frame conditioning: the action of frame 4 modulates frame 4 itself most
    assert (by_action[:, 4] - base[:, 4]).abs().mean() > (by_action[:, 1] - base[:, 1]).abs().mean()


def test_every_denoising_step_runs_the_whole_transformer():
    config = tiny(sample_steps=6)
    model = DiT(config)
    calls = []
    for block in model.blocks:
        block.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    model.sample(torch.randn(B, C, *GRID), torch.randn(B, T - 1, A))
    assert len(calls) == config.sample_steps * 2 * config.layers
    assert all(shape[:2] == (B, T) for shape in calls)  # each pass covers the whole clip

    noise = torch.Generator().manual_seed(1)
    first, actions = torch.randn(B, C, *GRID), torch.randn(B, T - 1, A)
    cold = model.sample(first, actions, 0.0, noise)
    assert torch.equal(cold, model.sample(first, actions, 0.0, torch.Generator().manual_seed(2)))


def test_a_shorter_clip_denoises_only_its_frames():
    """One new frame per denoising run (the per-frame protocol): a clip of 2 frames, every
    step still a pass of the whole transformer over it; clips longer than trained refused."""
    config = tiny(sample_steps=3)
    model = DiT(config)
    calls = []
    for block in model.blocks:
        block.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    first = torch.randn(B, C, *GRID)
    clip = model.sample(first, torch.randn(B, 1, A))
    assert clip.shape == (B, 2, C, *GRID) and torch.equal(clip[:, 0], first)
    assert len(calls) == config.sample_steps * 2 * config.layers
    assert all(shape[:2] == (B, 2) for shape in calls)
    with pytest.raises(ValueError, match="actions must be"):
        model.sample(first, torch.randn(B, T, A))
    with pytest.raises(ValueError, match="actions must be"):
        model.sample(first, torch.randn(B, 0, A))


def test_parameter_matching_an_hma_config_within_ten_percent():
    hma = HMA(model_config("tiny", datasets={"pusht": 2}))
    target = sum(p.numel() for p in hma.parameters())
    base = tiny(layers=hma.config.layers)
    config = matching_config(target, base)
    built = sum(p.numel() for p in DiT(config).parameters())
    assert built == parameter_count(config)
    assert abs(built - target) / target <= 0.10, (built, target)
    assert config.layers == hma.config.layers  # width alone was enough here
    # the paper's base size (~44M): same depth, narrower than HMA's 256 (adaLN-Zero is wide)
    big = matching_config(44_000_000, DiTConfig())
    assert abs(parameter_count(big) - 44_000_000) / 44_000_000 <= 0.10
    with pytest.raises(ValueError, match="parameters"):
        matching_config(10, base)


def test_the_baseline_learns():
    """Adam steps on one clip lower the loss at fixed timesteps and noise (the loss is real)."""
    torch.manual_seed(0)
    model = DiT(tiny())
    clip, actions = torch.randn(1, T, C, *GRID), torch.randn(1, T - 1, A)

    def fixed_loss() -> float:
        with torch.no_grad():
            seeds = range(8)
            return (
                sum(
                    model.loss(clip, actions, torch.Generator().manual_seed(s)).item()
                    for s in seeds
                )
                / 8
            )

    before = fixed_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        loss = model.loss(clip.expand(8, -1, -1, -1, -1), actions.expand(8, -1, -1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert fixed_loss() < 0.5 * before
