"""The interface every video head meets.

N rows (batch x frames), S tokens per frame, D width, C soft channels
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class VideoHead(Protocol):
    def loss(self, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """target: vq int64 [N,S] | soft float [N,S,C]; cond float [N,S,D] (trunk output);
        mask bool [N,S], True = token to predict. Mean over masked tokens."""
        ...

    def sample(
        self, cond: torch.Tensor, temperature: float, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(values: vq int64 [N,S] | soft float [N,S,C], confidence float [N,S]); the caller
        decides which values to commit."""
        ...


def empty_loss(head: torch.nn.Module, cond: torch.Tensor) -> torch.Tensor:
    """The loss when no token is masked: a zero that still reaches `cond` and every parameter
    of `head` (DDP expects each one to get a gradient)."""
    return cond.sum() * 0.0 + sum(p.sum() * 0.0 for p in head.parameters())
