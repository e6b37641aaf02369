"""Video heads: one interface (base.py), so MaskGIT (vq codes, maskgit.py) and MAR diffusion (soft
tokens, diffusion.py) swap freely; `build_head` makes the one a config names."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from hma.model.config import ModelConfig


def build_head(config: ModelConfig) -> torch.nn.Module:
    """The video head the config names, sized to the trunk width."""
    if config.head == "maskgit":
        from hma.model.heads.maskgit import MaskGITHead

        return MaskGITHead(config.maskgit, config.d_model, config.vocab_size)
    # Lazy: only soft-token models need the diffusion head's module.
    from hma.model.heads.diffusion import DiffusionHead, DiffusionHeadConfig

    return DiffusionHead(
        DiffusionHeadConfig(**config.diffusion),
        cond_dim=config.d_model,
        latent_dim=config.latent_channels,
    )
