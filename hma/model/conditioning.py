"""How a frame's action embedding enters the trunk: the five variants of the paper's ablation.

    B batch, T frames, S video tokens per frame, D width

    concat+modulate  (default) the action embedding is an extra spatial token of its frame AND
                     modulates (adaLN shift/scale) every block's temporal attention and MLP
    modulate         adaLN modulation only
    concat           extra spatial token only
    add              added to every video token of its frame (feature addition)
    cross_attention  every block's video tokens of frame t cross-attend to the action embeddings
                     of frames <= t (inside the sliding window)

Every variant is causal in time: modulation and addition use frame t's own action, the action
token of frame t is reachable from later frames only through causal temporal attention, and
cross-attention uses the same banded causal mask as temporal attention. (Note: the reference
implementation's cross-attention sees the actions of every frame, future ones included.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ConditioningSpec:
    tokens: int  # action tokens appended per frame
    modulate: bool  # adaLN modulation in every block
    add: bool  # added to the video tokens at the input
    cross_attention: bool  # causal cross-attention in every block


SPECS: dict[str, ConditioningSpec] = {
    "concat+modulate": ConditioningSpec(tokens=1, modulate=True, add=False, cross_attention=False),
    "modulate": ConditioningSpec(tokens=0, modulate=True, add=False, cross_attention=False),
    "concat": ConditioningSpec(tokens=1, modulate=False, add=False, cross_attention=False),
    "add": ConditioningSpec(tokens=0, modulate=False, add=True, cross_attention=False),
    "cross_attention": ConditioningSpec(tokens=0, modulate=False, add=False, cross_attention=True),
}


def spec_of(name: str) -> ConditioningSpec:
    if name not in SPECS:
        raise ValueError(f"unknown conditioning {name!r} (known: {', '.join(SPECS)})")
    return SPECS[name]


def compose(
    video: torch.Tensor, action: torch.Tensor, spec: ConditioningSpec, action_pos: torch.Tensor
) -> torch.Tensor:
    """Trunk input [B,T,S',D] from video tokens [B,T,S,D] and per-frame actions [B,T,D];
    S' = S + spec.tokens. `action_pos` [tokens,D] tells action tokens from video tokens."""
    if spec.add:
        video = video + action[:, :, None]  # [B,T,S,D], frame t gets action t only
    if spec.tokens:
        tokens = action[:, :, None] + action_pos  # [B,T,tokens,D]
        video = torch.cat((video, tokens), dim=2)  # [B,T,S+tokens,D]
    return video


def readout(out: torch.Tensor, spec: ConditioningSpec, video_tokens: int) -> torch.Tensor:
    """Per-frame features [B,T,D] for the action head: the frame's action token where there is
    one, else the mean of its video tokens."""
    if spec.tokens:
        return out[:, :, video_tokens:].mean(dim=2)
    return out[:, :, :video_tokens].mean(dim=2)
