"""`hma tokenizer train`: a Ray Train TorchTrainer fed by a Ray Data stream of frames.

    Episode sources ──frame_dataset──▶ Ray Data ──get_dataset_shard──▶ train_loop_per_worker
                                                                         │ train_step (trainer.py)
    driver: console + TensorBoard ◀──progress queue──────────────────────┤
    storage_path/name/checkpoint_*/  (safetensors + JSON) ◀──ray.train.report

The run skeleton (storage, budget, progress, resume) is hma.training's. The run stops at
`max_steps` or after `max_minutes` of training-loop time, whichever comes first; the learning
rate decays over the same budget.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator

from hma import storage
from hma.config import load_config
from hma.tokenize import trainer
from hma.tokenize.data import DataConfig, frame_dataset
from hma.tokenize.fsq import FSQConfig
from hma.tokenize.kl import KLConfig
from hma.tokenize.losses import LossConfig
from hma.tokenize.presets import TokenizerConfig, tokenizer_config
from hma.training.distributed import agree
from hma.training.progress import Console
from hma.training.run import Clock, RunConfig, WorkerContext, fit, report

CONSOLE = Console(
    keys=("loss", "psnr", "val_psnr", "kl", "codes_used", "lr", "frames_per_s"), section="tokenizer"
)


class TrainConfig(RunConfig):
    """Everything a tokenizer training run needs; `jobs/tokenizer_*.yaml` are examples."""

    tokenizer: TokenizerConfig
    data: DataConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: trainer.TokenizerOptimConfig = Field(default_factory=trainer.TokenizerOptimConfig)
    batch_size: int = Field(default=32, gt=0, description="frames per step per worker")
    log_every: int = Field(default=25, gt=0, description="steps between progress records")
    val_frames: int = Field(default=256, ge=0, description="held-out frames scored at checkpoints")

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

    def progress(self, state: trainer.TrainState) -> float:
        """The share of the budget spent, by steps (over optim.decay_steps if set) or time."""
        steps = self.optim.decay_steps or self.max_steps
        by_time = state.seconds / self.max_seconds if self.max_seconds else 0.0
        return max(state.step / steps, by_time)


def load_train_config(url: str) -> TrainConfig:
    return load_config(TrainConfig, url)


# ---------------------------------------------------------------------------------------------
# Worker side


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: restore, then step until the budget is spent."""
    import ray.train
    import ray.train.torch

    config = TrainConfig.model_validate(loop_config["config"])
    worker = WorkerContext.start(config, loop_config)
    torch.manual_seed(config.seed + worker.rank)
    state = trainer.make_state(config.tokenizer, config.loss, config.optim, worker.device)
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as local:
            trainer.restore(state, local)
        worker.sink.send(
            {"message": f"resumed at step {state.step} ({state.seconds:.0f}s trained)"}
        )
    state.net = ray.train.torch.prepare_model(state.net)
    val = _validation_frames(config, worker.device)

    shard = ray.train.get_dataset_shard("train")
    clock = Clock(state.seconds)
    done = config.spent(state.step, state.seconds)
    while not done:
        batches = shard.iter_torch_batches(
            batch_size=config.batch_size,
            local_shuffle_buffer_size=config.data.shuffle_buffer or None,
            drop_last=True,
            device=worker.device,
        )
        stepped = False
        for batch in batches:
            stepped = True
            state.seconds = clock.seconds()
            metrics = trainer.train_step(state, batch["frame"], config.progress(state))
            clock.count += len(batch["frame"]) * worker.world
            done = agree(config.spent(state.step, state.seconds), worker.device)
            if state.step % config.log_every == 0 or done:
                metrics["frames_per_s"] = clock.rate()
                worker.sink.send({"step": state.step, "seconds": state.seconds, **metrics})
            if state.step % config.checkpoint_every == 0 or done:
                _report(state, config, val, worker)
            if done:
                break
        if not stepped:
            raise ValueError(
                f"no training frames: the sources hold fewer than batch_size={config.batch_size} "
                "frames in the train split"
            )


def _validation_frames(config: TrainConfig, device: torch.device) -> torch.Tensor | None:
    import ray.train

    if not config.val_frames:
        return None
    val = ray.train.get_dataset_shard("val")
    for batch in val.iter_torch_batches(batch_size=config.val_frames, device=device):
        return batch["frame"]
    return None


def _report(
    state: trainer.TrainState, config: TrainConfig, val: torch.Tensor | None, worker: WorkerContext
) -> None:
    metrics: dict[str, Any] = {"step": state.step, "seconds": state.seconds}
    if val is not None:
        metrics["val_psnr"] = trainer.validation_psnr(state.net, val, config.batch_size)
    worker.sink.send(dict(metrics))
    report(metrics, worker.rank, lambda tmp: {"fingerprint": trainer.save(state, tmp)})


# ---------------------------------------------------------------------------------------------
# Driver side


@dataclass
class TrainResult:
    checkpoint: str  # URL of the last checkpoint (a tokenizer checkpoint directory)
    metrics: dict[str, Any]
    seconds: float  # wall clock of the whole run, Ray start-up included
    tensorboard_dir: str


def train(config: TrainConfig, echo: bool = True) -> TrainResult:
    """Train (or resume) the tokenizer `config` describes. Ray must be connected."""
    import ray.train

    start = time.perf_counter()
    datasets = {"train": frame_dataset(config.data, "train", config.seed).randomize_block_order()}
    if config.val_frames:
        datasets["val"] = frame_dataset(config.data, "val", config.seed)
    datasets = {k: ds.select_columns(["frame"]) for k, ds in datasets.items()}
    run = fit(
        config,
        train_loop_per_worker,
        {},
        CONSOLE,
        echo,
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    if run.result.checkpoint is None:
        raise RuntimeError(f"{config.run_url}: training finished without a checkpoint")
    name = os.path.basename(run.result.checkpoint.path.rstrip("/"))
    return TrainResult(
        checkpoint=storage.join(config.run_url, name),
        metrics=dict(run.result.metrics or {}),
        seconds=time.perf_counter() - start,
        tensorboard_dir=run.tensorboard_dir,
    )
