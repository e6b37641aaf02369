"""The Ray Train worker of `hma pretrain`: restore, then step, validate and checkpoint.

rank r of W: own shard of the sampling stream ──prefetch thread──▶ train_step (step.py)
rank 0: progress records ──queue──▶ driver console + TensorBoard; validation PNGs to the run dir
every rank: ray.train.report at checkpoints (rank 0 attaches the checkpoint directory)
"""

from __future__ import annotations

from typing import Any

import torch

from hma import checkpoint, storage
from hma.model import checkpoint as model_checkpoint
from hma.model.config import ModelConfig
from hma.model.hma import HMA
from hma.pipeline.pretrain.config import PretrainConfig
from hma.pipeline.pretrain.mixing import MixedSource, SamplingStream, StreamState
from hma.pipeline.pretrain.step import (
    TrainState,
    gathered,
    load_states,
    make_state,
    model_state,
    optimizer_state,
    train_step,
)
from hma.pipeline.pretrain.validation import Validator, table
from hma.training.distributed import agree, is_distributed
from hma.training.run import Clock, WorkerContext, report


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train

    config = PretrainConfig.model_validate(loop_config["config"])
    model_config = ModelConfig.model_validate(loop_config["model"])
    meta = loop_config["meta"]
    worker = WorkerContext.start(config, loop_config)
    rank, world, sink = worker.rank, worker.world, worker.sink

    torch.manual_seed(config.seed)  # the same initial weights on every rank (FSDP2 needs it)
    model = HMA(model_config)
    resumed = ray.train.get_checkpoint()
    if resumed is None and config.init_from:
        init = model_checkpoint.resolve(config.init_from)
        # datasets the checkpoint lacks keep their fresh stem/head
        model_checkpoint.load_weights(model, model_checkpoint.model_url(init), strict=False)
        sink.send({"message": f"fine-tuning from {init}"})
    if config.freeze_trunk:
        model.freeze_trunk()
    state = make_state(model, config.optim, config.decay_steps, config.parallel, worker.device)
    stream = StreamState(config.seed, rank, world)
    if resumed is not None:
        with resumed.as_directory() as local:
            stream = restore(state, local, rank, world)
        sink.send({"message": f"resumed at step {state.step} ({state.seconds:.0f}s trained)"})

    source = MixedSource(config.data, model_config.window, "train")
    sampling = SamplingStream(
        source, config.data.batch_size, model_config.action_width, stream, model_config.state_width
    )
    validator = None
    if rank == 0 or config.parallel == "fsdp2":  # FSDP2 forwards are collective
        val_source = MixedSource(config.data, model_config.window, "val")
        out = storage.join(config.run_url, "validation") if rank == 0 else None
        validator = Validator(
            config.validation,
            val_source,
            model_config.action_width,
            out,
            worker.device,
            model_config.state_width,
        )

    clock = Clock(state.seconds)
    done = config.spent(state.step, state.seconds)
    with sampling.prefetch(config.data.prefetch) as batches:
        while not done:
            micro = [next(batches) for _ in range(config.grad_accum)]
            metrics = train_step(state, micro, config.step_config, config.seed, rank)
            state.seconds = clock.seconds()
            clock.count += metrics.pop("tokens") * world
            done = agree(config.spent(state.step, state.seconds), worker.device)
            if state.step % config.log_every == 0 or done:
                metrics["tokens_per_s"] = clock.rate()
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


def _gather_rng() -> dict[str, Any]:
    """Every rank's RNG states, keyed by rank (collective when distributed)."""
    own = checkpoint.rng_state()
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
    # Collectives first, on every rank: full weights and moments gathered under FSDP2.
    weights, moments, rng = model_state(state), optimizer_state(state), _gather_rng()
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

    def write(tmp: str) -> dict[str, Any]:
        config_json = model_config.model_dump(mode="json")
        model_checkpoint.save_run(tmp, weights, config_json, trainer_state, record)
        return {}

    report({"step": state.step, "seconds": state.seconds}, rank, write)


def restore(state: TrainState, url: str, rank: int, world: int) -> StreamState:
    """Load a checkpoint into `state`; returns this rank's sampling-stream state."""
    meta = model_checkpoint.read_meta(url)
    saved = checkpoint.load_state(url)
    weights = model_checkpoint.read_weights(model_checkpoint.model_url(url))
    load_states(state, weights, saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.step = int(meta["step"])
    state.seconds = float(meta["seconds"])
    rng = saved.get("rng", {})
    if str(rank) in rng:
        checkpoint.set_rng_state(rng[str(rank)])
    return StreamState(**meta["sampler"]).resumed(rank, world)
