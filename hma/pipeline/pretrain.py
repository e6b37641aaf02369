"""`hma pretrain`: Ray Train pretraining (and fine-tuning) of HMA on mixed token stores.

    token stores ──(driver: check tokenizer, datasets, resolve model)──▶ TorchTrainer(W workers)
        each worker: own shard of the mixed sampling stream ─▶ DDP | FSDP2 steps (pretrain_loop.py)
    driver: console (progress bar, validation table) + TensorBoard ◀── progress queue (rank 0)
    storage_path/name/checkpoint_*/ (pretrain_checkpoint.py), validation/step_*/<dataset>.png

Re-running a config with the same name and storage_path resumes its newest checkpoint exactly;
FailureConfig restarts a failed worker group from the newest checkpoint. `init_from` starts a new
run from a pretrained checkpoint (fine-tuning): datasets the checkpoint lacks get a new stem and
head, and `freeze_trunk` trains only those. Every checkpoint and init is checked against the
stores' tokenizer fingerprint before any worker starts.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

from hma import storage
from hma.config import load_config
from hma.errors import ConfigError
from hma.model.checkpoint import read_config
from hma.model.config import PRESETS, ModelConfig
from hma.pipeline import pretrain_checkpoint as ckpt
from hma.pipeline.mixing import MixedSource
from hma.pipeline.pretrain_config import PretrainConfig, resolve_model_config
from hma.tokenize.progress import ProgressPrinter
from hma.tokenize.train import (
    publish_tensorboard,
    run_config,
    scaling_config,
    tensorboard_logdir,
)

BAR_WIDTH = 20
CONSOLE_KEYS = ("loss", "video_loss", "action_loss", "lr", "grad_norm", "tokens_per_s")


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
    base = read_config(ckpt.model_url(init)) if init else None
    window = base.window if base else _preset_window(config)
    source = MixedSource(config.data, window, "train")
    info, widths = source.tokenizer, source.widths
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
        new = sorted(set(widths) - set(base.datasets))
        model = ModelConfig(**{**base.model_dump(), "datasets": {**base.datasets, **widths}})
    else:
        model = resolve_model_config(config, info, widths)
    run_url = storage.join(config.storage_path, config.name)
    resume = ckpt.latest(run_url)
    if resume:
        ckpt.check_tokenizer(ckpt.read_meta(resume), resume, info.fingerprint, store_url)
        saved = read_config(ckpt.model_url(resume))
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
            "train_windows": source.counts[name],
            "weight": weights[name],
        }
        for name in source.datasets
    }
    meta = {"tokenizer": info.to_dict(), "datasets": datasets, "init_from": init}
    return Plan(model, meta, resume, init, new)


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


class PretrainProgress(ProgressPrinter):
    """The tokenizer's progress printer with pretraining's console lines and TensorBoard tags."""

    def _handle(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.echo and ("message" in record or "loss" in record):
            print(format_record(record, self.max_steps), flush=True)
        if "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    tag = key if "/" in key else f"train/{key}"
                    self.writer.add_scalar(tag, value, record["step"])
            self.writer.flush()


def format_record(record: dict[str, Any], max_steps: int) -> str:
    if "message" in record:
        return str(record["message"])
    step = int(record["step"])
    filled = min(BAR_WIDTH, BAR_WIDTH * step // max(max_steps, 1))
    parts = [f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] step {step:>6}/{max_steps}"]
    for key in CONSOLE_KEYS:
        if key in record:
            parts.append(f"{key} {record[key]:.4g}")
    minutes, seconds = divmod(int(record.get("seconds", 0)), 60)
    parts.append(f"{minutes}:{seconds:02d}")
    return "  ".join(parts)


def run_pretrain(
    config: PretrainConfig, address: str | None = None, echo: bool = True
) -> PretrainResult:
    """Pretrain (or resume, or fine-tune) as `config` says; joins or starts a Ray cluster."""
    from ray.train.torch import TorchTrainer

    from hma.pipeline import cluster

    start = time.perf_counter()
    decided = plan(config)  # fails fast, before Ray starts, on a config the data contradicts
    cluster.connect(address)
    if echo:
        for line in describe(config, decided):
            print(line, flush=True)
    run_url = storage.join(config.storage_path, config.name)
    logdir = tensorboard_logdir(config, run_url)
    with PretrainProgress(logdir, config.max_steps, echo) as progress:
        fit = TorchTrainer(
            _train_loop,
            train_loop_config={
                "config": config.model_dump(mode="json"),
                "model": decided.model.model_dump(mode="json"),
                "meta": decided.meta,
                "progress": progress.channel,
            },
            scaling_config=scaling_config(config),
            run_config=run_config(config, config.max_failures),
        ).fit()
    logdir = publish_tensorboard(config, run_url, logdir)
    newest = ckpt.latest(run_url)
    if newest is None:
        raise RuntimeError(f"{run_url}: training finished without a checkpoint")
    tables = [r["message"] for r in progress.records if r.get("validation")]
    return PretrainResult(
        checkpoint=newest,
        metrics=dict(fit.metrics or {}),
        records=progress.records,
        validation=tables[-1].splitlines() if tables else [],
        seconds=time.perf_counter() - start,
        tensorboard_dir=logdir,
    )


def _train_loop(loop_config: dict[str, Any]) -> None:
    from hma.pipeline.pretrain_loop import train_loop_per_worker

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


# ---------------------------------------------------------------------------------------------
# Command line: `hma pretrain --config C [--address A]` (hma/cli.py calls `command`).


def command(args: argparse.Namespace) -> int:
    config = load_pretrain_config(args.config)
    result = run_pretrain(config, args.address, echo=not args.quiet)
    print(f"pretrained {config.name!r} in {result.seconds:.0f}s")
    print("\n".join(result.validation))
    print(f"checkpoint: {result.checkpoint}")
    print(f"tensorboard: {result.tensorboard_dir}")
    return 0
