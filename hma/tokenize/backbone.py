"""Convolutional encoder/decoder shared by the FSQ and KL tokenizers.

    B batch, H x W pixels, h x w = H/f x W/f latent grid, f = downsample, Z latent channels out

The encoder first folds `patch_size` x `patch_size` pixel patches into channels (pixel unshuffle;
Cosmos's tokenizers start with a patch-4 wavelet step for the same reason: full-resolution
convolutions dominate the cost and carry little information), then runs stages of `res_blocks`
residual blocks, each followed by a stride-2 convolution. The decoder mirrors it with
nearest-neighbour upsampling + convolution and unfolds patches at the end. Like the VQGAN /
latent-diffusion autoencoders, minus attention, so it runs at any resolution on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from pydantic import Field, model_validator
from torch import nn

from hma.config import StrictModel

MAX_GROUPS = 32  # GroupNorm groups, as in the latent-diffusion autoencoders


class BackboneConfig(StrictModel):
    """Shape of the conv encoder/decoder. The decoder mirrors the encoder."""

    downsample: int = Field(default=8, description="spatial reduction f: 8 or 16 (power of two)")
    patch_size: int = Field(
        default=1, description="pixels folded into channels first (power of two dividing f)"
    )
    width: int = Field(default=64, gt=0, description="channels of the first (full-res) stage")
    channel_mult: tuple[int, ...] = Field(
        default=(1, 2, 2),
        description="channel multiplier per stage; log2(downsample) stages, one per halving",
    )
    res_blocks: int = Field(default=1, ge=0, description="residual blocks per stage")
    mid_blocks: int = Field(default=1, ge=0, description="residual blocks at the latent resolution")

    @model_validator(mode="after")
    def _check(self) -> BackboneConfig:
        if self.downsample < 2 or self.downsample & (self.downsample - 1):
            raise ValueError(f"downsample must be a power of two >= 2, got {self.downsample}")
        p = self.patch_size
        if p < 1 or p & (p - 1) or self.downsample % p:
            raise ValueError(
                f"patch_size must be a power of two dividing downsample {self.downsample}, got {p}"
            )
        stages = self.stages
        if len(self.channel_mult) != stages:
            raise ValueError(
                f"channel_mult needs log2(downsample / patch_size) = {stages} entries, "
                f"got {self.channel_mult}"
            )
        if any(m < 1 for m in self.channel_mult):
            raise ValueError(f"channel_mult entries must be >= 1, got {self.channel_mult}")
        return self

    @property
    def stages(self) -> int:
        """Stride-2 stages after patching: log2(downsample / patch_size)."""
        return int(math.log2(self.downsample // self.patch_size))

    def channels(self) -> list[int]:
        return [self.width * m for m in self.channel_mult]


@dataclass
class Reconstruction:
    """What a tokenizer net's forward pass gives a training step."""

    images: torch.Tensor  # (B, 3, H, W) decoder output, [-1, 1] target range
    regularizer: torch.Tensor  # scalar, already weighted (0 for FSQ, weighted KL for KL)
    metrics: dict[str, float] = field(default_factory=dict)


def norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(MAX_GROUPS, channels)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            norm(c_in),
            nn.SiLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            norm(c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Encoder(nn.Module):
    """[B,3,H,W] in [-1, 1] -> [B,Z,H/f,W/f]."""

    def __init__(self, config: BackboneConfig, out_channels: int):
        super().__init__()
        chans = config.channels()
        p = config.patch_size
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(p),  # (B, 3p^2, H/p, W/p)
            nn.Conv2d(3 * p * p, chans[0], 3, padding=1),
        )
        layers: list[nn.Module] = []
        c = chans[0]
        for i, c_stage in enumerate(chans):
            for _ in range(config.res_blocks):
                layers.append(ResBlock(c, c_stage))
                c = c_stage
            c_next = chans[min(i + 1, len(chans) - 1)]
            layers.append(nn.Conv2d(c, c_next, 4, stride=2, padding=1))  # halve H and W
            c = c_next
        layers += [ResBlock(c, c) for _ in range(config.mid_blocks)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(norm(c), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


class Decoder(nn.Module):
    """[B,Z,h,w] -> [B,3,h*f,w*f], unbounded (trained towards [-1, 1])."""

    def __init__(self, config: BackboneConfig, in_channels: int):
        super().__init__()
        chans = config.channels()[::-1]
        c = chans[0]
        self.stem = nn.Conv2d(in_channels, c, 3, padding=1)
        layers: list[nn.Module] = [ResBlock(c, c) for _ in range(config.mid_blocks)]
        for c_stage in chans:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c_stage, 3, 1, 1)]
            c = c_stage
            layers += [ResBlock(c, c) for _ in range(config.res_blocks)]
        self.body = nn.Sequential(*layers)
        p = config.patch_size
        self.head = nn.Sequential(
            norm(c),
            nn.SiLU(),
            nn.Conv2d(c, 3 * p * p, 3, padding=1),
            nn.PixelShuffle(p),  # (B, 3, H, W)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(z)))
