"""`hma tokenizer train`: a Ray Train TorchTrainer fed by a Ray Data stream of frames.

    Episode sources ──frame_dataset──▶ Ray Data ──get_dataset_shard──▶ train_loop_per_worker
                                                                         │ train_step (trainer.py)
    driver: console + TensorBoard ◀──progress queue──────────────────────┤
    storage_path/name/checkpoint_*/  (safetensors + JSON) ◀──ray.train.report

Re-running a config with the same `name` and `storage_path` resumes from that run's latest
checkpoint (weights, optimizer moments, step, time used). The run stops at `max_steps` or after
`max_minutes` of training-loop time, whichever comes first; the learning rate decays over the
same budget.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator

from hma import storage
from hma.config import StorageURL, StrictModel, load_config
from hma.distributed import agree, world_size
from hma.tokenize import trainer
from hma.tokenize.data import DataConfig, frame_dataset
from hma.tokenize.fsq import FSQConfig
from hma.tokenize.kl import KLConfig
from hma.tokenize.losses import LossConfig
from hma.tokenize.presets import TokenizerConfig, tokenizer_config
from hma.tokenize.progress import ProgressPrinter, ProgressSink

SECONDS_PER_MINUTE = 60.0


class TrainConfig(StrictModel):
    """Everything a tokenizer training run needs; `jobs/tokenizer_*.yaml` are examples."""

    name: str = Field(description="run name: its checkpoints live in storage_path/name")
    storage_path: StorageURL = Field(description="local directory or s3:// prefix for checkpoints")
    tokenizer: TokenizerConfig
    data: DataConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: trainer.OptimConfig = Field(default_factory=trainer.OptimConfig)
    batch_size: int = Field(default=32, gt=0, description="frames per step per worker")
    max_steps: int = Field(default=1000, gt=0)
    max_minutes: float | None = Field(default=None, gt=0, description="training-loop time budget")
    log_every: int = Field(default=25, gt=0, description="steps between progress records")
    checkpoint_every: int = Field(default=500, gt=0, description="steps between checkpoints")
    keep_checkpoints: int = Field(default=2, gt=0)
    val_frames: int = Field(default=256, ge=0, description="held-out frames scored at checkpoints")
    num_workers: int = Field(default=1, gt=0)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    torch_threads: int | None = Field(default=None, gt=0, description="default: Ray's setting")
    seed: int = 0
    tensorboard_dir: StorageURL | None = Field(
        default=None, description="default: storage_path/name/tensorboard (uploaded if remote)"
    )

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer(cls, value: Any) -> FSQConfig | KLConfig:
        if isinstance(value, (FSQConfig, KLConfig)):
            return value
        if not isinstance(value, dict):
            raise ValueError("expected a mapping {arch, preset?, ...}")
        return tokenizer_config(value)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        f = self.tokenizer.backbone.downsample
        h, w = self.data.frame_size
        if h % f or w % f:
            raise ValueError(f"data.frame_size {h}x{w} is not a multiple of downsample {f}")
        return self

    @property
    def max_seconds(self) -> float | None:
        return self.max_minutes * SECONDS_PER_MINUTE if self.max_minutes else None


def load_train_config(url: str) -> TrainConfig:
    return load_config(TrainConfig, url)


# ---------------------------------------------------------------------------------------------
# Worker side


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: restore, then step until the budget is spent."""
    import ray.train
    import ray.train.torch

    config = TrainConfig.model_validate(loop_config["config"])
    rank = ray.train.get_context().get_world_rank()
    sink = ProgressSink(loop_config.get("progress"), rank)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed + rank)
    device = ray.train.torch.get_device()
    state = trainer.make_state(config.tokenizer, config.loss, config.optim, device)
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as local:
            trainer.restore(state, local)
        sink.send({"message": f"resumed at step {state.step} ({state.seconds:.0f}s trained)"})
    state.net = ray.train.torch.prepare_model(state.net)
    val = _validation_frames(config, device)

    shard = ray.train.get_dataset_shard("train")
    start, frames_seen, tick = time.perf_counter() - state.seconds, 0, time.perf_counter()
    done = state.step >= config.max_steps
    while not done:
        batches = shard.iter_torch_batches(
            batch_size=config.batch_size,
            local_shuffle_buffer_size=config.data.shuffle_buffer or None,
            drop_last=True,
            device=device,
        )
        stepped = False
        for batch in batches:
            stepped = True
            state.seconds = time.perf_counter() - start
            metrics = trainer.train_step(state, batch["frame"], _progress(config, state))
            frames_seen += len(batch["frame"])
            done = agree(_budget_spent(config, state), device)
            if state.step % config.log_every == 0 or done:
                now = time.perf_counter()
                metrics["frames_per_s"] = frames_seen * world_size() / max(now - tick, 1e-9)
                frames_seen, tick = 0, now
                sink.send({"step": state.step, "seconds": state.seconds, **metrics})
            if state.step % config.checkpoint_every == 0 or done:
                _report(state, config, val, sink, rank)
            if done:
                break
        if not stepped:
            raise ValueError(
                f"no training frames: the sources hold fewer than batch_size={config.batch_size} "
                "frames in the train split"
            )


def _progress(config: TrainConfig, state: trainer.TrainState) -> float:
    by_steps = state.step / config.max_steps
    by_time = state.seconds / config.max_seconds if config.max_seconds else 0.0
    return max(by_steps, by_time)


def _budget_spent(config: TrainConfig, state: trainer.TrainState) -> bool:
    return _progress(config, state) >= 1.0


def _validation_frames(config: TrainConfig, device: torch.device) -> torch.Tensor | None:
    import ray.train

    if not config.val_frames:
        return None
    val = ray.train.get_dataset_shard("val")
    for batch in val.iter_torch_batches(batch_size=config.val_frames, device=device):
        return batch["frame"]
    return None


def _report(
    state: trainer.TrainState,
    config: TrainConfig,
    val: torch.Tensor | None,
    sink: ProgressSink,
    rank: int,
) -> None:
    import ray.train

    metrics: dict[str, Any] = {"step": state.step, "seconds": state.seconds}
    if val is not None:
        metrics["val_psnr"] = trainer.validation_psnr(state.net, val, config.batch_size)
    sink.send(dict(metrics))
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="hma-tokenizer-") as tmp:
        metrics["fingerprint"] = trainer.save(state, tmp)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


# ---------------------------------------------------------------------------------------------
# Driver side


@dataclass
class TrainResult:
    checkpoint: str  # URL of the last checkpoint (a tokenizer checkpoint directory)
    metrics: dict[str, Any]
    seconds: float  # wall clock of the whole run, Ray start-up included
    tensorboard_dir: str


def run_storage(storage_path: str) -> tuple[str, Any]:
    """(path, pyarrow filesystem or None) for RunConfig; s3:// goes through our fsspec settings."""
    if not storage.is_remote(storage_path):
        return os.path.abspath(storage_path), None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = storage.filesystem(storage_path)
    return path, PyFileSystem(FSSpecHandler(fs))


def scaling_config(config: TrainConfig):  # -> ray.train.ScalingConfig
    import ray.train

    return ray.train.ScalingConfig(
        num_workers=config.num_workers,
        use_gpu=config.use_gpu,
        # On a 2-CPU machine a full CPU per worker leaves none for Ray Data's reads (NOTES.md).
        resources_per_worker={"CPU": config.cpus_per_worker},
    )


def run_config(config: Any, max_failures: int = 0):  # -> ray.train.RunConfig
    """Ray Train's run config for `config` (a TrainConfig or PretrainConfig: its name,
    storage_path and keep_checkpoints); `max_failures` worker-group restarts (-1: always)."""
    import ray.train

    path, filesystem = run_storage(config.storage_path)
    return ray.train.RunConfig(
        name=config.name,
        storage_path=path,
        storage_filesystem=filesystem,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
        failure_config=ray.train.FailureConfig(max_failures=max_failures),
    )


def tensorboard_logdir(config: Any, run_url: str) -> str:
    """Where the driver writes TensorBoard events during a run of `config` (a TrainConfig or
    PretrainConfig): its tensorboard_dir, else the run's tensorboard/, which for an s3:// run
    is staged in a local temporary directory (publish_tensorboard uploads it)."""
    if config.tensorboard_dir:
        return config.tensorboard_dir
    if storage.is_remote(config.storage_path):
        return tempfile.mkdtemp(prefix="hma-tb-")
    return storage.join(run_url, "tensorboard")


def publish_tensorboard(config: Any, run_url: str, logdir: str) -> str:
    """After the run: upload a staged `logdir` to the run's tensorboard/; the events' final URL."""
    if config.tensorboard_dir or not storage.is_remote(config.storage_path):
        return logdir
    target = storage.join(run_url, "tensorboard")
    fs, path = storage.filesystem(target)
    fs.put(logdir + "/", path, recursive=True)
    return target


def train(config: TrainConfig, echo: bool = True) -> TrainResult:
    """Train (or resume) the tokenizer `config` describes. Ray must be connected."""
    import ray.train
    from ray.train.torch import TorchTrainer

    start = time.perf_counter()
    run_url = storage.join(config.storage_path, config.name)
    datasets = {"train": frame_dataset(config.data, "train", config.seed).randomize_block_order()}
    if config.val_frames:
        datasets["val"] = frame_dataset(config.data, "val", config.seed)
    datasets = {k: ds.select_columns(["frame"]) for k, ds in datasets.items()}
    logdir = tensorboard_logdir(config, run_url)
    with ProgressPrinter(logdir, config.max_steps, echo) as progress:
        fit = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "config": config.model_dump(mode="json"),
                "progress": progress.channel,
            },
            scaling_config=scaling_config(config),
            run_config=run_config(config),
            datasets=datasets,
            dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        ).fit()
    logdir = publish_tensorboard(config, run_url, logdir)
    if fit.checkpoint is None:
        raise RuntimeError(f"{run_url}: training finished without a checkpoint")
    checkpoint = storage.join(run_url, os.path.basename(fit.checkpoint.path.rstrip("/")))
    return TrainResult(checkpoint, dict(fit.metrics or {}), time.perf_counter() - start, logdir)
