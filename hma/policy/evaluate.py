"""How good a policy is: its success rate in a ground-truth simulator (with its binomial standard
error), and its action error on held-out demonstrations (where no simulator judges success).

Episode i starts from `env.reset(seed + i)`, so policies are compared on the same starts (and
the learned simulator starts from the same first frames). An episode succeeds as the recorded
expert episodes do: the env reports success on its last step (our envs end an episode once the
task has held solved for a few steps, or at the time limit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from hma.envs.base import Env
from hma.envs.rollout import rollout
from hma.episodes import Episode
from hma.policy.agent import Agent
from hma.policy.data import chunks_of

ERROR_BATCH = 256  # observations per forward pass when scoring held-out episodes


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


@dataclass
class ActionError:
    policy: str
    mse: float  # mean squared error per action value, raw units
    se: float  # standard error of `mse` over episodes
    episodes: int
    samples: int

    def line(self) -> str:
        return (
            f"{self.policy}: held-out action MSE {self.mse:.4g} ± {self.se:.2g} "
            f"({self.samples} steps of {self.episodes} episodes)"
        )


def action_error(agent: Agent, episodes: Iterable[Episode]) -> ActionError:
    """The policy's chunk at every step of `episodes` against the actions the episode took from
    there (the last one repeated past the end, as in training), in raw units: the behaviour-
    cloning loss on held-out data, comparable across policies whatever data normalised them."""
    per_episode, samples = [], 0
    for ep in episodes:
        target = chunks_of(ep.actions.astype(np.float32), agent.chunk)  # [T,K,A]
        errors = []
        for start in range(0, len(ep), ERROR_BATCH):
            rows = slice(start, start + ERROR_BATCH)
            state = None if ep.state is None else ep.state[rows]
            errors.append((agent.act(ep.frames[rows], state) - target[rows]) ** 2)
        per_episode.append(float(np.concatenate(errors).mean()))
        samples += len(ep)
    if not per_episode:
        raise ValueError("action_error needs at least one episode")
    n = len(per_episode)
    se = float(np.std(per_episode, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return ActionError(agent.name, float(np.mean(per_episode)), se, n, samples)
