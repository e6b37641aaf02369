"""Procedural episodes: a block drifting over a colour gradient, no physics, no simulator.

For format tests, tokenizer tests and benchmarks that need valid episodes of any registry
dataset (its action dimension), any length and any frame size in milliseconds.

    T steps, S x S frames, A action dim of the dataset
"""

from __future__ import annotations

import numpy as np

from hma.episodes import Episode, load_registry

VAL_EVERY = 10  # episode i is in the val split when i % VAL_EVERY == VAL_EVERY - 1
STATE_DIM = 8


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
                split="val" if i % VAL_EVERY == VAL_EVERY - 1 else "train",
                frames=moving_block_frames(steps, size, seed * 1000 + i),
                actions=rng.uniform(-1, 1, (steps, spec.action_dim)).astype(np.float32),
                state=rng.normal(0, 1, (steps, STATE_DIM)).astype(np.float32),
                hz=spec.hz,
                instruction=f"move the red block (episode {i})",
                success=bool(rng.random() < 0.7),
            )
        )
    return out
