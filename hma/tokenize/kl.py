"""Soft tokenizer: conv encoder -> diagonal Gaussian latent (KL-regularised) -> conv decoder.

    B batch, H x W pixels, C latent channels, h x w = H/f x W/f token grid

Tokens are the posterior means [B,C,h,w] divided by a stored latent standard deviation, so the
diffusion head sees roughly unit-variance inputs (the role of the 0.18215 factor of Stable
Diffusion, here measured during training instead of hard-coded). The std is an exponential
moving average of the batch std of the means, kept as a buffer so it is saved with the weights
and covered by the fingerprint.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from hma.config import StrictModel
from hma.tokenize.backbone import BackboneConfig, Decoder, Encoder, Reconstruction
from hma.tokenize.quantizers import DiagonalGaussian


class KLConfig(StrictModel):
    """A soft (continuous) tokenizer."""

    arch: Literal["kl"] = "kl"
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    latent_channels: int = Field(default=8, ge=4, le=16, description="C, channels per token")
    kl_weight: float = Field(
        default=1e-5, ge=0, description="weight of KL(q||N(0,I)) averaged over latent elements"
    )
    logvar_range: tuple[float, float] = Field(
        default=(-30.0, 20.0), description="clamp of the posterior log-variance"
    )
    scale_momentum: float = Field(
        default=0.99, ge=0, lt=1, description="EMA momentum of the stored latent std"
    )

    def build(self) -> KLTokenizerNet:
        return KLTokenizerNet(self)


class KLTokenizerNet(nn.Module):
    kind = "soft"

    def __init__(self, config: KLConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.backbone, out_channels=2 * config.latent_channels)
        self.decoder = Decoder(config.backbone, in_channels=config.latent_channels)
        self.register_buffer("latent_std", torch.ones(()))
        self.register_buffer("latent_std_updates", torch.zeros((), dtype=torch.int64))
        self.downsample = config.backbone.downsample
        self.vocab_size: int | None = None
        self.latent_channels: int | None = config.latent_channels

    def forward(self, images: torch.Tensor) -> Reconstruction:
        posterior = DiagonalGaussian(self.encoder(images), self.config.logvar_range)
        latents = posterior.sample() if self.training else posterior.mean  # (B, C, h, w)
        recon = self.decoder(latents)  # (B, 3, H, W)
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        if self.training:
            self._update_latent_std(posterior.mean.detach())
        metrics = {"kl": float(kl.detach()), "latent_std": float(self.latent_std)}
        return Reconstruction(recon, self.config.kl_weight * kl, metrics)

    @torch.no_grad()
    def _update_latent_std(self, means: torch.Tensor) -> None:
        # The first batch sets the estimate; an EMA started at 1.0 would lag for ~1/(1-m) steps.
        m = self.config.scale_momentum if self.latent_std_updates > 0 else 0.0
        self.latent_std.mul_(m).add_((1 - m) * means.std())
        self.latent_std_updates.add_(1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        moments = self.encoder(images).float()  # (B, 2C, h, w)
        return moments[:, : self.config.latent_channels] / self.latent_std  # (B, C, h, w)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(tokens * self.latent_std)  # (B, 3, H, W)
