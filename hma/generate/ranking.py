"""How well a learned simulator ranks policies: the paper's Table 5 statistics (SIMPLER's convention).

N policies, R_i ground-truth success, S_i learned-simulator success

pearson r, spearman rho    over the N (R_i, S_i) pairs
MMRV = (1/N) sum_i max_j |R_i - R_j| * 1[(S_i < S_j) != (R_i < R_j)]
       mean maximum rank violation: 0 is a perfect ranking; a violation between policies
       whose true rates differ more costs more
95% intervals              percentile bootstrap over each policy's episodes (resampled with
                           replacement, the same seeds kept paired across simulators)
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

BOOTSTRAP = 1000  # resamples for the intervals
CONFIDENCE = 0.95


def pearson(r: np.ndarray, s: np.ndarray) -> float:
    if np.std(r) == 0 or np.std(s) == 0:
        return float("nan")  # undefined when either side is constant
    return float(stats.pearsonr(r, s).statistic)


def spearman(r: np.ndarray, s: np.ndarray) -> float:
    if np.std(r) == 0 or np.std(s) == 0:
        return float("nan")
    return float(stats.spearmanr(r, s).statistic)


def mmrv(r: np.ndarray, s: np.ndarray) -> float:
    r, s = np.asarray(r, np.float64), np.asarray(s, np.float64)
    violated = (s[:, None] < s[None, :]) != (r[:, None] < r[None, :])  # [N,N]
    cost = np.abs(r[:, None] - r[None, :]) * violated
    return float(cost.max(axis=1).mean())


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def text(self, digits: int = 2) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass
class Ranking:
    pearson: Interval
    spearman: Interval
    mmrv: Interval
    mean_abs_difference: Interval  # mean over policies of |S_i - R_i|

    def lines(self) -> list[str]:
        return [
            f"Pearson r {self.pearson.text()}  Spearman rho {self.spearman.text()}  "
            f"MMRV {self.mmrv.text(3)}  mean |learned - true| {self.mean_abs_difference.text()}",
            f"(95% intervals: percentile bootstrap over episodes, {BOOTSTRAP} resamples)",
        ]

    def to_dict(self) -> dict:
        return asdict(self)


def _statistics(r: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.array([pearson(r, s), spearman(r, s), mmrv(r, s), float(np.abs(s - r).mean())])


def rank_agreement(true: list[list[bool]], learned: list[list[bool]], seed: int = 0) -> Ranking:
    """The statistics of N policies' per-episode outcomes in both simulators (episode k of a
    policy is the same start in both, and is resampled as a pair)."""
    t = [np.asarray(o, np.float64) for o in true]
    s = [np.asarray(o, np.float64) for o in learned]
    point = _statistics(np.array([o.mean() for o in t]), np.array([o.mean() for o in s]))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        picks = [rng.integers(0, len(o), len(o)) for o in t]
        r_b = np.array([o[p].mean() for o, p in zip(t, picks, strict=True)])
        s_b = np.array([o[p].mean() for o, p in zip(s, picks, strict=True)])
        draws.append(_statistics(r_b, s_b))
    tail = (1 - CONFIDENCE) / 2 * 100
    with warnings.catch_warnings():  # a statistic undefined in every resample stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(np.array(draws), [tail, 100 - tail], axis=0)
    intervals = [
        Interval(float(p), float(lo), float(hi)) for p, lo, hi in zip(point, low, high, strict=True)
    ]
    return Ranking(*intervals)
