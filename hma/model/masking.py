"""Training masks for masked autoregression, and the four dynamics modes they define.

    B batch, T frames, S video tokens per frame

Frames 0..k-1 are context; every later frame has each video token masked with probability
p = cos(u * pi / 2), u ~ U(0, 1) drawn per row (the cosine schedule of MaskGIT). With probability
`random_context_prob` (0.2, as in the paper) a row draws its context length k uniformly from
1..T-1 instead of using `context_frames`. One mask serves every mode (paper Fig. 2):

    forward   actions given, video masked             p(o_t+1 | o_<=t, a_<=t)
    passive   no actions (learned null embedding), video masked
    policy    video given, actions masked              p(a_t | o_<=t, a_<t)
    full      video and actions masked                 both

An action is per frame (one flattened chunk), so actions mask per frame with the same p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from hma.config import StrictModel

Mode = Literal["forward", "passive", "policy", "full"]
MODES: tuple[str, ...] = ("forward", "passive", "policy", "full")


class MaskingConfig(StrictModel):
    context_frames: int = Field(1, ge=1, description="frames always given as context")
    random_context_prob: float = Field(
        0.2, ge=0, le=1, description="probability of a random context length instead"
    )


@dataclass
class Masks:
    video: torch.Tensor  # bool [B,T,S], True = masked (to predict)
    action: torch.Tensor  # bool [B,T], True = action masked (to predict)
    null_actions: bool  # passive mode: every action replaced by the null embedding


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")


def cosine_mask_ratio(u: torch.Tensor) -> torch.Tensor:
    """p = cos(u * pi / 2): the fraction of tokens masked at schedule position u in [0, 1]."""
    return torch.cos(u * (math.pi / 2))


def sample_masks(
    mode: str,
    batch: int,
    frames: int,
    tokens: int,
    config: MaskingConfig,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> Masks:
    """Random training masks for `mode`; draws use `generator` (on `device`) when given."""
    check_mode(mode)
    if frames < 2:
        raise ValueError(f"masked autoregression needs at least 2 frames, got {frames}")

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=device, generator=generator)

    context = torch.full((batch,), min(config.context_frames, frames - 1), device=device)
    random_context = rand(batch) < config.random_context_prob
    drawn = 1 + (rand(batch) * (frames - 1)).long().clamp(max=frames - 2)  # uniform in 1..T-1
    context = torch.where(random_context, drawn, context)
    future = torch.arange(frames, device=device)[None, :] >= context[:, None]  # [B,T]
    ratio = cosine_mask_ratio(rand(batch))  # [B]
    video = (rand(batch, frames, tokens) < ratio[:, None, None]) & future[:, :, None]
    action = (rand(batch, frames) < ratio[:, None]) & future
    if mode in ("forward", "passive"):
        action = torch.zeros_like(action)
    if mode == "policy":
        video = torch.zeros_like(video)
    return Masks(video=video, action=action, null_actions=mode == "passive")
