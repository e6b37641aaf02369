"""Simulator speed and expert quality: frames/s per env at 64 and 128 px, expert success rates.

frames/s counts expert rollout steps (policy + physics + render) per second in this process.
Success is the share of seeds whose expert episode succeeds (noise 0). The machine is shared, so
compare envs within one run rather than against figures from another day.

    python -m benchmarks.sims [--episodes 10] [--envs tabletop,pusht,...]
"""

from __future__ import annotations

import argparse
import time

from hma.envs import ENVS, make_env
from hma.envs.rollout import rollout

SIZES = (64, 128)


def measure(name: str, size: int, episodes: int) -> tuple[float, float]:
    """(frames per second, success rate) over `episodes` seeded expert rollouts."""
    env = make_env(name, size)
    try:
        rollout(env, seed=10_000)  # warm up: first render contexts, JIT caches
        frames, successes = 0, 0
        start = time.perf_counter()
        for seed in range(episodes):
            ep = rollout(env, seed)
            frames += len(ep)
            successes += bool(ep.success)
        return frames / (time.perf_counter() - start), successes / episodes
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=10, help="seeds per env and size")
    parser.add_argument("--envs", default=",".join(ENVS), help="comma-separated env names")
    args = parser.parse_args()
    print(f"{'env':<22}" + "".join(f"{f'f/s @{s}px':>13}" for s in SIZES) + f"{'success':>10}")
    for name in args.envs.split(","):
        rates, success = [], 0.0
        for size in SIZES:
            fps, success_at_size = measure(name, size, args.episodes)
            rates.append(fps)
            success = success_at_size if size == SIZES[0] else success
        cells = "".join(f"{r:>13.0f}" for r in rates)
        print(f"{name:<22}{cells}{success:>9.0%}  ({args.episodes} seeds)")


if __name__ == "__main__":
    main()
