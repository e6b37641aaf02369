"""One gym-like interface for every ground-truth simulator, and the expert-rollout that turns an
env into Episodes.

    obs = env.reset(seed)                         dict: "image" uint8 [H,W,3], "state" float32 [S]
    obs, reward, done, info = env.step(action)    info["success"]: bool
    frame = env.render()                          uint8 [H,W,3] at env.size
    policy = env.expert(noise)                    policy(obs) -> action, a scripted expert

Every env is a registry dataset: `env.dataset` names its entry (action dim, control rate).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Obs = dict[str, np.ndarray]
Policy = Callable[[Obs], np.ndarray]


@dataclass(frozen=True)
class ActionSpace:
    low: np.ndarray  # float32 [A]
    high: np.ndarray  # float32 [A]

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])

    def clip(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, self.low, self.high).astype(np.float32)

    def perturb(self, action: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
        """`action` plus Gaussian noise of std `noise` x half the range per dimension, clipped:
        the one meaning of an expert's `noise` across envs."""
        if noise > 0:
            action = action + rng.normal(0.0, noise * (self.high - self.low) / 2)
        return self.clip(action)


class Env(ABC):
    """A simulator with a scripted expert. Subclasses set the class attributes and implement the
    abstract methods; `size` is the rendered frame's height and width in pixels."""

    dataset: str  # registry name
    hz: float  # control rate
    max_steps: int  # episode time limit at the control rate
    action_space: ActionSpace

    def __init__(self, size: int = 64):
        self.size = size

    @abstractmethod
    def reset(self, seed: int) -> Obs: ...

    @abstractmethod
    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, dict[str, Any]]: ...

    @abstractmethod
    def render(self) -> np.ndarray: ...

    @abstractmethod
    def expert(self, noise: float = 0.0) -> Policy:
        """A scripted policy for the episode just reset; `noise` is Gaussian action noise as
        `ActionSpace.perturb` defines it (std = noise x half the action range)."""

    def instruction(self) -> str:
        """The episode's language instruction, where the task has one."""
        return ""

    def episode_meta(self) -> dict[str, Any]:
        """JSON-able facts a dataset writer needs (e.g. robomimic env_args)."""
        return {}

    def extras(self) -> dict[str, np.ndarray]:
        """Per-step values to record beside the frame (e.g. simulator state for replay)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most envs hold nothing to release
        pass
