"""A policy's success rate in a ground-truth simulator, with its binomial standard error.

Episode i starts from `env.reset(seed + i)`, so policies are compared on the same starts (and
the learned simulator starts from the same first frames). An episode succeeds as the recorded
expert episodes do: the env reports success on its last step (our envs end an episode once the
task has held solved for a few steps, or at the time limit).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from hma.envs.base import Env
from hma.envs.rollout import rollout
from hma.policy.agent import Agent


@dataclass
class SuccessRate:
    policy: str
    outcomes: list[bool] = field(default_factory=list)  # per episode, seed order

    @property
    def episodes(self) -> int:
        return len(self.outcomes)

    @property
    def rate(self) -> float:
        return float(np.mean(self.outcomes)) if self.outcomes else 0.0

    @property
    def se(self) -> float:
        """Binomial standard error sqrt(p (1 - p) / n)."""
        n = max(self.episodes, 1)
        return math.sqrt(self.rate * (1 - self.rate) / n)

    def line(self) -> str:
        successes = sum(self.outcomes)
        return (
            f"{self.policy}: success {self.rate:.0%} ± {self.se:.0%} "
            f"({successes}/{self.episodes} episodes)"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate, "se": self.se}


def evaluate_in_env(
    agent: Agent, env: Env, episodes: int, seed: int = 0, max_steps: int | None = None
) -> SuccessRate:
    """Run `agent` closed-loop in `env` for `episodes` episodes from seeds seed, seed + 1, ..."""
    agent.check_env(env)
    result = SuccessRate(agent.name)
    for i in range(episodes):
        episode = rollout(env, seed + i, max_steps=max_steps, make_policy=agent.stepper)
        result.outcomes.append(bool(episode.success))
    return result
