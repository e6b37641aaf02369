"""`hma policy train`: behaviour cloning of a visuomotor policy on Ray Train (hma.training).

    demonstrations (any format, local or s3://) ──worker: samples in memory──▶ steps
        ──every checkpoint_every steps──▶ storage_path/name/checkpoint_*/policy.{safetensors,json}

Every checkpoint is kept (`keep_checkpoints`), so one run yields the policies of graded quality
that closed-loop evaluation ranks. Batches are drawn with a generator seeded by (seed, step), so
a resumed run repeats the uninterrupted run's batches.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from hma import checkpoint as checkpoint_files
from hma.config import check_preset, load_config
from hma.episodes import load_registry
from hma.errors import ConfigError
from hma.formats import iter_episodes
from hma.policy import checkpoint
from hma.policy.config import PRESETS, PolicyConfig, policy_config
from hma.policy.data import PolicySource, Samples, StateStats, action_stats, collect
from hma.policy.model import PolicyNet
from hma.stats import ActionStats
from hma.training import optim as optimiser
from hma.training.distributed import agree
from hma.training.progress import Console
from hma.training.run import Clock, RunConfig, TrainState, WorkerContext, fit, report
from hma.vision import as_inputs, random_shift

CONSOLE = Console(keys=("loss", "val_loss", "lr", "samples_per_s"), section="policy")


class PolicyOptimConfig(optimiser.OptimConfig):
    """The shared optimiser with BC's defaults."""

    lr: float = Field(default=1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(default=1e-4, ge=0, description="on matrices only")
    warmup_steps: int = Field(default=100, ge=0)


class PolicyTrainConfig(RunConfig):
    """A behaviour-cloning run (`hma policy train` builds one from its flags)."""

    kind: str = Field(default="policy", description="job kind (job specs)")
    data: list[PolicySource] = Field(min_length=1, description="demonstrations, one dataset")
    policy: dict[str, Any] = Field(
        default_factory=lambda: {"preset": "small"},
        description="{preset: tiny|small|base, ...PolicyConfig overrides}",
    )
    optim: PolicyOptimConfig = Field(default_factory=PolicyOptimConfig)
    batch_size: int = Field(default=64, gt=0)
    only_success: bool = Field(default=True, description="skip demonstrations labelled failed")
    log_every: int = Field(default=50, gt=0, description="steps between progress records")
    keep_checkpoints: int = Field(default=1000, gt=0, description="every checkpoint by default")
    val_batches: int = Field(default=4, ge=0, description="val-split batches scored per checkpoint")

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_preset("policy", value.get("preset", "small"), PRESETS)
        return value

    def policy_config(self) -> PolicyConfig:
        overrides = {k: v for k, v in self.policy.items() if k != "preset"}
        return policy_config(self.policy.get("preset", "small"), **overrides)


def load_policy_config(url: str) -> PolicyTrainConfig:
    return load_config(PolicyTrainConfig, url)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Demonstrations:
    train: Samples
    val: Samples
    dataset: str
    stride: int
    chunk: int

    def record(self, policy: PolicyConfig) -> dict[str, Any]:
        """What a checkpoint must say for the policy to act (hma.policy.checkpoint.IDENTITY)."""
        return {
            "config": policy.model_dump(mode="json"),
            "dataset": self.dataset,
            "stride": self.stride,
            "action_dim": int(self.train.chunks.shape[2]),
            "chunk": self.chunk,
            "state_dim": int(self.train.state.shape[1]),
            "action_stats": action_stats(self.train).to_dict(exact=True),
            "state_stats": StateStats.of(self.train.state).to_dict(),
            "frame_size": list(self.train.frame_size),
        }


def load_demonstrations(config: PolicyTrainConfig) -> Demonstrations:
    """Every episode of the sources, as train and val samples; one dataset only."""
    policy = config.policy_config()
    episodes = [ep for src in config.data for ep in iter_episodes(src.url, src.format, src.dataset)]
    names = sorted({ep.dataset for ep in episodes})
    if len(names) != 1:
        raise ConfigError(f"a policy learns one dataset; the sources hold {names or 'none'}")
    stride = load_registry().get(names[0]).stride
    chunk = policy.chunk or stride
    train = collect(episodes, policy.image_size, chunk, "train", config.only_success)
    val = collect(episodes, policy.image_size, chunk, "val", config.only_success)
    if len(train) < config.batch_size:
        raise ConfigError(
            f"{len(train)} training samples (from {train.episodes} episodes) is less than "
            f"batch_size {config.batch_size}"
        )
    return Demonstrations(train, val, names[0], stride, chunk)


# ---------------------------------------------------------------------------------------------
# Steps (no Ray)


@dataclass(kw_only=True)
class Learner(TrainState):
    """The network, its optimiser and the normalisation it learns in."""

    net: PolicyNet
    optim: optimiser.OptimConfig
    horizon: int  # the lr schedule's length in steps
    actions: ActionStats
    states: StateStats

    @classmethod
    def build(cls, config: PolicyTrainConfig, demos: Demonstrations, device: torch.device):
        record = demos.record(config.policy_config())
        policy = config.policy_config()
        net = PolicyNet(policy, record["action_dim"], demos.chunk, record["state_dim"]).to(device)
        return cls(
            optimizer=optimiser.build_optimizer(net, config.optim),
            net=net,
            optim=config.optim,
            horizon=config.optim.decay_steps or config.max_steps,
            actions=ActionStats.from_dict(record["action_stats"]),
            states=StateStats.from_dict(record["state_stats"]),
        )

    def batch(self, samples: Samples, rows: np.ndarray, device: torch.device):
        config = self.net.config
        images = as_inputs(samples.frames[rows], config.image_size).to(device)  # [B,3,R,R]
        state = torch.from_numpy(self.states.normalise(samples.state[rows])).to(device)
        target = torch.from_numpy(self.actions.normalise(samples.chunks[rows])).to(device)
        return images, state, target  # target [B,K,A] normalised

    def train_step(self, samples: Samples, seed: int, batch_size: int) -> dict[str, float]:
        device = next(self.net.parameters()).device
        g = np.random.default_rng([seed, self.step])
        rows = g.integers(0, len(samples), batch_size)
        images, state, target = self.batch(samples, rows, device)
        shift_gen = torch.Generator().manual_seed(int(g.integers(2**31)))
        images = random_shift(images, self.net.config.shift, shift_gen)
        lr = self.optim.lr * optimiser.lr_factor(
            self.optim, self.step, optimiser.horizon_progress(self.optim, self.step, self.horizon)
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        loss = F.mse_loss(self.net(images, state), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = optimiser.clip_and_step(
            self.optimizer, self.net.parameters(), self.optim.grad_clip
        )
        self.step += 1
        return {"loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm}

    @torch.no_grad()
    def val_loss(self, samples: Samples, batches: int, batch_size: int) -> float | None:
        if not len(samples) or not batches:
            return None
        device = next(self.net.parameters()).device
        self.net.eval()
        g = np.random.default_rng([0, len(samples)])  # the same val batches at every checkpoint
        losses = []
        for _ in range(batches):
            images, state, target = self.batch(
                samples, g.integers(0, len(samples), batch_size), device
            )
            losses.append(float(F.mse_loss(self.net(images, state), target)))
        return float(np.mean(losses))

    def save(self, url: str, record: dict[str, Any]) -> str:
        fingerprint = checkpoint.save(url, self.net.state_dict(), record)
        trainer = {"optimizer": self.optimizer.state_dict(), "step": self.step}
        checkpoint_files.save_state(url, {**trainer, "seconds": self.seconds})
        return fingerprint

    def restore(self, url: str) -> None:
        _, tensors = checkpoint.load(url)
        self.net.load_state_dict(tensors)
        saved = checkpoint_files.load_state(url)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step, self.seconds = int(saved["step"]), float(saved["seconds"])


# ---------------------------------------------------------------------------------------------
# Worker and driver


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train

    config = PolicyTrainConfig.model_validate(loop_config["config"])
    worker = WorkerContext.start(config, loop_config)
    torch.manual_seed(config.seed)
    demos = load_demonstrations(config)
    learner = Learner.build(config, demos, worker.device)
    base_record = demos.record(config.policy_config())
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as local:
            learner.restore(local)
        worker.sink.send({"message": f"resumed at step {learner.step}"})
    else:
        worker.sink.send(
            {
                "message": f"policy on {demos.dataset}: {demos.train.episodes} train episodes "
                f"({len(demos.train)} samples), {demos.val.episodes} val; chunk {demos.chunk}"
            }
        )
    clock = Clock(learner.seconds)
    done = config.spent(learner.step, learner.seconds)
    while not done:
        metrics = learner.train_step(demos.train, config.seed, config.batch_size)
        learner.seconds = clock.seconds()
        clock.count += config.batch_size
        done = agree(config.spent(learner.step, learner.seconds), worker.device)
        if learner.step % config.log_every == 0 or done:
            metrics["samples_per_s"] = clock.rate()
            worker.sink.send({"step": learner.step, "seconds": learner.seconds, **metrics})
        if learner.step % config.checkpoint_every == 0 or done:
            val = learner.val_loss(demos.val, config.val_batches, config.batch_size)
            scores = {"step": learner.step, "seconds": learner.seconds, "loss": metrics["loss"]}
            if val is not None:
                scores["val_loss"] = val
            worker.sink.send(dict(scores))
            record = {**base_record, **scores}
            report(scores, worker.rank, lambda tmp, r=record: {"fingerprint": learner.save(tmp, r)})


@dataclass
class PolicyRun:
    url: str  # the run directory: DIR@STEP names its checkpoints
    checkpoints: list[checkpoint.Saved]
    seconds: float
    tensorboard_dir: str


def train_policy(config: PolicyTrainConfig, echo: bool = True) -> PolicyRun:
    """Train (or resume) the policy `config` describes. Ray must be connected."""
    start = time.perf_counter()
    run = fit(config, train_loop_per_worker, {}, CONSOLE, echo)
    if run.result.checkpoint is None:
        raise RuntimeError(f"{config.run_url}: training finished without a checkpoint")
    return PolicyRun(
        config.run_url,
        checkpoint.run_checkpoints(config.run_url),
        time.perf_counter() - start,
        run.tensorboard_dir,
    )


def config_from_flags(data: list[str], out: str, steps: int, **fields: Any) -> PolicyTrainConfig:
    """A run at `out` (its parent is the storage path, its name the run's) from CLI flags."""
    parent, name = os.path.split(out.rstrip("/"))
    return PolicyTrainConfig(
        name=name,
        storage_path=parent or ".",
        data=[{"url": u} for u in data],
        max_steps=steps,
        **{k: v for k, v in fields.items() if v is not None},
    )
