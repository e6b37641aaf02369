"""A trained policy ready to act: raw frames (and state) in, raw action chunks out.

    B observations, H x W any frame size, S state dim, K chunk, A action dim

    act(frames uint8 [B,H,W,3], state [B,S] | None) -> raw actions float32 [B,K,A]

Frames are area-resized to the policy's image size (hma.vision), whatever produced them: a
ground-truth env or a world model's decoder, so both simulators feed the policy alike.
`stepper()` turns it into the one-action-per-call policy the envs' rollout takes: it decides a
chunk from the current observation and plays it out, K raw steps, before deciding again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hma.checkpoint import RUN_CHECKPOINT
from hma.envs.base import Env, Obs, Policy
from hma.errors import HmaError
from hma.policy import checkpoint
from hma.policy.config import PolicyConfig
from hma.policy.data import StateStats
from hma.policy.model import PolicyNet
from hma.stats import ActionStats
from hma.vision import as_inputs


class PolicyMismatchError(HmaError, ValueError):
    """A policy run where its image, action space or inputs do not fit."""


class Agent:
    def __init__(self, net: PolicyNet, record: dict[str, Any], url: str, device: str = "cpu"):
        self.net = net.to(device).eval()
        self.record = record
        self.url = url
        self.device = torch.device(device)
        self.config = PolicyConfig.model_validate(record["config"])
        self.actions = ActionStats.from_dict(record["action_stats"])
        self.states = StateStats.from_dict(record["state_stats"])

    @classmethod
    def load(cls, spec: str, device: str = "cpu") -> Agent:
        """Load DIR, DIR@STEP (a run's checkpoint of that step) or a checkpoint directory."""
        url = checkpoint.resolve(spec)
        record, tensors = checkpoint.load(url)
        config = PolicyConfig.model_validate(record["config"])
        net = PolicyNet(config, record["action_dim"], record["chunk"], record["state_dim"])
        net.load_state_dict(tensors)
        return cls(net, record, url, device)

    @property
    def dataset(self) -> str:
        return str(self.record["dataset"])

    @property
    def state_dim(self) -> int:
        return int(self.record["state_dim"])

    @property
    def chunk(self) -> int:
        return int(self.record["chunk"])

    @property
    def action_dim(self) -> int:
        return int(self.record["action_dim"])

    @property
    def step(self) -> int:
        return int(self.record.get("step", 0))

    @property
    def name(self) -> str:
        """RUN@STEP for a run's checkpoint (what `Agent.load` takes back), else DIR@STEP."""
        url = self.url.rstrip("/")
        parent, _, base = url.rpartition("/")
        run = parent if RUN_CHECKPOINT.fullmatch(base) else url
        return f"{run}@{self.step}"

    @torch.no_grad()
    def act(self, frames: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
        """uint8 frames [B,H,W,3] (+ state [B,S]) -> raw action chunks float32 [B,K,A]."""
        x = as_inputs(frames, self.config.image_size).to(self.device)  # [B,3,R,R]
        s = None
        if self.config.use_state:
            if state is None:
                raise PolicyMismatchError(
                    f"policy {self.url} reads proprioception and none was given (a learned "
                    "simulator that predicts no state cannot run it)"
                )
            s = torch.from_numpy(self.states.normalise(np.asarray(state))).to(self.device)
        normalised = self.net(x, s).cpu().numpy()  # [B,K,A]
        return self.actions.denormalise(normalised)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the frames the policy learned from."""
        h, w = self.record["frame_size"]
        return int(h), int(w)

    def check(
        self,
        dataset: str,
        action_dim: int,
        frame_size: tuple[int, int],
        where: str,
        state_dim: int | None = None,
    ) -> None:
        """Refuse a simulator whose dataset, action space, frames or state (`state_dim` values,
        0: none; None: not checked) differ from the policy's."""
        if self.config.use_state and state_dim is not None and state_dim != self.state_dim:
            raise PolicyMismatchError(
                f"policy {self.url} reads {self.state_dim} proprioception values; {where} "
                f"provides {state_dim or 'none (a world model trained without state)'}"
            )
        if dataset != self.dataset or action_dim != self.action_dim:
            raise PolicyMismatchError(
                f"policy {self.url} was trained on {self.dataset!r} ({self.action_dim}-D "
                f"actions); {where} runs {dataset!r} with {action_dim}-D actions"
            )
        if tuple(frame_size) != self.frame_size:
            h, w = self.frame_size
            raise PolicyMismatchError(
                f"policy {self.url} was trained on {h}x{w} frames; {where} renders "
                f"{frame_size[0]}x{frame_size[1]}"
            )

    def check_env(self, env: Env) -> None:
        self.check(env.dataset, env.action_space.dim, (env.size, env.size), "the env")

    def stepper(self, env: Env) -> Policy:
        """One action per call, for hma.envs.rollout: decide a chunk, play it out, decide again."""
        self.check_env(env)
        queue: list[np.ndarray] = []

        def act(obs: Obs) -> np.ndarray:
            if not queue:
                state = obs["state"][None] if self.config.use_state else None
                queue.extend(self.act(obs["image"][None], state)[0])
            return env.action_space.clip(queue.pop(0))

        return act
