"""Pretraining throughput: tokens/s with 1 and 2 Ray Train workers, and the data loader's overhead.

    python -m benchmarks.pretrain_throughput [--store URL] [--steps 60] [--address ADDR]

1. Loader ratio, in one process without Ray: the same model trains `--steps` steps on batches from
   the real loader (token store -> mixed sampling stream -> prefetch thread) and on the very same
   batches held in memory. ratio = real-loader tokens/s / in-memory tokens/s (target >= 0.95:
   the model never waits on I/O).
2. Ray Train: `run_pretrain` with 1 and 2 workers; tokens/s as the workers report it (all workers'
   training tokens per second of the training loop, start-up excluded).
Without --store a synthetic store (random codes, three datasets) is written to a temp dir.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

import numpy as np
import torch

from hma.episodes import load_registry
from hma.model.hma import HMA
from hma.pipeline import store
from hma.pipeline.pretrain.config import PretrainConfig
from hma.pipeline.pretrain.driver import plan, run_pretrain
from hma.pipeline.pretrain.mixing import MixedSource, SamplingStream, StreamState
from hma.pipeline.pretrain.step import make_state, train_step

SYNTH = {"pusht": (1, 2), "robosuite_lift": (2, 7), "metaworld_reach": (8, 4)}


def synthetic_store(url: str, episodes: int = 24, frames: int = 48) -> str:
    info = store.TokenizerInfo(
        kind="vq",
        fingerprint="b" * 64,
        config={"arch": "benchmark"},
        url="none",
        grid=(8, 8),
        vocab_size=1000,
        latent_channels=None,
        frame_size=(64, 64),
    )
    store.create_store(url, info)
    rng = np.random.default_rng(0)
    for name, (stride, dim) in SYNTH.items():
        eps = [
            store.EncodedEpisode(
                name,
                f"{name}-{i}",
                "val" if i % 10 == 9 else "train",
                None,
                rng.integers(0, 1000, (frames, 8, 8)),
                rng.normal(0, 1, (frames, stride, dim)).astype(np.float32),
            )
            for i in range(episodes)
        ]
        store.write_unit(url, f"u-{name}", eps, [], len(eps))
    store.finalize(url, load_registry())
    return url


def config_for(url: str, runs: str, workers: int, steps: int) -> PretrainConfig:
    return PretrainConfig.model_validate(
        {
            "name": f"bench-{workers}w-{uuid.uuid4().hex[:6]}",
            "storage_path": runs,
            "data": {"stores": [{"url": url}], "batch_size": 8, "prefetch": 4},
            "model": {"preset": "tiny", "window": 8, "d_model": 64, "layers": 4, "heads": 4},
            "optim": {"warmup_steps": 10},
            "max_steps": steps,
            "log_every": max(steps // 4, 1),
            "checkpoint_every": steps,
            "validation": {"every": steps, "windows": 2, "rollouts": 0},
            "num_workers": workers,
            "cpus_per_worker": 0.5,
            "torch_threads": max(1, (os.cpu_count() or 2) // workers),
        }
    )


def loader_ratio(config: PretrainConfig, steps: int) -> tuple[float, float]:
    """(real-loader tokens/s, in-memory tokens/s) over the same `steps` batches, one process."""
    decided = plan(config)
    source = MixedSource(config.data, decided.model.window)
    stream = SamplingStream(
        source, config.data.batch_size, decided.model.action_width, StreamState(config.seed, 0, 1)
    )
    memory = [stream.batch(i) for i in range(steps)]

    def run(batches) -> float:
        torch.manual_seed(0)
        state = make_state(HMA(decided.model), config.optim, steps, "ddp", torch.device("cpu"))
        train_step(state, [memory[0]], config.step_config, 0, 0)  # warm-up, not timed
        tokens, start = 0.0, time.perf_counter()
        for _ in range(steps - 1):
            tokens += train_step(state, [next(batches)], config.step_config, 0, 0)["tokens"]
        return tokens / (time.perf_counter() - start)

    with stream.prefetch(config.data.prefetch) as real:
        next(real)
        real_tps = run(real)
    memory_tps = run(iter(memory[1:]))
    return real_tps, memory_tps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="token store URL (default: a synthetic one)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--address", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    tmp = tempfile.mkdtemp(prefix="hma-bench-pretrain-")
    url = args.store or synthetic_store(os.path.join(tmp, "store.zarr"))
    runs = os.path.join(tmp, "runs")

    real, memory = loader_ratio(config_for(url, runs, 1, args.steps), args.steps)
    print(
        f"loader: real {real:,.0f} tokens/s, in-memory {memory:,.0f} tokens/s, "
        f"ratio {real / memory:.3f} (target >= 0.95)"
    )
    for workers in (1, 2):
        result = run_pretrain(config_for(url, runs, workers, args.steps), args.address, echo=False)
        rates = [r["tokens_per_s"] for r in result.records if "tokens_per_s" in r][1:]
        print(
            f"{workers} worker(s): {np.mean(rates):,.0f} tokens/s (training loop, "
            f"{result.seconds:.0f}s wall incl. start-up)"
        )
    print(f"cpus: {os.cpu_count()}, cuda: {torch.cuda.is_available()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
