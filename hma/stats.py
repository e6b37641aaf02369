"""Exact, mergeable per-dimension statistics of raw actions (mean, std, min, max, count).

Partial statistics are computed per episode in Ray tasks and merged on the driver with Chan et
al.'s pairwise update (mean and sum of squared deviations), which stays accurate where the naive
E[x^2] - E[x]^2 cancels catastrophically (large offsets, e.g. pusht's 0-512 pixel targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ActionStats:
    count: int
    mean: np.ndarray  # float64 [A]
    m2: np.ndarray  # float64 [A], sum of squared deviations from the mean
    min: np.ndarray  # float64 [A]
    max: np.ndarray  # float64 [A]

    @classmethod
    def of(cls, actions: np.ndarray) -> ActionStats:
        """Statistics of one [T, A] array."""
        a = np.asarray(actions, dtype=np.float64)
        mean = a.mean(0)
        return cls(a.shape[0], mean, ((a - mean) ** 2).sum(0), a.min(0), a.max(0))

    def merge(self, other: ActionStats) -> ActionStats:
        if self.mean.shape != other.mean.shape:
            raise ValueError(f"action dims differ: {self.mean.shape} vs {other.mean.shape}")
        n = self.count + other.count
        delta = other.mean - self.mean
        return ActionStats(
            n,
            self.mean + delta * (other.count / n),
            self.m2 + other.m2 + delta**2 * (self.count * other.count / n),
            np.minimum(self.min, other.min),
            np.maximum(self.max, other.max),
        )

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation."""
        return np.sqrt(self.m2 / max(self.count, 1))

    def to_dict(self) -> dict[str, list[float] | int]:
        return {
            "count": self.count,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
        }
