"""Policy checkpoints with untrained weights, for tests whose subject is plumbing, not skill."""

from __future__ import annotations

import numpy as np
import torch

from hma.episodes import load_registry
from hma.policy import checkpoint
from hma.policy.config import policy_config
from hma.policy.data import StateStats
from hma.policy.model import PolicyNet
from hma.stats import ActionStats


def save_untrained_policy(
    url: str,
    dataset: str,
    frame: int,
    step: int = 0,
    seed: int = 0,
    chunk: int | None = None,
    preset: str = "tiny",
    state_dim: int = 0,
) -> str:
    """A policy of `preset` for `dataset` (actions in [-0.1, 0.1]) that learned from `frame` px
    frames, reading `state_dim` proprioception values (0: none; N(0, 1) statistics)."""
    spec = load_registry().get(dataset)
    config = policy_config(preset, use_state=bool(state_dim))
    chunk = chunk or spec.stride
    torch.manual_seed(seed)
    net = PolicyNet(config, spec.action_dim, chunk, state_dim)
    actions = np.random.default_rng(seed).uniform(-0.1, 0.1, (256, spec.action_dim))
    record = {
        "config": config.model_dump(mode="json"),
        "dataset": dataset,
        "stride": spec.stride,
        "action_dim": spec.action_dim,
        "chunk": chunk,
        "state_dim": state_dim,
        "action_stats": ActionStats.of(actions.astype(np.float32)).to_dict(exact=True),
        "state_stats": StateStats.of(
            np.random.default_rng(seed).normal(0, 1, (256, state_dim)).astype(np.float32)
        ).to_dict(),
        "frame_size": [frame, frame],
        "step": step,
    }
    checkpoint.save(url, net.state_dict(), record)
    return url
