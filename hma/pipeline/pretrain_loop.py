"""The Ray Train worker of `hma pretrain`: restore, then step, validate and checkpoint.

rank r of W: own shard of the sampling stream ──prefetch thread──▶ train_step (pretrain_step.py)
rank 0: progress records ──queue──▶ driver console + TensorBoard; validation PNGs to the run dir
every rank: ray.train.report at checkpoints (rank 0 attaches the checkpoint directory)
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from hma import storage
from hma.distributed import agree, is_distributed
from hma.model.checkpoint import WEIGHTS_FILE, load_weights
from hma.model.config import ModelConfig
from hma.model.hma import HMA
from hma.pipeline import pretrain_checkpoint as ckpt
from hma.pipeline.mixing import MixedSource, SamplingStream, StreamState
from hma.pipeline.pretrain_config import PretrainConfig
from hma.pipeline.pretrain_step import (
    TrainState,
    gathered,
    load_states,
    make_state,
    model_state,
    optimizer_state,
    train_step,
)
from hma.pipeline.validation import Validator, table
from hma.tokenize.checkpoint import read_tensors
from hma.tokenize.progress import ProgressSink


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    config = PretrainConfig.model_validate(loop_config["config"])
    model_config = ModelConfig.model_validate(loop_config["model"])
    meta = loop_config["meta"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    sink = ProgressSink(loop_config.get("progress"), rank)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    device = ray.train.torch.get_device()

    torch.manual_seed(config.seed)  # the same initial weights on every rank (FSDP2 needs it)
    model = HMA(model_config)
    resumed = ray.train.get_checkpoint()
    if resumed is None and config.init_from:
        init = ckpt.resolve(config.init_from)
        load_weights(model, ckpt.model_url(init), strict=False)  # new datasets: fresh stem/head
        sink.send({"message": f"fine-tuning from {init}"})
    if config.freeze_trunk:
        model.freeze_trunk()
    state = make_state(model, config.optim, config.decay_steps, config.parallel, device)
    stream = StreamState(config.seed, rank, world)
    if resumed is not None:
        with resumed.as_directory() as local:
            stream = restore(state, local, rank, world)
        sink.send({"message": f"resumed at step {state.step} ({state.seconds:.0f}s trained)"})

    source = MixedSource(config.data, model_config.window, "train")
    sampling = SamplingStream(source, config.data.batch_size, model_config.action_width, stream)
    validator = None
    if rank == 0 or config.parallel == "fsdp2":  # FSDP2 forwards are collective
        val_source = MixedSource(config.data, model_config.window, "val")
        out = storage.join(config.storage_path, config.name, "validation") if rank == 0 else None
        validator = Validator(config.validation, val_source, model_config.action_width, out, device)

    start = time.perf_counter() - state.seconds
    tick, tokens = time.perf_counter(), 0.0
    done = state.step >= config.max_steps
    with sampling.prefetch(config.data.prefetch) as batches:
        while not done:
            micro = [next(batches) for _ in range(config.grad_accum)]
            metrics = train_step(state, micro, config.step_config, config.seed, rank)
            state.seconds = time.perf_counter() - start
            tokens += metrics.pop("tokens")
            done = agree(_spent(config, state), device)
            if state.step % config.log_every == 0 or done:
                now = time.perf_counter()
                metrics["tokens_per_s"] = tokens * world / max(now - tick, 1e-9)
                tick, tokens = now, 0.0
                sink.send({"step": state.step, "seconds": state.seconds, **metrics})
            if validator is not None and (state.step % config.validation.every == 0 or done):
                with gathered(state) as model:
                    result = validator.run(model, state.step)
                sink.send({"step": state.step, **result.metrics(), "pngs": result.pngs})
                vocab = model_config.vocab_size if model_config.token_kind == "vq" else None
                sink.send({"message": "\n".join(table(result, vocab)), "validation": True})
            if state.step % config.checkpoint_every == 0 or done:
                position = StreamState(config.seed, rank, world, batches.position)
                _report(state, config, model_config, meta, position, rank)


def _spent(config: PretrainConfig, state: TrainState) -> bool:
    if state.step >= config.max_steps:
        return True
    return bool(config.max_seconds and state.seconds >= config.max_seconds)


def _gather_rng() -> dict[str, Any]:
    """Every rank's RNG states, keyed by rank (collective when distributed)."""
    own = ckpt.rng_state()
    if not is_distributed():
        return {"0": own}
    states: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, own)
    return {str(r): s for r, s in enumerate(states)}


def _report(
    state: TrainState,
    config: PretrainConfig,
    model_config: ModelConfig,
    meta: dict[str, Any],
    stream: StreamState,
    rank: int,
) -> None:
    import ray.train

    # Collectives first, on every rank: full weights and moments gathered under FSDP2.
    weights, moments, rng = model_state(state), optimizer_state(state), _gather_rng()
    metrics = {"step": state.step, "seconds": state.seconds}
    if rank != 0:
        ray.train.report(metrics)
        return
    trainer_state = {
        "optimizer": moments,
        "scheduler": state.scheduler.state_dict(),
        "rng": rng,
    }
    record = {
        **meta,
        "step": state.step,
        "seconds": state.seconds,
        "parallel": state.parallel,
        "sampler": stream.to_dict(),
        "config": config.model_dump(mode="json"),
    }
    with tempfile.TemporaryDirectory(prefix="hma-pretrain-") as tmp:
        ckpt.save(tmp, weights, model_config.model_dump(mode="json"), trainer_state, record)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def restore(state: TrainState, url: str, rank: int, world: int) -> StreamState:
    """Load a checkpoint into `state`; returns this rank's sampling-stream state."""
    meta = ckpt.read_meta(url)
    saved = ckpt.load_trainer_state(url)
    weights = read_tensors(
        storage.join(ckpt.model_url(url), WEIGHTS_FILE), ckpt.PretrainCheckpointError
    )
    load_states(state, weights, saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.step = int(meta["step"])
    state.seconds = float(meta["seconds"])
    rng = saved.get("rng", {})
    if str(rank) in rng:
        ckpt.set_rng_state(rng[str(rank)])
    return StreamState(**meta["sampler"]).resumed(rank, world)
