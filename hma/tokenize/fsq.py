"""Discrete tokenizer: conv encoder -> finite scalar quantization -> conv decoder.

    B batch, H x W pixels, d = len(levels), h x w = H/f x W/f token grid, K = prod(levels) codes

Tokens are the FSQ indices [B,h,w] in [0, K). The default levels (8, 5, 5, 5) give K = 1000, the
size Mentzer et al. recommend for ~2^10 codebooks; (8, 8, 8, 5, 5, 5) gives K = 64000, the
codebook of the Cosmos discrete tokenizers.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from hma.config import StrictModel
from hma.tokenize.backbone import BackboneConfig, Decoder, Encoder, Reconstruction
from hma.tokenize.quantizers import FSQ

LEVELS_1K = (8, 5, 5, 5)
LEVELS_64K = (8, 8, 8, 5, 5, 5)


class FSQConfig(StrictModel):
    """A discrete (vq) tokenizer."""

    arch: Literal["fsq"] = "fsq"
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    levels: tuple[int, ...] = Field(
        default=LEVELS_1K, description="FSQ levels per latent channel; vocab = their product"
    )

    @field_validator("levels")
    @classmethod
    def _levels(cls, levels: tuple[int, ...]) -> tuple[int, ...]:
        if not levels or any(level < 2 for level in levels):
            raise ValueError(f"every FSQ level must be >= 2, got {levels}")
        if math.prod(levels) > 2**31 - 1:
            raise ValueError(f"vocab {math.prod(levels)} does not fit int32 token ids")
        return levels

    def build(self) -> FSQTokenizerNet:
        return FSQTokenizerNet(self)


class FSQTokenizerNet(nn.Module):
    kind = "vq"

    def __init__(self, config: FSQConfig):
        super().__init__()
        self.config = config
        self.quantizer = FSQ(config.levels)
        self.encoder = Encoder(config.backbone, out_channels=self.quantizer.dim)
        self.decoder = Decoder(config.backbone, in_channels=self.quantizer.dim)
        self.downsample = config.backbone.downsample
        self.vocab_size: int | None = self.quantizer.codebook_size
        self.latent_channels: int | None = None

    def forward(self, images: torch.Tensor) -> Reconstruction:
        codes = self.quantizer(self.encoder(images))  # (B, d, h, w)
        recon = self.decoder(codes)  # (B, 3, H, W)
        with torch.no_grad():
            used = self.quantizer.codes_to_indices(codes).unique().numel()
        return Reconstruction(recon, recon.new_zeros(()), {"codes_used": float(used)})

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantizer.codes_to_indices(self.quantizer(self.encoder(images)))  # (B, h, w)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.indices_to_codes(tokens))  # (B, 3, H, W)
