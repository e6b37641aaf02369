"""One HMA pretraining step: AdamW, warm-up + cosine schedule, accumulation, clipping, bf16, DDP/FSDP2.

    B windows per micro-batch, T frames, K micro-batches accumulated per optimizer step

No Ray in here: `loop.py` drives it from a Ray Train worker, tests drive it directly.
Every random draw of step s, micro-batch k on rank r (masks, diffusion noise, the dynamics mode)
comes from generators seeded with (seed, r, s, k), so a resumed run repeats the uninterrupted
run's steps exactly whatever happened before (validation, a restart, prefetching).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from hma.config import StrictModel
from hma.model.batch import Batch
from hma.model.hma import HMA
from hma.model.masking import MODES
from hma.training import optim as optimiser
from hma.training.distributed import is_distributed
from hma.training.run import TrainState as RunState

Parallel = Literal["ddp", "fsdp2"]
MODEL_PREFIX = "model."  # state-dict keys of LossModule's HMA


class StepConfig(StrictModel):
    """What one optimizer step does, besides the optimizer."""

    grad_accum: int = Field(default=1, gt=0, description="micro-batches per optimizer step")
    modes: dict[str, float] = Field(
        default_factory=lambda: {"forward": 1.0},
        description="dynamics mode -> probability per micro-batch (forward|passive|policy|full)",
    )
    bf16: bool = Field(default=True, description="bf16 autocast (CUDA only; CPU runs fp32)")

    @field_validator("modes")
    @classmethod
    def _modes(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(MODES))
        if unknown:
            raise ValueError(f"unknown modes {unknown} (known: {', '.join(MODES)})")
        if not value or any(p < 0 for p in value.values()) or sum(value.values()) <= 0:
            raise ValueError("modes need non-negative probabilities with a positive sum")
        return value


class LossModule(nn.Module):
    """HMA.loss as a forward(), so DDP/FSDP2 see the whole step (their hooks sit on forward)."""

    def __init__(self, model: HMA):
        super().__init__()
        self.model = model

    def forward(self, tokens, actions, datasets, mode: str, state=None) -> dict[str, torch.Tensor]:
        return self.model.loss(Batch(tokens, actions, list(datasets), state), mode)


@dataclass(kw_only=True)
class TrainState(RunState):
    root: LossModule  # holds the HMA (sharded in place under FSDP2); state dicts come from here
    runner: nn.Module  # what a step calls: DDP(root) or root
    scheduler: torch.optim.lr_scheduler.LambdaLR
    parallel: Parallel
    grad_clip: float

    @property
    def model(self) -> HMA:
        return self.root.model


def make_state(
    model: HMA,
    optim: optimiser.OptimConfig,
    horizon: int,
    parallel: Parallel,
    device: torch.device,
) -> TrainState:
    """Move/shard `model` for `parallel` (DDP and FSDP2 only when a process group exists) and
    build its optimizer and schedule. Freeze parameters before calling this."""
    root = LossModule(model)
    runner: nn.Module = root
    if parallel == "fsdp2" and is_distributed():
        from torch.distributed.fsdp import fully_shard

        root.to(device)
        for block in model.blocks:  # one FSDP unit per block: all-gather one block at a time
            fully_shard(block)
        fully_shard(root)
    else:
        root.to(device)
        if is_distributed():
            # Rows of a batch use only their datasets' stems/heads (and passive mode none), so
            # some parameters get no gradient on some ranks.
            runner = nn.parallel.DistributedDataParallel(
                root,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
    optimizer = optimiser.build_optimizer(root, optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: optimiser.lr_factor(optim, s, optimiser.horizon_progress(optim, s, horizon)),
    )
    return TrainState(
        optimizer=optimizer,
        root=root,
        runner=runner,
        scheduler=scheduler,
        parallel=parallel,
        grad_clip=optim.grad_clip,
    )


@contextlib.contextmanager
def gathered(state: TrainState):
    """Root-level parameters unsharded (FSDP2), so code that calls the HMA directly rather than
    through the root's forward (validation, rollouts) sees whole tensors; blocks gather their own."""
    sharded = state.parallel == "fsdp2" and is_distributed()
    if sharded:
        state.root.unshard()
    try:
        yield state.model
    finally:
        if sharded:
            state.root.reshard()


def step_seed(seed: int, rank: int, step: int, micro: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step, micro]).generate_state(1)[0])


def choose_mode(modes: dict[str, float], seed: int, step: int, micro: int) -> str:
    """The dynamics mode of a micro-batch: the same on every rank (one graph shape per step)."""
    names = sorted(modes)
    p = np.array([modes[n] for n in names], dtype=np.float64)
    rng = np.random.default_rng([seed, step, micro, 1])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _no_sync(state: TrainState, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulated step."""
    if last or not is_distributed():
        return contextlib.nullcontext()
    if isinstance(state.runner, nn.parallel.DistributedDataParallel):
        return state.runner.no_sync()
    state.root.set_requires_gradient_sync(False)  # FSDP2; re-enabled below for the last one
    return contextlib.nullcontext()


def train_step(
    state: TrainState, micro_batches: list[Batch], step: StepConfig, seed: int, rank: int
) -> dict[str, float]:
    """One optimizer step over `micro_batches` (on CPU or already on the device)."""
    device = next(state.root.parameters()).device
    amp = step.bf16 and device.type == "cuda"
    sums = {"total": 0.0, "video": 0.0, "action": 0.0, "state": 0.0}
    k = len(micro_batches)
    tokens = 0
    for i, batch in enumerate(micro_batches):
        torch.manual_seed(step_seed(seed, rank, state.step, i))  # masks and diffusion noise
        mode = choose_mode(step.modes, seed, state.step, i)
        batch = batch.to(device)
        tokens += (
            batch.tokens.shape[0] * batch.tokens.shape[1] * state.model.config.tokens_per_frame
        )
        last = i == k - 1
        if last and state.parallel == "fsdp2" and is_distributed():
            state.root.set_requires_gradient_sync(True)
        with _no_sync(state, last), torch.autocast(device.type, torch.bfloat16, enabled=amp):
            losses = state.runner(batch.tokens, batch.actions, batch.datasets, mode, batch.state)
        (losses["total"] / k).backward()
        for key in sums:
            sums[key] += float(losses[key].detach()) / k
    lr = state.optimizer.param_groups[0]["lr"]
    params = [p for p in state.root.parameters() if p.requires_grad]
    norm = optimiser.clip_and_step(state.optimizer, params, state.grad_clip)
    state.scheduler.step()
    state.step += 1
    return {
        "loss": sums["total"],
        "video_loss": sums["video"],
        "action_loss": sums["action"],
        "state_loss": sums["state"],
        "grad_norm": norm,
        "lr": lr,
        "tokens": float(tokens),
    }


# ---------------------------------------------------------------------------------------------
# State dicts: full (gathered) tensors keyed by parameter name, the same under DDP and FSDP2.


def model_state(state: TrainState) -> dict[str, torch.Tensor]:
    """The HMA's full state dict on CPU (collective under FSDP2: call on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        state.root, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return {k.removeprefix(MODEL_PREFIX): v for k, v in full.items()}


def optimizer_state(state: TrainState) -> dict[str, Any]:
    """Optimizer moments keyed by parameter name (collective under FSDP2)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        state.root,
        state.optimizer,
        options=StateDictOptions(full_state_dict=True, cpu_offload=True),
    )


def load_states(
    state: TrainState, model: dict[str, torch.Tensor], optimizer: dict[str, Any] | None
) -> None:
    """Load full state dicts (from `model_state` / `optimizer_state`) on every rank.

    Under FSDP2 every rank holds the whole checkpoint, so each cuts its own shards locally
    (`distribute_tensor(..., src_data_rank=None)`) instead of scattering from rank 0 (a gloo
    scatter from DCP's full-state-dict path aborted a CPU worker here)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    params = dict(state.root.named_parameters())
    weights = _shard_like({MODEL_PREFIX + k: v for k, v in model.items()}, state.root.state_dict())
    set_model_state_dict(state.root, weights)
    if optimizer is not None:
        moments = {
            name: _shard_like(values, {key: params.get(name) for key in values})
            for name, values in optimizer["state"].items()
        }
        # Parameters that never had a gradient (the null action of an unused mode, a dataset
        # absent so far) have no moments yet, exactly as in the run that saved them.
        set_optimizer_state_dict(
            state.root,
            state.optimizer,
            {**optimizer, "state": moments},
            options=StateDictOptions(strict=False),
        )


def _shard_like(full: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """Each full tensor shaped like its DTensor counterpart in `like`, cut into this rank's shard."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    out = {}
    for key, value in full.items():
        ref = like.get(key)
        if (
            isinstance(ref, DTensor)
            and isinstance(value, torch.Tensor)
            and value.shape == ref.shape
        ):
            value = distribute_tensor(
                value.to(ref.to_local().device), ref.device_mesh, ref.placements, src_data_rank=None
            )
        out[key] = value
    return out
