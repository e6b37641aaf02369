"""Pretraining checkpoints: a self-describing, exactly resumable training state (local or s3://).

    <dir>/model/model.safetensors, model/config.json   the HMA model (hma.model.checkpoint format:
                                                       `load_model(<dir>/model)` rebuilds it)
    <dir>/trainer_state.safetensors + .json            optimizer moments, scheduler, per-rank RNG
                                                       states (torch, CUDA, numpy, python)
    <dir>/pretrain.json                                written last: format, step, seconds, sampler
                                                       position, tokenizer (kind, fingerprint,
                                                       config, url, grid), per-dataset registry
                                                       entry, stride, action_dim, action stats,
                                                       mixing weight, and the run's config

A directory without pretrain.json is an unfinished write, never a checkpoint. Loading against a
token store whose tokenizer fingerprint differs is refused, naming both fingerprints: the model's
codes would mean nothing for another tokenizer's tokens.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hma import storage
from hma.errors import HmaError
from hma.stats import ActionStats
from hma.tokenize.checkpoint import load_state, newest_run_checkpoint, save_state

FORMAT = "hma-pretrain"
VERSION = 1
META_FILE = "pretrain.json"
MODEL_DIR = "model"


class PretrainCheckpointError(HmaError, ValueError):
    """A pretraining checkpoint is missing, damaged, or does not fit the data it is used with."""


def model_url(url: str) -> str:
    return storage.join(url, MODEL_DIR)


def save(
    url: str,
    model_state: dict[str, torch.Tensor],
    model_config: dict[str, Any],
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    """Write a checkpoint; `meta` (JSON) goes last, into pretrain.json."""
    from hma.model.checkpoint import save_model_state

    save_model_state(model_state, model_config, model_url(url))
    save_state(url, trainer_state)
    with storage.open_file(storage.join(url, META_FILE), "w") as f:
        json.dump({"format": FORMAT, "version": VERSION, **meta}, f, indent=2, sort_keys=True)


def save_untrained(
    url: str,
    stats: dict[str, ActionStats],
    frame: int,
    preset: str = "tiny",
    store: str = "",
    train_windows: int = 0,
    prepare: Callable[[Any, Any], None] | None = None,
) -> str:
    """Write a checkpoint with untrained weights to `url` and return `url` (for benchmarks and
    tests: speed and plumbing do not depend on the weights). A tiny FSQ tokenizer under
    `url`/tokenizer, an HMA of `preset` on `frame` px frames for the datasets of `stats` (action
    width stride x action_dim from the registry), and a pretrain.json shaped like a pretraining
    run's, with `stats` as each dataset's action statistics and equal mixing weights.
    `prepare(model, tokenizer)` may change the model before it is saved. Seed torch first for
    reproducible weights."""
    from hma.episodes import load_registry
    from hma.model import HMA, model_config
    from hma.pipeline.store_layout import TokenizerInfo
    from hma.tokenize.checkpoint import build_tokenizer, save_tokenizer
    from hma.tokenize.presets import fsq

    tokenizer = build_tokenizer(fsq("tiny"))
    tok_url = storage.join(url, "tokenizer")
    save_tokenizer(tokenizer, tok_url)
    info = TokenizerInfo.from_tokenizer(tokenizer, tok_url, (frame, frame))
    registry = load_registry()
    specs = {name: registry.get(name) for name in stats}
    config = model_config(
        preset,
        vocab_size=info.vocab_size,
        grid=tuple(info.grid),
        datasets={name: spec.stride * spec.action_dim for name, spec in specs.items()},
    )
    model = HMA(config)
    if prepare is not None:
        prepare(model, tokenizer)
    datasets = {
        name: {
            "store": store,
            "registry": spec.model_dump(mode="json"),
            "stride": spec.stride,
            "action_dim": spec.action_dim,
            "action_stats": stats[name].to_dict(exact=True),
            "train_windows": train_windows,
            "weight": 1.0 / len(specs),
        }
        for name, spec in specs.items()
    }
    meta = {"tokenizer": info.to_dict(), "datasets": datasets, "init_from": None, "step": 0}
    save(url, model.state_dict(), config.model_dump(mode="json"), {}, meta)
    return url


def read_meta(url: str) -> dict[str, Any]:
    """The checked meta.json of the pretraining checkpoint at `url`."""
    path = storage.join(url, META_FILE)
    return storage.read_versioned_json(
        path, FORMAT, VERSION, PretrainCheckpointError, "missing; not a pretraining checkpoint"
    )


def load_trainer_state(url: str) -> dict[str, Any]:
    return load_state(url)


def latest(url: str) -> str | None:
    """`url` itself if it is a checkpoint, else its newest complete `checkpoint_*` child (a Ray
    Train run directory), else None."""
    if storage.exists(storage.join(url, META_FILE)):
        return url
    return newest_run_checkpoint(url, META_FILE)


def resolve(url: str) -> str:
    found = latest(url)
    if found is None:
        raise PretrainCheckpointError(
            f"{url}: not a pretraining checkpoint (no {META_FILE} in it or its checkpoint_* dirs)"
        )
    return found


def check_tokenizer(meta: dict[str, Any], checkpoint: str, fingerprint: str, store: str) -> None:
    """Refuse a checkpoint trained on another tokenizer's tokens than the store's."""
    recorded = (meta.get("tokenizer") or {}).get("fingerprint")
    if recorded != fingerprint:
        raise PretrainCheckpointError(
            f"{checkpoint}: trained on tokens of tokenizer {recorded}, but the token store {store} "
            f"holds tokens of tokenizer {fingerprint}; re-tokenize the data with the checkpoint's "
            "tokenizer or train from scratch"
        )


# ---------------------------------------------------------------------------------------------
# RNG states: every generator a step may touch, as tensors and JSON values for save_state.


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8))
