"""`make demo`: the longest end-to-end path the project supports so far, on local Ray and local files.

Today that path is the data floor: episodes of several robots are written as robomimic HDF5, then
converted through every format on Ray (robomimic -> RLDS -> LeRobot v3 -> mp4 manifest ->
robomimic), each hop checked against the original and summarised, ending in an HTML report with
thumbnail strips. Until the simulators land (hma.envs), the episodes come from `procedural_episodes`:
a block drifting over a gradient with random-walk actions — clearly synthetic, but real arrays in
real files that the ecosystem's tools open.
"""

from __future__ import annotations

import argparse
import html
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from hma import formats
from hma.episodes import Episode, load_registry
from hma.pipeline import cluster
from hma.pipeline.convert import convert
from hma.pipeline.describe import SourceSummary, describe

DEMO_DATASETS = ("robosuite_lift", "pusht", "metaworld_reach")
CHAIN = ("robomimic", "rlds", "lerobot", "video", "robomimic")
SUFFIX = {"robomimic": ".hdf5", "rlds": "", "lerobot": "", "video": ""}


def moving_block_frames(steps: int, size: int, seed: int) -> np.ndarray:
    """uint8 [steps, size, size, 3]: a red block on a random walk over a colour gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 96)], -1)
    frames = np.empty((steps, size, size, 3), np.uint8)
    pos = rng.uniform(0.2, 0.8, 2)
    half = max(2, size // 8)
    for t in range(steps):
        pos = np.clip(pos + rng.normal(0, 0.03, 2), 0.1, 0.9)
        frame = base.copy()
        cy, cx = (pos * size).astype(int)
        frame[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half] = (230, 40, 40)
        frames[t] = frame
    return frames


def procedural_episodes(
    dataset: str, count: int, steps: int, size: int, seed: int
) -> list[Episode]:
    """`count` valid episodes of `dataset` (its registry action dim), 10% in the val split."""
    spec = load_registry().get(dataset)
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        out.append(
            Episode(
                dataset=dataset,
                episode_id=f"{dataset}-{seed}-{i}",
                split="val" if i % 10 == 9 else "train",
                frames=moving_block_frames(steps, size, seed * 1000 + i),
                actions=rng.uniform(-1, 1, (steps, spec.action_dim)).astype(np.float32),
                state=rng.normal(0, 1, (steps, 8)).astype(np.float32),
                hz=spec.hz,
                instruction=f"move the red block (episode {i})",
                success=bool(rng.random() < 0.7),
            )
        )
    return out


@dataclass
class Hop:
    fmt: str
    url: str
    seconds: float
    summary: SourceSummary
    max_action_error: float
    mean_frame_error: float


def compare(original: dict[str, Episode], url: str, fmt: str) -> tuple[float, float]:
    """Largest action difference and mean absolute frame difference over all episodes."""
    act, pix, n = 0.0, 0.0, 0
    for ep in formats.iter_episodes(url, fmt):
        ref = original[ep.episode_id]
        act = max(act, float(np.abs(ep.actions - ref.actions).max()))
        pix += float(np.abs(ep.frames.astype(np.int16) - ref.frames).mean())
        n += 1
    if n != len(original):
        raise RuntimeError(f"{url}: read back {n} episodes, wrote {len(original)}")
    return act, pix / n


def run(out: str, episodes_per_dataset: int, steps: int, size: int) -> str:
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    registry = load_registry()
    cluster.connect()
    hops: list[Hop] = []
    for dataset in DEMO_DATASETS:
        original = procedural_episodes(dataset, episodes_per_dataset, steps, size, seed=1)
        by_id = {ep.episode_id: ep for ep in original}
        url = os.path.join(out, f"{dataset}-0-{CHAIN[0]}{SUFFIX[CHAIN[0]]}")
        formats.write_episodes(original, url, CHAIN[0], registry)
        for i, fmt in enumerate(CHAIN[1:], start=1):
            dst = os.path.join(out, f"{dataset}-{i}-{fmt}{SUFFIX[fmt]}")
            start = time.perf_counter()
            result = convert(url, dst, fmt, registry=registry)
            seconds = time.perf_counter() - start
            if not result.conserved or result.rejected:
                raise RuntimeError("\n".join(result.lines()))
            png = os.path.join(out, f"{dataset}-{i}-{fmt}.png")
            summary = describe(dst, fmt, strip_url=png, strip_episodes=4, registry=registry)
            act, pix = compare(by_id, dst, fmt)
            hops.append(Hop(fmt, dst, seconds, summary, act, pix))
            print(f"{dataset}: {fmt:<9} {seconds:5.1f}s  max|da| {act:.2e}  mean|dframe| {pix:.2f}")
            url = dst
    report = os.path.join(out, "report.html")
    with open(report, "w") as f:
        f.write(render(hops))
    return report


def render(hops: list[Hop]) -> str:
    rows = []
    for hop in hops:
        for name, part in hop.summary.datasets.items():
            episodes = sum(part.episodes.values())
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{hop.fmt}</td><td>{episodes}</td>"
                f"<td>{part.frames}</td><td>{hop.seconds:.1f}</td>"
                f"<td>{hop.max_action_error:.1e}</td><td>{hop.mean_frame_error:.2f}</td>"
                f"<td><img src='{os.path.basename(hop.summary.strip_url or '')}'></td></tr>"
            )
    return (
        "<!doctype html><meta charset='utf-8'><title>HMA demo</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        "img{height:96px}</style>"
        "<h1>HMA demo: episodes through every format</h1>"
        f"<p>Chain: {' &rarr; '.join(CHAIN)}, each hop a Ray conversion from the previous one. "
        "Errors compare with the original episodes: actions must match exactly; frames within "
        "codec tolerance (mp4 hops are lossy).</p>"
        "<table><tr><th>dataset</th><th>format</th><th>episodes</th><th>frames</th>"
        "<th>convert s</th><th>max |&Delta;action|</th><th>mean |&Delta;pixel|</th>"
        "<th>thumbnails</th></tr>" + "".join(rows) + "</table>"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hma.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo-out")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per dataset")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    start = time.perf_counter()
    report = run(args.out, args.episodes, args.steps, args.size)
    print(f"demo finished in {time.perf_counter() - start:.0f}s; open {os.path.abspath(report)}")


if __name__ == "__main__":
    main()
