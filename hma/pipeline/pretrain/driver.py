"""`hma pretrain`: Ray Train pretraining (and fine-tuning) of HMA on mixed token stores.

    token stores ──(driver: check tokenizer, datasets, resolve model)──▶ TorchTrainer(W workers)
        each worker: own shard of the mixed sampling stream ─▶ DDP | FSDP2 steps (loop.py)
    driver: console (progress bar, validation table) + TensorBoard ◀── progress queue (rank 0)
    storage_path/name/checkpoint_*/ (hma.model.checkpoint), validation/step_*/<dataset>.png

Re-running a config with the same name and storage_path resumes its newest checkpoint exactly;
FailureConfig restarts a failed worker group from the newest checkpoint. `init_from` starts a new
run from a pretrained checkpoint (fine-tuning): datasets the checkpoint lacks get a new stem and
head, and `freeze_trunk` trains only those. Every checkpoint and init is checked against the
stores' tokenizer fingerprint before any worker starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hma.config import load_config
from hma.errors import ConfigError
from hma.model import checkpoint as ckpt
from hma.model.config import PRESETS, ModelConfig
from hma.pipeline.pretrain.config import PretrainConfig, resolve_model_config
from hma.pipeline.pretrain.mixing import MixedSource
from hma.training.progress import Console
from hma.training.run import fit

CONSOLE = Console(
    keys=("loss", "video_loss", "action_loss", "lr", "grad_norm", "tokens_per_s"), section="train"
)


def load_pretrain_config(url: str) -> PretrainConfig:
    return load_config(PretrainConfig, url)


@dataclass
class Plan:
    """What the driver decided before any worker starts."""

    model: ModelConfig
    meta: dict[str, Any]  # tokenizer + dataset records every checkpoint carries
    resume_from: str | None  # newest checkpoint of this run, if any
    init_from: str | None  # resolved fine-tuning checkpoint
    new_datasets: list[str] = field(default_factory=list)


def plan(config: PretrainConfig) -> Plan:
    """Open the stores, pick the model, and refuse checkpoints that do not fit the data."""
    init = ckpt.resolve(config.init_from) if config.init_from else None
    base = ckpt.read_config(ckpt.model_url(init)) if init else None
    window = base.window if base else _preset_window(config)
    source = MixedSource(config.data, window, "train")
    info, widths = source.tokenizer, source.widths
    states = source.state_widths if config.state else {}
    store_url = source.stores[0].url
    new: list[str] = []
    if init and base:
        ckpt.check_tokenizer(ckpt.read_meta(init), init, info.fingerprint, store_url)
        for name, width in widths.items():
            if name in base.datasets and base.datasets[name] != width:
                raise ConfigError(
                    f"dataset {name!r}: the checkpoint {init} has action width "
                    f"{base.datasets[name]}, the store {source.stores[source.owner[name]].url} has {width}"
                )
            if name in base.states and base.states[name] != states.get(name, 0):
                raise ConfigError(
                    f"dataset {name!r}: the checkpoint {init} models state of width "
                    f"{base.states[name]}, the store {source.stores[source.owner[name]].url} "
                    f"has {states.get(name, 0)} (set state: false to fine-tune without state "
                    "only if the checkpoint has none)"
                )
        new = sorted(set(widths) - set(base.datasets))
        added = {n: w for n, w in states.items() if n in new}  # state stems of new datasets
        model = ModelConfig(
            **{
                **base.model_dump(),
                "datasets": {**base.datasets, **widths},
                "states": {**base.states, **added},
            }
        )
    else:
        model = resolve_model_config(config, info, widths, states)
    resume = ckpt.latest(config.run_url)
    if resume:
        ckpt.check_tokenizer(ckpt.read_meta(resume), resume, info.fingerprint, store_url)
        saved = ckpt.read_config(ckpt.model_url(resume))
        if saved != model:
            raise ConfigError(
                f"{resume}: run {config.name!r} was started with another model or dataset set "
                f"(datasets {sorted(saved.datasets)} vs {sorted(model.datasets)}); use a new "
                "name, or `init_from` this run to fine-tune on new datasets"
            )
    weights = source.weights()
    stats, specs = source.stats, source.specs
    datasets = {
        name: {
            "store": source.stores[source.owner[name]].url,
            "registry": specs[name].model_dump(mode="json") if specs[name] else None,
            "stride": source.view(name).stride,
            "action_dim": source.view(name).action_dim,
            "action_stats": stats[name].to_dict(exact=True) if stats[name] else None,
            "state_dim": model.states.get(name, 0),
            "state_stats": _state_stats(source.view(name), model.states.get(name, 0)),
            "train_windows": source.counts[name],
            "weight": weights[name],
        }
        for name in source.datasets
    }
    meta = {"tokenizer": info.to_dict(), "datasets": datasets, "init_from": init}
    return Plan(model, meta, resume, init, new)


def _state_stats(view: Any, width: int) -> dict[str, Any] | None:
    """The train-split state statistics the model's state is normalised with (None: no state)."""
    if not width or view.state_stats is None:
        return None
    return view.state_stats.to_dict(exact=True)


def _preset_window(config: PretrainConfig) -> int:
    if "window" in config.model:
        return int(config.model["window"])
    preset = PRESETS[config.model.get("preset", "tiny")]()
    return int(preset.get("window", ModelConfig.model_fields["window"].default))


@dataclass
class PretrainResult:
    checkpoint: str  # URL of the newest checkpoint
    metrics: dict[str, Any]
    records: list[dict[str, Any]]  # every progress record rank 0 sent (per-step losses ...)
    validation: list[str]  # the last validation table
    seconds: float
    tensorboard_dir: str


def run_pretrain(
    config: PretrainConfig, address: str | None = None, echo: bool = True
) -> PretrainResult:
    """Pretrain (or resume, or fine-tune) as `config` says; joins or starts a Ray cluster."""
    from hma.pipeline import cluster

    start = time.perf_counter()
    decided = plan(config)  # fails fast, before Ray starts, on a config the data contradicts
    cluster.connect(address)
    if echo:
        for line in describe(config, decided):
            print(line, flush=True)
    loop_config = {"model": decided.model.model_dump(mode="json"), "meta": decided.meta}
    run = fit(config, _train_loop, loop_config, CONSOLE, echo)
    newest = ckpt.latest(config.run_url)
    if newest is None:
        raise RuntimeError(f"{config.run_url}: training finished without a checkpoint")
    tables = [r["message"] for r in run.records if r.get("validation")]
    return PretrainResult(
        checkpoint=newest,
        metrics=dict(run.result.metrics or {}),
        records=run.records,
        validation=tables[-1].splitlines() if tables else [],
        seconds=time.perf_counter() - start,
        tensorboard_dir=run.tensorboard_dir,
    )


def _train_loop(loop_config: dict[str, Any]) -> None:
    from hma.pipeline.pretrain.loop import train_loop_per_worker

    train_loop_per_worker(loop_config)


def describe(config: PretrainConfig, decided: Plan) -> list[str]:
    m = decided.model
    lines = [
        f"pretrain {config.name!r}: {m.token_kind} tokens {m.grid[0]}x{m.grid[1]}, window "
        f"{m.window}, d {m.d_model} x {m.layers} layers, {config.num_workers} worker(s), "
        f"{config.parallel}",
        f"{'dataset':<22}{'windows':>9}{'weight':>8}  stride x A",
    ]
    for name, d in decided.meta["datasets"].items():
        lines.append(
            f"{name:<22}{d['train_windows']:>9}{d['weight']:>8.3f}  {d['stride']} x {d['action_dim']}"
        )
    if decided.resume_from:
        lines.append(f"resuming from {decided.resume_from}")
    if decided.init_from:
        lines.append(f"fine-tuning from {decided.init_from}; new datasets: {decided.new_datasets}")
    return lines
