"""Tiny model configs and batches shared by the model tests and the golden loss curve."""

from __future__ import annotations

import torch

from hma.model import Batch, ModelConfig, model_config
from hma.model.conditioning import SPECS

WIDTHS = {"arm": 6, "pusher": 4}  # two embodiments with different flat action widths
STATES = {"arm": 3}  # proprioceptive state for one of them (the pusher has none)
CONDITIONINGS = list(SPECS)


def tiny(**overrides) -> ModelConfig:
    return model_config("tiny", datasets=dict(WIDTHS), **overrides)


def random_batch(
    config: ModelConfig, rows: int = 3, frames: int | None = None, seed: int = 0
) -> Batch:
    """Random vq tokens and normalised actions; rows alternate datasets, zero-padded actions."""
    g = torch.Generator().manual_seed(seed)
    t = frames or config.window
    h, w = config.grid
    names = [list(config.datasets)[i % len(config.datasets)] for i in range(rows)]
    width = config.action_width
    actions = torch.randn(rows, t, width, generator=g)
    for i, name in enumerate(names):
        actions[i, :, config.datasets[name] :] = 0
    if config.token_kind == "vq":
        tokens = torch.randint(0, config.vocab_size, (rows, t, h, w), generator=g)
    else:
        tokens = torch.randn(rows, t, config.latent_channels, h, w, generator=g)
    state = None
    if config.states:
        state = torch.randn(rows, t, config.state_width, generator=g)
        for i, name in enumerate(names):
            state[i, :, config.states.get(name, 0) :] = 0
    return Batch(tokens, actions, names, state)
