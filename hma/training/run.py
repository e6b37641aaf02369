"""A training run on Ray Train, the skeleton every trainer shares (tokenizer, world model, policy).

    driver:  fit(config, loop, ...) ──TorchTrainer(scaling_config, run_config)──▶ workers
             ProgressPrinter ◀── queue ── rank 0 (console + TensorBoard, uploaded if remote)
    worker:  WorkerContext.start(config, loop_config) -> rank, world, device, progress sink
             ... the trainer's own steps ...
             report(metrics, rank, write)  -> ray.train.report, rank 0 with a checkpoint dir

A run lives in `storage_path/name` (local or s3://): Ray Train's `checkpoint_*` directories, and
TensorBoard events under `tensorboard/`. Re-running a config with the same name and storage_path
resumes the run from its newest checkpoint. A run stops at `max_steps` or after `max_minutes` of
training-loop time, whichever comes first (`RunConfig.spent`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from hma import storage
from hma.config import StorageURL, StrictModel
from hma.training.progress import Console, ProgressPrinter, ProgressSink
from hma.training.rendezvous import torch_config

SECONDS_PER_MINUTE = 60.0


class RunConfig(StrictModel):
    """What every training run has: where it lives, its budget, its workers. Trainers extend it
    with their model, data and optimiser sections."""

    name: str = Field(description="run name: its checkpoints live in storage_path/name")
    storage_path: StorageURL = Field(description="local directory or s3:// prefix for the run")
    max_steps: int = Field(default=1000, gt=0)
    max_minutes: float | None = Field(
        default=None, gt=0, description="stop after this much training-loop time"
    )
    log_every: int = Field(default=10, gt=0, description="steps between progress records")
    checkpoint_every: int = Field(default=500, gt=0, description="steps between checkpoints")
    keep_checkpoints: int = Field(default=2, gt=0)
    num_workers: int = Field(default=1, gt=0)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    torch_threads: int | None = Field(default=None, gt=0, description="default: Ray's setting")
    max_failures: int = Field(default=0, ge=-1, description="worker-group restarts (-1: always)")
    seed: int = 0
    tensorboard_dir: StorageURL | None = Field(
        default=None, description="default: storage_path/name/tensorboard (uploaded if remote)"
    )

    @property
    def run_url(self) -> str:
        return storage.join(self.storage_path, self.name)

    @property
    def max_seconds(self) -> float | None:
        return self.max_minutes * SECONDS_PER_MINUTE if self.max_minutes else None

    def budget_used(self, step: int, seconds: float) -> float:
        """The share of the budget spent: the larger of steps / max_steps and time / max_minutes."""
        by_time = seconds / self.max_seconds if self.max_seconds else 0.0
        return max(step / self.max_steps, by_time)

    def spent(self, step: int, seconds: float) -> bool:
        return self.budget_used(step, seconds) >= 1.0


@dataclass(kw_only=True)
class TrainState:
    """What every trainer's state carries between steps and across resumes."""

    optimizer: torch.optim.Optimizer
    step: int = 0
    seconds: float = 0.0  # training-loop time so far, across resumes


# ---------------------------------------------------------------------------------------------
# Driver side


@dataclass
class FitResult:
    result: Any  # ray.train.Result
    records: list[dict[str, Any]]  # every progress record rank 0 sent
    tensorboard_dir: str


def run_storage(storage_path: str) -> tuple[str, Any]:
    """(path, pyarrow filesystem or None) for RunConfig; s3:// goes through our fsspec settings."""
    if not storage.is_remote(storage_path):
        return os.path.abspath(storage_path), None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = storage.filesystem(storage_path)
    return path, PyFileSystem(FSSpecHandler(fs))


def scaling_config(config: RunConfig):  # -> ray.train.ScalingConfig
    import ray.train

    return ray.train.ScalingConfig(
        num_workers=config.num_workers,
        use_gpu=config.use_gpu,
        # On a 2-CPU machine a full CPU per worker leaves none for Ray Data's reads (NOTES.md).
        resources_per_worker={"CPU": config.cpus_per_worker},
    )


def run_config(config: RunConfig):  # -> ray.train.RunConfig
    """Ray Train's run config: the run's directory, checkpoints kept, worker-group restarts."""
    import ray.train

    path, filesystem = run_storage(config.storage_path)
    return ray.train.RunConfig(
        name=config.name,
        storage_path=path,
        storage_filesystem=filesystem,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
        failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
    )


def tensorboard_logdir(config: RunConfig) -> str:
    """Where the driver writes TensorBoard events during the run: its tensorboard_dir, else the
    run's tensorboard/, which for an s3:// run is staged in a local temporary directory
    (publish_tensorboard uploads it)."""
    if config.tensorboard_dir:
        return config.tensorboard_dir
    if storage.is_remote(config.storage_path):
        return tempfile.mkdtemp(prefix="hma-tb-")
    return storage.join(config.run_url, "tensorboard")


def publish_tensorboard(config: RunConfig, logdir: str) -> str:
    """After the run: upload a staged `logdir` to the run's tensorboard/; the events' final URL."""
    if config.tensorboard_dir or not storage.is_remote(config.storage_path):
        return logdir
    target = storage.join(config.run_url, "tensorboard")
    fs, path = storage.filesystem(target)
    fs.put(logdir + "/", path, recursive=True)
    shutil.rmtree(logdir, ignore_errors=True)  # the staging copy made by tensorboard_logdir
    return target


def fit(
    config: RunConfig,
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    console: Console,
    echo: bool = True,
    **trainer_options: Any,
) -> FitResult:
    """Run `loop` on the workers of a TorchTrainer for `config` (Ray must be connected).
    Workers find `config` (as JSON) under loop_config["config"] and the progress channel under
    loop_config["progress"]; `trainer_options` (datasets=...) go to the TorchTrainer."""
    from ray.train.torch import TorchTrainer

    logdir = tensorboard_logdir(config)
    with ProgressPrinter(logdir, config.max_steps, console, echo) as progress:
        result = TorchTrainer(
            loop,
            train_loop_config={
                "config": config.model_dump(mode="json"),
                **loop_config,
                "progress": progress.channel,
            },
            scaling_config=scaling_config(config),
            run_config=run_config(config),
            torch_config=torch_config(),
            **trainer_options,
        ).fit()
    return FitResult(result, progress.records, publish_tensorboard(config, logdir))


# ---------------------------------------------------------------------------------------------
# Worker side


@dataclass
class WorkerContext:
    rank: int
    world: int
    device: torch.device
    sink: ProgressSink

    @classmethod
    def start(cls, config: RunConfig, loop_config: dict[str, Any]) -> WorkerContext:
        """This worker's rank, world size and device; torch threads as configured."""
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        rank = context.get_world_rank()
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        sink = ProgressSink(loop_config.get("progress"), rank)
        return cls(rank, context.get_world_size(), ray.train.torch.get_device(), sink)


class Clock:
    """Training-loop seconds across resumes, and a rate per log interval."""

    def __init__(self, seconds_before: float):
        self.start = time.perf_counter() - seconds_before
        self.tick = time.perf_counter()
        self.count = 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def rate(self) -> float:
        """Items counted (`count`) per second since the last call, then start counting again."""
        now = time.perf_counter()
        rate = self.count / max(now - self.tick, 1e-9)
        self.tick, self.count = now, 0.0
        return rate


def report(metrics: dict[str, Any], rank: int, write: Callable[[str], dict[str, Any]]) -> None:
    """ray.train.report on every rank; rank 0 attaches a checkpoint directory that `write(dir)`
    fills (its returned metrics join `metrics`). Collectives belong before this call."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="hma-checkpoint-") as tmp:
        metrics = {**metrics, **write(tmp)}
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
