"""Per-dataset stems and heads around the shared trunk (heterogeneous pre-training).

    B batch, T frames, D width, A_max widest flattened vector (action chunk or state),
    W one dataset's width

Each dataset owns a stem (Linear -> LayerNorm -> ReLU -> Linear to D) that embeds its flattened
action chunk, and a head (Linear D -> W) that predicts it; rows of one batch may come from
different datasets and are routed to their own stem and head (the reference needs
single-dataset batches). Adding a dataset adds only its stem and head. The model keeps one
`Embodiments` for actions and one for proprioceptive state (kind "state"), whose datasets are
the ones that have state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def stem(width: int, hidden: int, dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, dim)
    )


def widths_mask(widths: Sequence[int], width: int, device: torch.device) -> torch.Tensor:
    """bool [B,width]: True on each row's first widths[row] columns (not the zero padding)."""
    return (
        torch.arange(width, device=device)[None, :] < torch.tensor(widths, device=device)[:, None]
    )


class Embodiments(nn.Module):
    def __init__(self, widths: dict[str, int], dim: int, hidden: int, kind: str = "action"):
        super().__init__()
        self.kind = kind
        self.dim = dim
        self.hidden = hidden
        self.widths: dict[str, int] = {}
        self.stems = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for name, width in widths.items():
            self.add(name, width)

    @property
    def action_width(self) -> int:
        return max(self.widths.values(), default=0)

    def add(self, name: str, width: int) -> None:
        if name in self.widths:
            raise ValueError(f"dataset {name!r} already has a {self.kind} stem and head")
        self.widths[name] = width
        self.stems[name] = stem(width, self.hidden, self.dim)
        self.heads[name] = nn.Linear(self.dim, width)

    def _groups(self, datasets: Sequence[str], device: torch.device):
        """(name, row indices) per dataset, plus the permutation that restores row order."""
        unknown = sorted({d for d in datasets if d not in self.widths})
        if unknown:
            raise ValueError(
                f"no {self.kind} stem for dataset(s) {unknown}; the model knows "
                f"{sorted(self.widths)} (add one with HMA.add_dataset)"
            )
        names = list(dict.fromkeys(datasets))
        groups = [
            (n, torch.tensor([i for i, d in enumerate(datasets) if d == n], device=device))
            for n in names
        ]
        order = torch.cat([rows for _, rows in groups])
        return groups, torch.argsort(order)

    def embed(self, actions: torch.Tensor, datasets: Sequence[str]) -> torch.Tensor:
        """Normalised vectors [B,T,A_max] -> embeddings [B,T,D], each row by its own stem."""
        if len(datasets) != actions.shape[0]:
            raise ValueError(f"{len(datasets)} dataset names for a batch of {actions.shape[0]}")
        groups, inverse = self._groups(datasets, actions.device)
        parts = []
        for name, rows in groups:
            width = self.widths[name]
            if actions.shape[-1] < width:
                raise ValueError(
                    f"dataset {name!r} needs {width} {self.kind} values per frame, the batch has "
                    f"{actions.shape[-1]}"
                )
            parts.append(self.stems[name](actions[rows, :, :width]))  # [n,T,D]
        return torch.cat(parts)[inverse]

    def predict(self, features: torch.Tensor, datasets: Sequence[str], width: int) -> torch.Tensor:
        """Features [B,T,D] -> normalised vectors [B,T,width], zero past each row's own width."""
        groups, inverse = self._groups(datasets, features.device)
        parts = []
        for name, rows in groups:
            out = self.heads[name](features[rows])  # [n,T,W]
            parts.append(nn.functional.pad(out, (0, width - out.shape[-1])))  # [n,T,width]
        return torch.cat(parts)[inverse]

    def valid(self, datasets: Sequence[str], width: int, device: torch.device) -> torch.Tensor:
        """bool [B,width]: True on each row's real values (not the zero padding)."""
        return widths_mask([self.widths[d] for d in datasets], width, device)
