"""The training / evaluation batch the model consumes.

    B batch, T frames, h*w token grid, C soft channels, A_max widest flattened action chunk,
    S_max widest proprioceptive state

`actions[:, t]` is frame t's chunk: the `stride` raw actions taken from kept frame t to t+1,
normalised with its dataset's statistics and flattened (stride * action_dim), zero-padded past
the row's own dataset width. Rows may come from different datasets. `state[:, t]` is the
proprioceptive state observed with frame t, normalised with its dataset's statistics and
zero-padded the same way (None when no row has state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    tokens: torch.Tensor  # vq int64 [B,T,h,w] | soft float32 [B,T,C,h,w]
    actions: torch.Tensor  # float32 [B,T,A_max]
    datasets: list[str]  # len B
    state: torch.Tensor | None = None  # float32 [B,T,S_max]

    def __post_init__(self) -> None:
        b, t = self.tokens.shape[:2]
        if self.actions.dim() != 3 or self.actions.shape[:2] != (b, t):
            raise ValueError(
                f"actions must be [B,T,A_max] = [{b},{t},A], got {list(self.actions.shape)}"
            )
        if len(self.datasets) != b:
            raise ValueError(f"{len(self.datasets)} dataset names for a batch of {b} rows")
        if self.state is not None and (self.state.dim() != 3 or self.state.shape[:2] != (b, t)):
            raise ValueError(
                f"state must be [B,T,S_max] = [{b},{t},S], got {list(self.state.shape)}"
            )

    def to(self, device: torch.device | str) -> Batch:
        state = None if self.state is None else self.state.to(device)
        return Batch(self.tokens.to(device), self.actions.to(device), list(self.datasets), state)
