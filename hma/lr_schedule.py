"""The learning-rate schedule both training loops use (tokenizers and the world model)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, progress: float, min_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up over
    `warmup_steps`, then a cosine from 1 down to `min_ratio` as `progress` goes 0 -> 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return min_ratio + (1 - min_ratio) * cosine
