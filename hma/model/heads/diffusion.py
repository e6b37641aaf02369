"""MAR-style diffusion head: denoise each soft video token on its own, conditioned on the trunk.

    N rows (batch x frames), S tokens per row, C latent channels per token, D trunk width,
    W head width, M = N*S flattened tokens (times `batch_mul` copies during training)

Follows the diffusion loss of MAR (Li et al. 2024, "Autoregressive Image Generation without Vector
Quantization", models/diffloss.py): a small MLP of residual blocks whose LayerNorms are modulated
(adaLN shift/scale/gate, as in DiT, Peebles & Xie 2023) by the sum of the embedded trunk output
and the embedded diffusion timestep. The head never mixes tokens; the trunk does that. Training
predicts the added noise (epsilon, Ho et al. 2020) under the cosine schedule of Nichol & Dhariwal
2021 ("Improved Denoising Diffusion Probabilistic Models"). Sampling runs `sample_steps`
deterministic DDIM steps (Song et al. 2021) from Gaussian noise whose scale is the temperature,
where MAR uses stochastic DDPM steps with temperature-scaled noise. Each step clamps the
clean-latent estimate (`clip_denoised`, as improved-diffusion does for images): at the first
cosine step alpha_bar ~ 2e-9, so an error in the predicted noise reaches x0 amplified ~2e4-fold;
unclamped, a trained head's 10-step samples landed ~800 away from unit-scale targets (measured),
clamped within 0.02.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from hma.config import StrictModel
from hma.model.blocks import modulate
from hma.model.heads.base import empty_loss


class DiffusionHeadConfig(StrictModel):
    """The per-token denoiser and its noise schedule."""

    width: int = Field(default=256, ge=8, description="W, hidden width of the MLP")
    depth: int = Field(default=3, ge=1, description="residual adaLN blocks (MAR: 3 for base)")
    train_steps: int = Field(default=1000, ge=2, description="diffusion steps of the schedule")
    sample_steps: int = Field(
        default=100, ge=1, description="DDIM steps at sampling (MAR samples with 100)"
    )
    schedule: Literal["cosine"] = Field(default="cosine", description="Nichol & Dhariwal 2021")
    prediction: Literal["epsilon"] = Field(default="epsilon", description="the net predicts noise")
    cosine_offset: float = Field(
        default=0.008, gt=0, description="s in alpha_bar(t) = cos^2((t/T + s)/(1 + s) * pi/2)"
    )
    max_beta: float = Field(
        default=0.999, gt=0, lt=1, description="clip of each beta_t (the cosine end goes to 1)"
    )
    clip_denoised: float | None = Field(
        default=5.0,
        gt=0,
        description="clamp of the predicted clean latent at each sampling step, in latent units "
        "(tokens are scaled to unit variance); None disables it",
    )
    batch_mul: int = Field(
        default=4,
        ge=1,
        description="noise draws per masked token in one loss (MAR's diffusion_batch_mul)",
    )
    timestep_freqs: int = Field(
        default=256, ge=2, description="sinusoidal features of the timestep before its MLP"
    )
    max_period: float = Field(
        default=10000.0, gt=1, description="longest period of the sinusoidal timestep features"
    )

    @model_validator(mode="after")
    def _steps(self) -> DiffusionHeadConfig:
        if self.sample_steps > self.train_steps:
            raise ValueError(
                f"sample_steps ({self.sample_steps}) cannot exceed train_steps ({self.train_steps})"
            )
        if self.timestep_freqs % 2:
            raise ValueError(f"timestep_freqs must be even, got {self.timestep_freqs}")
        return self


# -- schedule (shared with the DiT baseline) ---------------------------------------------------
def cosine_alphas_cumprod(steps: int, offset: float, max_beta: float) -> torch.Tensor:
    """alpha_bar_t for t = 0..steps-1, float64 [steps] (Nichol & Dhariwal 2021, eq. 17)."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2  # (steps+1,)
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)  # (steps,)
    return torch.cumprod(1 - betas, dim=0)


def ddim_timesteps(train_steps: int, sample_steps: int) -> list[int]:
    """`sample_steps` timesteps evenly spaced from train_steps-1 down to 0 (both included)."""
    if sample_steps == 1:
        return [train_steps - 1]
    spaced = torch.linspace(train_steps - 1, 0, sample_steps).round().long()
    return sorted({int(t) for t in spaced}, reverse=True)


def ddim_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar: torch.Tensor,
    alpha_bar_next: torch.Tensor,
    clip: float | None,
) -> torch.Tensor:
    """One deterministic DDIM update (eta = 0) from noise level alpha_bar to alpha_bar_next.

    The clean estimate x0 = (x - sqrt(1 - a) eps) / sqrt(a) amplifies any error in eps by
    1/sqrt(a), about 2e4 at the last cosine step (a ~ 2e-9); clamping it (`clip`, as
    improved-diffusion's clip_denoised) keeps the first steps of a short schedule on track.
    """
    x0 = (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
    return alpha_bar_next.sqrt() * x0 + (1 - alpha_bar_next).sqrt() * eps


class TimestepEmbedder(nn.Module):
    """Integer timestep [M] -> [M, W]: sinusoidal features (Vaswani et al. 2017) then an MLP."""

    def __init__(self, width: int, freqs: int, max_period: float):
        super().__init__()
        self.freqs = freqs
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freqs, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freqs // 2
        exponent = torch.arange(half, dtype=torch.float32, device=t.device) / half
        freqs = self.max_period ** (-exponent)  # (F/2,)
        angles = t.float()[:, None] * freqs[None]  # (M, F/2)
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (M, F)
        return self.mlp(features)


class AdaLNResBlock(nn.Module):
    """x + gate * MLP(modulate(LN(x), shift, scale)); shift/scale/gate from the conditioning."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)  # 3 x (M, W)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class Denoiser(nn.Module):
    """eps_theta(x_t, t, z): noisy latents [M,C], timesteps [M], conditioning [M,D] -> [M,C]."""

    def __init__(self, config: DiffusionHeadConfig, cond_dim: int, latent_dim: int):
        super().__init__()
        w = config.width
        self.time_embed = TimestepEmbedder(w, config.timestep_freqs, config.max_period)
        self.cond_embed = nn.Linear(cond_dim, w)
        self.input_proj = nn.Linear(latent_dim, w)
        self.blocks = nn.ModuleList(AdaLNResBlock(w) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.output_proj = nn.Linear(w, latent_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero the modulations and the output, as DiT and MAR do: every block starts as the
        # identity and the head starts by predicting zero noise.
        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for layer in (self.final_modulation[-1], self.output_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.denoise(x, t, self.cond_embed(cond))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond_emb: torch.Tensor) -> torch.Tensor:
        """As forward, with the conditioning already embedded ([M,W], reused across steps)."""
        c = cond_emb + self.time_embed(t)  # (M, W)
        h = self.input_proj(x)  # (M, W)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)  # 2 x (M, W)
        return self.output_proj(modulate(self.final_norm(h), shift, scale))  # (M, C)


class DiffusionHead(nn.Module):
    """The soft-token video head: `loss(target, cond, mask)` and `sample(cond, temperature, ...)`."""

    def __init__(self, config: DiffusionHeadConfig, cond_dim: int, latent_dim: int):
        super().__init__()
        if cond_dim < 1 or latent_dim < 1:
            raise ValueError(f"cond_dim and latent_dim must be >= 1, got {cond_dim}, {latent_dim}")
        self.config = config
        self.cond_dim = cond_dim
        self.latent_dim = latent_dim
        self.net = Denoiser(config, cond_dim, latent_dim)
        alphas_cumprod = cosine_alphas_cumprod(
            config.train_steps, config.cosine_offset, config.max_beta
        )
        # Derived from the config, so not saved with the weights (persistent=False).
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)

    def _check(self, cond: torch.Tensor) -> None:
        if cond.ndim != 3 or cond.shape[-1] != self.cond_dim:
            raise ValueError(f"cond must be [N,S,{self.cond_dim}], got {list(cond.shape)}")

    def loss(self, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Epsilon-prediction MSE averaged over the masked tokens: a scalar.

        target float [N,S,C], cond float [N,S,D], mask bool [N,S] (True = predict this token).
        Each masked token draws `batch_mul` independent timesteps and noises (MAR).
        """
        self._check(cond)
        if target.shape != (*cond.shape[:2], self.latent_dim):
            raise ValueError(
                f"target must be [N,S,{self.latent_dim}] matching cond {list(cond.shape)}, "
                f"got {list(target.shape)}"
            )
        if mask.shape != cond.shape[:2]:
            raise ValueError(f"mask must be {list(cond.shape[:2])}, got {list(mask.shape)}")
        mask = mask.bool()
        if not mask.any():
            return empty_loss(self, cond)
        x0 = target[mask].float().repeat(self.config.batch_mul, 1)  # (M, C)
        z = cond[mask].repeat(self.config.batch_mul, 1)  # (M, D)
        m = x0.shape[0]
        t = torch.randint(0, self.config.train_steps, (m,), device=x0.device)  # (M,)
        noise = torch.randn_like(x0)
        alpha_bar = self.alphas_cumprod[t][:, None]  # (M, 1)
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        eps = self.net(x_t, t, z.to(x_t.dtype))
        return (eps.float() - noise).pow(2).mean()

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents float [N,S,C] for every token, and random confidences float [N,S].

        Starts from N(0, temperature^2) noise (temperature 0: the deterministic mean path) and
        runs `sample_steps` DDIM steps. The confidences are uniform random scores, so the outer
        unmask loop commits tokens in a random order, as MAR does.
        """
        self._check(cond)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        n, s, _ = cond.shape
        z = cond.reshape(n * s, self.cond_dim)  # (M, D)
        x = torch.randn(
            (n * s, self.latent_dim), generator=generator, device=cond.device, dtype=cond.dtype
        )
        x = x * temperature
        cond_emb = self.net.cond_embed(z)  # (M, W): the same at every step
        steps = ddim_timesteps(self.config.train_steps, self.config.sample_steps)
        one = self.alphas_cumprod.new_ones(())
        for i, step in enumerate(steps):
            t = torch.full((n * s,), step, device=cond.device, dtype=torch.long)
            eps = self.net.denoise(x, t, cond_emb)
            alpha_bar_next = self.alphas_cumprod[steps[i + 1]] if i + 1 < len(steps) else one
            x = ddim_step(
                x, eps, self.alphas_cumprod[step], alpha_bar_next, self.config.clip_denoised
            )
        latents = x.reshape(n, s, self.latent_dim)  # (N, S, C)
        confidence = torch.rand((n, s), generator=generator, device=cond.device)
        return latents, confidence
