"""Frames for tokenizer training and evaluation: a Ray Data stream from any Episode source.

    source(s) ──read_episodes──▶ Episode rows ──keep split, sample, resize──▶ frame rows

A frame row is {"frame": uint8 [H,W,3], "dataset": str, "episode_id": str}. Rows of rejected
episodes (non-empty `error`) and of the other split are dropped here, and counted nowhere else:
tokenizer training needs pixels, not bookkeeping (conversion is where episodes are accounted).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from pydantic import Field

from hma import formats
from hma.config import StorageURL, StrictModel
from hma.episodes import SPLITS, Registry, load_registry
from hma.errors import ConfigError
from hma.frames import resize


class FrameSource(StrictModel):
    """One Episode source (any format `hma formats list` names), local path or s3://."""

    url: StorageURL
    format: str | None = Field(default=None, description="default: detected from the files")
    dataset: str | None = Field(default=None, description="registry name, if the source lacks it")


class DataConfig(StrictModel):
    sources: list[FrameSource] = Field(min_length=1)
    frame_size: tuple[int, int] = Field(
        default=(64, 64), description="(H, W) every frame is resized to (bilinear, antialiased)"
    )
    frames_per_episode: int = Field(
        default=0, ge=0, description="0: every frame; else a seeded random sample per episode"
    )
    shuffle_buffer: int = Field(default=2048, ge=0, description="frames in the local shuffle")
    materialize: bool = Field(
        default=True,
        description="decode the frames once into the object store (small data); else stream "
        "from the source on every epoch",
    )


def episode_frames(
    batch: dict[str, Any], split: str, size: tuple[int, int], per_episode: int, seed: int
) -> dict[str, Any]:
    """Episode rows -> frame rows of one split: sampled, resized to `size` (H, W)."""
    frames, datasets, episodes = [], [], []
    for i in range(len(batch["episode_id"])):
        if batch["error"][i] or batch["split"][i] != split:
            continue
        clip = np.asarray(batch["frames"][i], dtype=np.uint8)  # (T, H, W, 3)
        episode_id = str(batch["episode_id"][i])
        if per_episode and len(clip) > per_episode:
            # Seed by episode id: the same episode gives the same sample on every worker and run.
            rng = np.random.default_rng([seed, zlib.crc32(episode_id.encode())])
            clip = clip[np.sort(rng.choice(len(clip), per_episode, replace=False))]
        frames.append(resize(clip, size))
        datasets += [str(batch["dataset"][i])] * len(clip)
        episodes += [episode_id] * len(clip)
    h, w = size
    return {
        "frame": np.concatenate(frames) if frames else np.zeros((0, h, w, 3), np.uint8),
        "dataset": np.asarray(datasets, dtype=object),
        "episode_id": np.asarray(episodes, dtype=object),
    }


def frame_dataset(
    config: DataConfig, split: str, seed: int = 0, registry: Registry | None = None
):  # -> ray.data.Dataset
    """A Ray Data dataset of frame rows of `split` from every source in `config`."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    registry = registry or load_registry()
    parts = []
    for source in config.sources:
        episodes = formats.read_episodes(source.url, source.format, source.dataset, registry)
        parts.append(
            episodes.map_batches(
                episode_frames,
                batch_size=None,  # one block = one episode (read_episodes makes one per ref)
                batch_format="numpy",
                fn_kwargs={
                    "split": split,
                    "size": tuple(config.frame_size),
                    "per_episode": config.frames_per_episode,
                    "seed": seed,
                },
            )
        )
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return ds.materialize() if config.materialize else ds
