"""Tiny token stores for the pretraining tests, written with `store.write_unit` directly (no Ray).

The stores record a real (untrained, tiny) FSQ tokenizer, so validation can decode tokens into
frames; the tokens themselves are random codes of its vocabulary. Tokens of frame f+1 copy
frame f's with the codes at a few positions set by the action, so there is something to learn.
"""

from __future__ import annotations

import os

import numpy as np

from hma.episodes import load_registry
from hma.pipeline import store
from hma.pipeline.store import EncodedEpisode, TokenizerInfo
from hma.tokenize.checkpoint import load_tokenizer

FRAME = 32  # pixels; the tiny FSQ tokenizer downsamples by 8 -> a 4 x 4 token grid
DATASETS = {"pusht": (1, 2), "robosuite_lift": (2, 7)}  # name -> (stride, action_dim)
STATE_DIMS = {"robosuite_lift": 3}  # datasets with proprioception, and its width


def tokenizer_info(tokenizer_url: str) -> TokenizerInfo:
    return TokenizerInfo.from_tokenizer(
        load_tokenizer(tokenizer_url), tokenizer_url, (FRAME, FRAME)
    )


def episode(
    rng: np.random.Generator,
    info: TokenizerInfo,
    dataset: str,
    index: int,
    frames: int,
    split: str,
) -> EncodedEpisode:
    stride, dim = DATASETS.get(dataset, (1, 2))
    vocab = int(info.vocab_size)
    h, w = info.grid
    actions = rng.normal(0, 1, (frames, stride, dim)).astype(np.float32)
    tokens = np.zeros((frames, h, w), np.int64)
    tokens[0] = rng.integers(0, vocab, (h, w))
    for f in range(1, frames):
        tokens[f] = tokens[f - 1]
        code = int((actions[f - 1, 0, 0] > 0) * (vocab // 2) + f % 7)
        tokens[f, f % h, :] = code
    state = None
    if dataset in STATE_DIMS:  # its own stream: the token and action draws stay as they were
        draws = np.random.default_rng([index, len(split)])
        state = draws.normal(0, 1, (frames, STATE_DIMS[dataset])).astype(np.float32)
    return EncodedEpisode(dataset, f"{dataset}-{index}", split, None, tokens, actions, state)


def write_store(
    url: str, info: TokenizerInfo, datasets: dict[str, int], frames: int = 10, seed: int = 0
) -> str:
    """A store at `url` with `datasets[name]` train episodes (+ 2 val) of `frames` kept frames."""
    rng = np.random.default_rng(seed)
    store.create_store(url, info)
    for name, count in datasets.items():
        eps = [episode(rng, info, name, i, frames, "train") for i in range(count)]
        eps += [episode(rng, info, name, count + i, frames, "val") for i in range(2)]
        store.write_unit(url, f"unit-{name}", eps, [], len(eps))
    store.finalize(url, load_registry())
    return url


def tiny_config(stores: list[str], storage_path: str, name: str, **overrides) -> dict:
    """A PretrainConfig dict: tiny model, 2 CPU workers at 0.5 CPU, a few steps."""
    config = {
        "name": name,
        "storage_path": storage_path,
        "data": {"stores": [{"url": s} for s in stores], "batch_size": 4, "prefetch": 2},
        "model": {"preset": "tiny", "window": 4},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "decay_steps": 6},
        "max_steps": 6,
        "log_every": 1,
        "checkpoint_every": 3,
        "validation": {"every": 3, "windows": 4, "rollouts": 2, "trials": 2},
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "torch_threads": 1,
        "max_failures": 2,
    }
    config.update(overrides)
    return config


def seed_env() -> None:
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
