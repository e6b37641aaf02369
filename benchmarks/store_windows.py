"""Random training windows per second from a token store: local disk vs S3 (a moto server on
127.0.0.1, started here), same store contents.

    .venv/bin/python -m benchmarks.store_windows [--episodes 300] [--window 16] [--batch 64]

Prints figures only; loopback S3 has none of a real bucket's latency, so read the ratio as a
lower bound on the per-request overhead of the S3 path (s3fs + HTTP), not as cloud numbers.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import numpy as np

from hma.pipeline.store import (
    EncodedEpisode,
    TokenizerInfo,
    chunk_actions,
    create_store,
    write_unit,
)
from hma.pipeline.store.reader import TokenStore, WindowSampler

DATASET = "robosuite_lift"  # stride 2, 7-D actions in the built-in registry
STRIDE, ACTION_DIM = 2, 7
GRID = (16, 16)  # 256 px frames at /16, the paper's token grid
VOCAB = 64000  # Cosmos discrete vocabulary: stored as uint16
EPISODES_PER_UNIT = 50


def start_s3() -> tuple[object, str]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return server, "s3://bench/store.zarr"


def build(url: str, episodes: int, seed: int) -> float:
    """Write `episodes` random episodes of 40-120 kept frames; returns seconds taken."""
    info = TokenizerInfo(
        kind="vq",
        fingerprint="benchmark",
        config={},
        url="none",
        grid=GRID,
        vocab_size=VOCAB,
        latent_channels=None,
        frame_size=(256, 256),
    )
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    create_store(url, info)
    for u, first in enumerate(range(0, episodes, EPISODES_PER_UNIT)):
        eps = []
        for i in range(first, min(first + EPISODES_PER_UNIT, episodes)):
            frames = int(rng.integers(40, 121))
            raw = rng.normal(size=(frames * STRIDE, ACTION_DIM)).astype(np.float32)
            tokens = rng.integers(0, VOCAB, (frames, *GRID))
            eps.append(
                EncodedEpisode(DATASET, f"ep{i}", "train", None, tokens, chunk_actions(raw, STRIDE))
            )
        write_unit(url, f"unit-{u:04d}", eps, [], len(eps))
    return time.perf_counter() - t0


def windows_per_second(url: str, window: int, batch: int, seconds: float) -> tuple[float, float]:
    """(windows/s, seconds to open the store) sampling batches of `batch` windows."""
    t0 = time.perf_counter()
    store = TokenStore.open(url)
    opened = time.perf_counter() - t0
    sampler = WindowSampler(store, window, seed=0)
    sampler.sample(DATASET, batch)  # warm: opens each shard's arrays on first use
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(sampler.sample(DATASET, batch))
    return n / (time.perf_counter() - t0), opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    server, s3_url = start_s3()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local_url = os.path.join(tmp, "store.zarr")
            rows = []
            for name, url in (("local", local_url), ("s3 (moto)", s3_url)):
                built = build(url, args.episodes, seed=0)
                rate, opened = windows_per_second(url, args.window, args.batch, args.seconds)
                rows.append((name, built, opened, rate))
            print(
                f"{args.episodes} episodes, {GRID[0]}x{GRID[1]} uint16 tokens, window T={args.window}, "
                f"batches of {args.batch}"
            )
            print(f"{'store':10s} {'build s':>8s} {'open s':>8s} {'windows/s':>10s}")
            for name, built, opened, rate in rows:
                print(f"{name:10s} {built:8.2f} {opened:8.3f} {rate:10.1f}")
            print(f"s3 / local windows/s: {rows[1][3] / rows[0][3]:.3f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
