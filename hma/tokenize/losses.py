"""Training losses: L1 + L2 reconstruction, plus an optional adversarial term (off by default).

    B batch, H x W pixels, images float [B,3,H,W] in [-1, 1]

The adversarial term is the PatchGAN discriminator of Isola et al. (pix2pix) with the hinge loss
used by VQGAN (Esser et al. 2021), switched on after `adversarial_start` steps so the
autoencoder first learns to reconstruct. It sharpens textures at some cost in PSNR; at the
project's small scales the plain reconstruction loss is the better default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hma.config import StrictModel
from hma.tokenize.backbone import norm


class LossConfig(StrictModel):
    l1_weight: float = Field(default=1.0, ge=0)
    l2_weight: float = Field(default=1.0, ge=0)
    adversarial_weight: float = Field(default=0.0, ge=0, description="0 disables the GAN term")
    adversarial_start: int = Field(default=0, ge=0, description="step the GAN term starts at")
    disc_width: int = Field(default=32, gt=0, description="discriminator channels, first layer")
    disc_layers: int = Field(default=3, ge=1, description="stride-2 discriminator layers")
    disc_lr: float = Field(default=1e-4, gt=0)

    @property
    def adversarial(self) -> bool:
        return self.adversarial_weight > 0


def reconstruction_loss(
    recon: torch.Tensor, target: torch.Tensor, config: LossConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted L1 + L2 over pixels, and the parts for logging."""
    l1 = (recon - target).abs().mean()
    l2 = (recon - target).pow(2).mean()
    loss = config.l1_weight * l1 + config.l2_weight * l2
    return loss, {"l1": float(l1.detach()), "l2": float(l2.detach())}


class PatchDiscriminator(nn.Module):
    """[B,3,H,W] -> [B,1,H/2^n,W/2^n] real/fake logits per patch."""

    def __init__(self, config: LossConfig):
        super().__init__()
        c = config.disc_width
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2)]
        for _ in range(config.disc_layers - 1):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), norm(2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        layers.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def generator_adversarial_loss(disc: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    return -disc(fake).mean()


def discriminator_hinge_loss(
    disc: nn.Module, real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - disc(real)).mean() + F.relu(1.0 + disc(fake.detach())).mean())
