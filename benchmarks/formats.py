"""Read throughput per episode format, as a ratio to raw decode of the same frames in the same run.

For each format the same episodes are written once, then read three ways:
  reader   `hma.formats.iter_episodes` in this process: the full reader (metadata, decode, actions)
  ray      `hma.formats.read_episodes(...).iter_rows()` on a local 2-CPU Ray cluster
  raw      the bare codec on the same stored bytes: h5py array reads (robomimic), PIL decode of
           the PNG step images (rlds), decord over the mp4 files (lerobot, video)
and frames/s is printed for each with the ratios reader/raw and ray/raw. Absolute times drift on
this shared machine; the ratios are the figures to compare.

    python -m benchmarks.formats [--episodes 16] [--steps 64] [--size 128]
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial

import decord
import h5py
import numpy as np
from PIL import Image

from hma import formats
from hma.envs.procedural import procedural_episodes
from hma.episodes import load_registry
from hma.formats import tfrecord
from hma.pipeline import cluster

DATASET = "robosuite_lift"
FORMATS = ("robomimic", "rlds", "lerobot", "video")


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    frames = fn()
    return frames, time.perf_counter() - start


def raw_robomimic(url: str) -> int:
    key = load_registry().get(DATASET).image_key
    frames = 0
    with h5py.File(url, "r") as f:
        for demo in f["data"].values():
            frames += demo["obs"][key][:].shape[0]
    return frames


def rlds_image_bytes(url: str) -> list[bytes]:
    """Every step image's encoded bytes (read untimed: the raw figure times decode only)."""
    out: list[bytes] = []
    for shard in sorted(glob.glob(os.path.join(url, "*.tfrecord-*"))):
        with open(shard, "rb") as f:
            for payload in tfrecord.iter_records(f, shard):
                example = tfrecord.decode_example(payload)
                key = next(k for k in example if k.startswith("steps/observation/image"))
                out.extend(example[key])
    return out


def raw_rlds(images: list[bytes]) -> int:
    for data in images:
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return len(images)


def raw_mp4(url: str) -> int:
    frames = 0
    for path in sorted(glob.glob(os.path.join(url, "**", "*.mp4"), recursive=True)):
        reader = decord.VideoReader(path)
        frames += reader.get_batch(list(range(len(reader)))).asnumpy().shape[0]
    return frames


def reader(url: str, fmt: str) -> int:
    return sum(len(ep) for ep in formats.iter_episodes(url, fmt))


def ray_reader(url: str, fmt: str) -> int:
    rows = formats.read_episodes(url, fmt).iter_rows()
    return sum(int(row["frames"].shape[0]) for row in rows)


def raw_decoder(fmt: str, url: str) -> Callable[[], int]:
    if fmt == "robomimic":
        return partial(raw_robomimic, url)
    if fmt == "rlds":
        return partial(raw_rlds, rlds_image_bytes(url))
    return partial(raw_mp4, url)


def measure(fmt: str, url: str, total: int) -> dict[str, float]:
    """frames/s of the raw decode, the reader and the Ray reader over the dataset at `url`."""
    fps = {}
    for name, fn in (
        ("raw", raw_decoder(fmt, url)),
        ("reader", partial(reader, url, fmt)),
        ("ray", partial(ray_reader, url, fmt)),
    ):
        fn()  # warm up: page cache, imports, Ray workers
        frames, seconds = timed(fn)
        if frames != total:
            raise RuntimeError(f"{fmt} {name}: read {frames} frames, wrote {total}")
        fps[name] = frames / seconds
    return fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    registry = load_registry()
    episodes = procedural_episodes(DATASET, args.episodes, args.steps, args.size, seed=3)
    total = args.episodes * args.steps
    cluster.connect(local=cluster.LocalClusterConfig(num_cpus=2))
    print(f"{args.episodes} episodes x {args.steps} frames at {args.size}px ({DATASET})")
    print(
        f"{'format':<10}{'reader f/s':>12}{'ray f/s':>10}{'raw f/s':>10}"
        f"{'reader/raw':>12}{'ray/raw':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            url = os.path.join(tmp, fmt + (".hdf5" if fmt == "robomimic" else ""))
            formats.write_episodes(episodes, url, fmt, registry)
            fps = measure(fmt, url, total)
            print(
                f"{fmt:<10}{fps['reader']:>12.0f}{fps['ray']:>10.0f}{fps['raw']:>10.0f}"
                f"{fps['reader'] / fps['raw']:>12.2f}{fps['ray'] / fps['raw']:>9.2f}"
            )
    cluster.shutdown()


if __name__ == "__main__":
    main()
