"""Bottlenecks between encoder and decoder: finite scalar quantization and a diagonal Gaussian.

    B batch, d = len(levels) FSQ dims, C latent channels, h x w token grid

FSQ follows Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple" (2023): each of d
channels is squashed to a bounded range and rounded to one of L_i levels; a code is the tuple of
levels, and its index is the mixed-radix number with digits L_i. There is no codebook to learn or
collapse. The Gaussian posterior follows Kingma & Welling / the latent-diffusion autoencoders.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass (straight-through)."""
    return x + (x.round() - x).detach()


class FSQ(nn.Module):
    """Quantize [B,d,h,w] latents to a grid of prod(levels) codes; index <-> code both ways."""

    def __init__(self, levels: tuple[int, ...], eps: float = 1e-3):
        super().__init__()
        if len(levels) < 1 or any(level < 2 for level in levels):
            raise ValueError(f"FSQ levels must be >= 2 each, got {levels}")
        self.levels = tuple(int(level) for level in levels)
        self.eps = eps
        levels_t = torch.tensor(self.levels, dtype=torch.float32)
        # Mixed-radix place values: index = sum_i digit_i * prod_{j<i} L_j.
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1], dtype=torch.int64), dim=0)
        # Buffers, not constants: they move with .to(device) and are fixed by the levels (not saved).
        self.register_buffer("_levels", levels_t, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    @property
    def dim(self) -> int:
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def _per_channel(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, 1, 1)  # (1, d, 1, 1), broadcast over B, h, w

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash z so that rounding yields exactly L_i values per channel (even L shifts by 1/2)."""
        levels = self._per_channel(self._levels)
        half = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[B,d,h,w] float -> quantized codes scaled to [-1, 1], differentiable (STE)."""
        z = z.float()  # quantize in fp32 even under autocast: rounding bf16 loses levels
        quantized = round_ste(self.bound(z))
        return quantized / self._per_channel(self._levels // 2)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """[B,d,h,w] codes in [-1, 1] -> [B,h,w] int64 indices in [0, prod(levels))."""
        half = self._per_channel(self._levels // 2)
        digits = (codes * half + half).round().long()  # (B, d, h, w), digit_i in [0, L_i)
        return (digits * self._per_channel(self._basis)).sum(dim=1)  # (B, h, w)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """[B,h,w] int indices -> [B,d,h,w] float codes in [-1, 1]."""
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(
                f"token indices must lie in [0, {self.codebook_size}), got "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        digits = (indices.long().unsqueeze(1) // self._per_channel(self._basis)) % (
            self._per_channel(self._levels).long()
        )  # (B, d, h, w)
        half = self._per_channel(self._levels // 2)
        return (digits.float() - half) / half


class DiagonalGaussian:
    """A posterior N(mean, exp(logvar)) over [B,C,h,w] latents, from the encoder's 2C channels."""

    def __init__(self, moments: torch.Tensor, logvar_range: tuple[float, float]):
        self.mean, logvar = moments.float().chunk(2, dim=1)  # (B, C, h, w) each
        # Clamp as the latent-diffusion autoencoders do: keeps exp() finite early in training.
        self.logvar = logvar.clamp(*logvar_range)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self) -> torch.Tensor:
        return self.mean + self.std * torch.randn_like(self.mean)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over latent elements: [B]."""
        terms = self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(dim=1)
