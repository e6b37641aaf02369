"""Behaviour-cloning samples from Episode sources (any format, local or s3://).

    N samples (one per raw step), R image size, S state dim, K chunk, A action dim

    frames   uint8   [N,R,R,3]   the observation at step t, area-resized to R
    state    float32 [N,S]       proprioception at step t (S = 0 when the data has none)
    chunks   float32 [N,K,A]     raw actions t .. t+K-1; past the episode's end the last repeats

Every step is a sample, not only the steps the policy decides at: at evaluation a chunk starts
wherever the last one ended. Demonstrations are a few hundred episodes, so the samples are held
in memory on the training worker (R = 64: 12 KiB a frame).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from hma.config import StorageURL, StrictModel
from hma.episodes import Episode
from hma.errors import ConfigError
from hma.stats import ActionStats
from hma.vision import resize_uint8


class PolicySource(StrictModel):
    """Demonstrations: an episode source of one dataset."""

    url: StorageURL
    format: str | None = Field(default=None, description="default: detected from the files")
    dataset: str | None = Field(default=None, description="registry name, if the source lacks it")


@dataclass
class Samples:
    frames: np.ndarray
    state: np.ndarray
    chunks: np.ndarray
    episodes: int
    frame_size: tuple[int, int] = (0, 0)  # (H, W) of the episodes' frames before resizing

    def __len__(self) -> int:
        return len(self.frames)


def chunks_of(actions: np.ndarray, chunk: int) -> np.ndarray:
    """raw actions [T,A] -> [T,K,A]: row t holds actions t..t+K-1, the last one repeated past
    the end (the policy's last decision of an episode still commits to a whole chunk)."""
    index = np.minimum(np.arange(len(actions))[:, None] + np.arange(chunk), len(actions) - 1)
    return actions[index]  # (T, K, A)


def collect(
    episodes: Iterable[Episode], image_size: int, chunk: int, split: str, only_success: bool
) -> Samples:
    """The samples of every episode of `split` (successful ones only, if asked and known)."""
    frames, states, chunks, count, sizes = [], [], [], 0, set()
    for ep in episodes:
        if ep.split != split or (only_success and ep.success is False):
            continue
        sizes.add(tuple(int(v) for v in ep.frames.shape[1:3]))
        frames.append(resize_uint8(ep.frames, image_size))
        state = ep.state if ep.state is not None else np.zeros((len(ep), 0), np.float32)
        states.append(state.astype(np.float32))
        chunks.append(chunks_of(ep.actions.astype(np.float32), chunk))
        count += 1
    if not count:
        return Samples(
            np.zeros((0, image_size, image_size, 3), np.uint8),
            np.zeros((0, 0), np.float32),
            np.zeros((0, chunk, 0), np.float32),
            0,
        )
    widths = {s.shape[1] for s in states}
    if len(widths) > 1:
        raise ConfigError(f"the demonstrations' state widths differ: {sorted(widths)}")
    if len(sizes) > 1:
        raise ConfigError(f"the demonstrations' frame sizes differ: {sorted(sizes)}")
    frames_all, states_all = np.concatenate(frames), np.concatenate(states)
    return Samples(frames_all, states_all, np.concatenate(chunks), count, sizes.pop())


@dataclass
class StateStats:
    """Per-dimension mean and std of proprioception (std floored like actions')."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, state: np.ndarray) -> StateStats:
        if state.shape[1] == 0:
            return cls(np.zeros(0, np.float32), np.ones(0, np.float32))
        return cls(state.mean(0), np.maximum(state.std(0), 1e-3))

    def normalise(self, state: np.ndarray) -> np.ndarray:
        return ((state - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> StateStats:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


def action_stats(samples: Samples) -> ActionStats:
    """Statistics of the raw actions the samples hold (each step once: first of each chunk)."""
    return ActionStats.of(samples.chunks[:, 0])
