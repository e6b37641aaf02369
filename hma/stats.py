"""Exact, mergeable per-dimension statistics of raw actions (mean, std, min, max, count).

Partial statistics are computed per episode in Ray tasks and merged on the driver with Chan et
al.'s pairwise update (mean and sum of squared deviations), which stays accurate where the naive
E[x^2] - E[x]^2 cancels catastrophically (large offsets, e.g. pusht's 0-512 pixel targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Normalisation divides by max(std, ACTION_STD_FLOOR). A dimension whose train-split std is below
# the floor (a gripper that never moves, a constant padding dimension) is treated as constant:
# its train values normalise to ~0 instead of being blown up by noise, and a value off by d maps
# to at most d / ACTION_STD_FLOOR. 1e-3 sits far below the spread of every real action space in
# the registry (pixel targets ~1e2, OSC deltas ~1e-1, tabletop deltas ~1e-2).
ACTION_STD_FLOOR = 1e-3


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

    def to_dict(self, exact: bool = False) -> dict[str, list[float] | int]:
        """JSON-ready dict; `exact` adds "m2" so that `from_dict` + `merge` lose nothing."""
        d: dict[str, list[float] | int] = {
            "count": self.count,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
        }
        if exact:
            d["m2"] = self.m2.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionStats:
        """Inverse of `to_dict`; without "m2" it is rebuilt as std^2 * count (float rounding)."""
        count = int(d["count"])
        mean = np.asarray(d["mean"], dtype=np.float64)
        if "m2" in d:
            m2 = np.asarray(d["m2"], dtype=np.float64)
        else:
            m2 = np.asarray(d["std"], dtype=np.float64) ** 2 * count
        lo = np.asarray(d["min"], dtype=np.float64)
        hi = np.asarray(d["max"], dtype=np.float64)
        return cls(count, mean, m2, lo, hi)

    @property
    def scale(self) -> np.ndarray:
        """The divisor of `normalise`: std, floored at ACTION_STD_FLOOR."""
        return np.maximum(self.std, ACTION_STD_FLOOR)

    def normalise(self, a: np.ndarray) -> np.ndarray:
        """(a - mean) / max(std, ACTION_STD_FLOOR) over the last axis (A); float32 out."""
        a = np.asarray(a)
        if a.shape[-1:] != self.mean.shape:
            raise ValueError(f"actions end in {a.shape[-1:]}, stats are for {self.mean.shape}")
        return ((a - self.mean) / self.scale).astype(np.float32)

    def denormalise(self, a: np.ndarray) -> np.ndarray:
        """Inverse of `normalise`: a * max(std, ACTION_STD_FLOOR) + mean; float32 out."""
        a = np.asarray(a)
        if a.shape[-1:] != self.mean.shape:
            raise ValueError(f"actions end in {a.shape[-1:]}, stats are for {self.mean.shape}")
        return (a * self.scale + self.mean).astype(np.float32)
