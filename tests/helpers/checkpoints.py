"""Pretraining checkpoints with untrained weights, for tests and benchmarks whose subject (speed,
plumbing, file formats) does not depend on what the weights learned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hma import storage
from hma.episodes import load_registry
from hma.model import HMA, model_config
from hma.model.checkpoint import save_run
from hma.pipeline.store import TokenizerInfo
from hma.stats import ActionStats
from hma.tokenize.checkpoint import build_tokenizer, save_tokenizer
from hma.tokenize.presets import fsq


def save_untrained(
    url: str,
    stats: dict[str, ActionStats],
    frame: int,
    preset: str = "tiny",
    store: str = "",
    train_windows: int = 0,
    prepare: Callable[[Any, Any], None] | None = None,
    state_stats: dict[str, ActionStats] | None = None,
    **model: Any,
) -> str:
    """Write a checkpoint with untrained weights to `url` and return `url` (for benchmarks and
    tests: speed and plumbing do not depend on the weights). A tiny FSQ tokenizer under
    `url`/tokenizer, an HMA of `preset` on `frame` px frames for the datasets of `stats` (action
    width stride x action_dim from the registry), and a pretrain.json shaped like a pretraining
    run's, with `stats` as each dataset's action statistics and equal mixing weights.
    `prepare(model, tokenizer)` may change the model before it is saved; `model` overrides the
    preset's fields; `state_stats` gives datasets proprioceptive state (width and statistics).
    Seed torch first for reproducible weights."""
    state_stats = state_stats or {}
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
        states={name: int(st.mean.shape[0]) for name, st in state_stats.items()},
        **model,
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
            "state_dim": int(state_stats[name].mean.shape[0]) if name in state_stats else 0,
            "state_stats": state_stats[name].to_dict(exact=True) if name in state_stats else None,
            "train_windows": train_windows,
            "weight": 1.0 / len(specs),
        }
        for name, spec in specs.items()
    }
    meta = {"tokenizer": info.to_dict(), "datasets": datasets, "init_from": None, "step": 0}
    save_run(url, model.state_dict(), config.model_dump(mode="json"), {}, meta)
    return url
