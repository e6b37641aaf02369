"""The MAR-style diffusion head: interface, masking, learning a conditional map, sampling."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from hma.model.heads.diffusion import (
    DiffusionHead,
    DiffusionHeadConfig,
    cosine_alphas_cumprod,
    ddim_timesteps,
)

N, S, C, D = 3, 5, 4, 16


def make_head(**overrides) -> DiffusionHead:
    torch.manual_seed(0)
    fields = {"width": 32, "depth": 2, "sample_steps": 8, **overrides}
    config = DiffusionHeadConfig(**fields)
    return DiffusionHead(config, cond_dim=D, latent_dim=C)


def test_loss_and_sample_shapes_and_dtypes():
    head = make_head()
    target, cond = torch.randn(N, S, C), torch.randn(N, S, D)
    mask = torch.rand(N, S) < 0.5
    mask[0, 0] = True
    loss = head.loss(target, cond, mask)
    assert loss.shape == () and loss.dtype == torch.float32 and loss.requires_grad
    loss.backward()
    assert head.net.input_proj.weight.grad is not None

    latents, confidence = head.sample(cond, 1.0, torch.Generator().manual_seed(0))
    assert latents.shape == (N, S, C) and latents.dtype == torch.float32
    assert confidence.shape == (N, S) and confidence.dtype == torch.float32
    assert ((confidence >= 0) & (confidence < 1)).all()
    assert torch.isfinite(latents).all()


def test_loss_ignores_unmasked_tokens_and_handles_an_empty_mask():
    head = make_head()
    with torch.no_grad():  # a fresh head predicts zero noise whatever its input: perturb it
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    target, cond = torch.randn(N, S, C), torch.randn(N, S, D)
    mask = torch.zeros(N, S, dtype=torch.bool)
    mask[:, :2] = True
    torch.manual_seed(1)
    a = head.loss(target, cond, mask)
    changed = target.clone()
    changed[:, 2:] += 100.0  # only unmasked tokens change
    torch.manual_seed(1)
    assert head.loss(changed, cond, mask).item() == pytest.approx(a.item())
    changed[:, 0] += 1.0  # a masked token changes: the loss must see it
    torch.manual_seed(1)
    assert head.loss(changed, cond, mask).item() != pytest.approx(a.item())

    empty = head.loss(target, cond.requires_grad_(), torch.zeros(N, S, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()  # still part of the graph


def test_bad_shapes_and_config_are_value_errors():
    head = make_head()
    with pytest.raises(ValueError, match="cond"):
        head.loss(torch.randn(N, S, C), torch.randn(N, S, D + 1), torch.ones(N, S, dtype=bool))
    with pytest.raises(ValueError, match="target"):
        head.loss(torch.randn(N, S, C + 1), torch.randn(N, S, D), torch.ones(N, S, dtype=bool))
    with pytest.raises(ValueError, match="mask"):
        head.loss(torch.randn(N, S, C), torch.randn(N, S, D), torch.ones(N, S + 1, dtype=bool))
    with pytest.raises(ValueError, match="temperature"):
        head.sample(torch.randn(N, S, D), -1.0)
    with pytest.raises(ValidationError, match="sample_steps"):
        DiffusionHeadConfig(train_steps=10, sample_steps=20)
    with pytest.raises(ValidationError):
        DiffusionHeadConfig(widht=3)  # a typo is an error, not a silent default


def test_schedule_is_the_cosine_schedule():
    alpha_bar = cosine_alphas_cumprod(1000, 0.008, 0.999)
    assert alpha_bar.shape == (1000,)
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()  # monotone: more noise at larger t
    assert alpha_bar[0] > 0.9999 and alpha_bar[-1] < 1e-6
    assert abs(float(alpha_bar[499]) - 0.5) < 0.02  # the cosine curve crosses 1/2 mid-way
    steps = ddim_timesteps(1000, 10)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps) == 10
    assert ddim_timesteps(1000, 1) == [999]
    head = make_head()
    assert "alphas_cumprod" not in head.state_dict()  # derived from the config, not saved


def test_temperature_and_generator_control_the_samples():
    head = make_head()
    cond = torch.randn(N, S, D)

    def sample(temperature: float, seed: int) -> torch.Tensor:
        return head.sample(cond, temperature, torch.Generator().manual_seed(seed))[0]

    assert torch.equal(sample(1.0, 3), sample(1.0, 3))  # seeded: reproducible
    assert not torch.allclose(sample(1.0, 3), sample(1.0, 4))
    assert torch.equal(sample(0.0, 3), sample(0.0, 4))  # temperature 0: no noise at all
    assert not torch.allclose(sample(0.0, 3), sample(1.0, 3))


def test_head_learns_a_conditional_map_and_samples_it_in_few_steps():
    """16 conditioning vectors each map to one latent; after training, 10 DDIM steps recover it."""
    torch.manual_seed(0)
    codes = 16
    keys, values = torch.randn(codes, D), torch.randn(codes, C)
    head = make_head(sample_steps=10)
    optimizer = torch.optim.AdamW(head.parameters(), lr=2e-3)
    mask = torch.ones(8, 16, dtype=torch.bool)
    losses = []
    for _ in range(300):
        idx = torch.randint(0, codes, (8, 16))
        loss = head.loss(values[idx], keys[idx], mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-50:]) / 50
    assert last < first / 8, (first, last)

    generator = torch.Generator().manual_seed(0)
    spread = values.abs().mean().item()  # what an uninformed guess of 0 would miss by
    mean_path = head.sample(keys[None], 0.0, generator)[0][0]
    assert (mean_path - values).abs().mean() < 0.15 * spread
    noisy = head.sample(keys[None], 1.0, generator)[0][0]
    assert (noisy - values).abs().mean() < 0.3 * spread
