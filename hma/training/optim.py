"""The optimiser every training loop uses: AdamW with linear warm-up, then cosine decay.

    OptimConfig        one typed config (trainers subclass it only to change defaults)
    build_optimizer    AdamW; weight decay on matrices, not on biases, norms or positions
    warmup_cosine      the schedule's multiplier of the peak lr
    clip_and_step      clip the global gradient norm, step, clear the gradients

The schedule's progress is the trainer's to define: the tokenizer trainer follows whichever of
its step or time budget is further spent; pretraining follows its step horizon after warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from pydantic import Field
from torch import nn

from hma.config import StrictModel


class OptimConfig(StrictModel):
    """AdamW (betas 0.9, 0.95 as in the paper), linear warm-up, then cosine decay."""

    lr: float = Field(default=3e-4, gt=0, description="peak learning rate")
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.05, ge=0, description="on matrices only")
    warmup_steps: int = Field(default=100, ge=0)
    decay_steps: int | None = Field(
        default=None, gt=0, description="cosine horizon in steps (default: max_steps)"
    )
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="final lr / lr")
    grad_clip: float = Field(default=1.0, gt=0, description="max global gradient norm")


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; weight decay on matrices, not on biases/norms/positions."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps)


def warmup_cosine(step: int, warmup_steps: int, progress: float, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up over
    `warmup_steps`, then a cosine from 1 down to `min_ratio` as `progress` goes 0 -> 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return min_ratio + (1 - min_ratio) * cosine


def lr_factor(optim: OptimConfig, step: int, progress: float) -> float:
    """warmup_cosine with `optim`'s warm-up and floor."""
    return warmup_cosine(step, optim.warmup_steps, progress, optim.min_lr_ratio)


def horizon_progress(optim: OptimConfig, step: int, horizon: int) -> float:
    """Progress through a `horizon`-step schedule, counted from the end of warm-up."""
    return (step - optim.warmup_steps) / max(horizon - optim.warmup_steps, 1)


def clip_and_step(
    optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter], max_norm: float
) -> float:
    """Clip the global gradient norm of `params` to `max_norm`, step, and clear the gradients;
    returns the norm before clipping (gathered whole when the gradients are sharded)."""
    norm = nn.utils.clip_grad_norm_(list(params), max_norm)
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
