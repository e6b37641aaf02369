"""The Episode schema shared by every stage, and the dataset registry.

An Episode is one trajectory of one dataset. Between stages it travels as a Ray Data row (Arrow):
`Episode.to_row()` / `Episode.from_row()` convert, so the row layout is defined in one place.

    T steps, H x W frames, A action dim (fixed per dataset), S state dim
    frames   uint8   [T, H, W, 3]
    actions  float32 [T, A]  raw (un-normalised) units
    state    float32 [T, S]  optional proprioception (S = 0 when absent)
    extras   per-step arrays [T, ...] a format keeps for a faithful round trip (e.g. robomimic
             simulator states, rewards, Language Table effector positions)
    meta     JSON-able episode-level facts (e.g. robomimic model_file, provenance of synthetic data)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from hma.config import StrictModel, read_yaml, validate
from hma.errors import EpisodeError

SPLITS = ("train", "val")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
REGISTRY_ENV = "HMA_REGISTRY"


@dataclass
class Episode:
    dataset: str
    episode_id: str
    frames: np.ndarray
    actions: np.ndarray
    hz: float
    split: str = "train"
    state: np.ndarray | None = None
    instruction: str = ""
    success: bool | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def to_row(self) -> dict[str, Any]:
        """The Ray Data row. Optional parts become fixed-type columns so every row has one schema."""
        steps = len(self)
        state = self.state if self.state is not None else np.zeros((steps, 0), np.float32)
        return {
            "dataset": self.dataset,
            "episode_id": self.episode_id,
            "split": self.split,
            "frames": np.ascontiguousarray(self.frames, dtype=np.uint8),
            "actions": np.ascontiguousarray(self.actions, dtype=np.float32),
            "state": np.ascontiguousarray(state, dtype=np.float32),
            "hz": float(self.hz),
            "instruction": self.instruction,
            # Arrow has no nullable bool in tensor rows everywhere; -1 = unknown.
            "success": -1 if self.success is None else int(bool(self.success)),
            "extras": _pack_arrays(self.extras),
            "meta": json.dumps(self.meta, sort_keys=True),
        }

    @classmethod
    def from_row(cls, row: Any) -> Episode:
        state = np.asarray(row["state"], dtype=np.float32)
        success = int(row["success"])
        return cls(
            dataset=str(row["dataset"]),
            episode_id=str(row["episode_id"]),
            split=str(row["split"]),
            frames=np.asarray(row["frames"], dtype=np.uint8),
            actions=np.asarray(row["actions"], dtype=np.float32),
            state=state if state.shape[-1] > 0 else None,
            hz=float(row["hz"]),
            instruction=str(row["instruction"]),
            success=None if success < 0 else bool(success),
            extras=_unpack_arrays(row["extras"]),
            meta=json.loads(row["meta"]),
        )


def _pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    # safetensors, not pickle: rows may be spilled to disk and read back by other processes.
    return save_tensors({k: np.ascontiguousarray(v) for k, v in arrays.items()}) if arrays else b""


def _unpack_arrays(blob: bytes) -> dict[str, np.ndarray]:
    return dict(load_tensors(bytes(blob))) if blob else {}


# ---------------------------------------------------------------------------------------------
# Registry


class DatasetSpec(StrictModel):
    """One registry entry: the facts about a dataset that no episode file states reliably."""

    embodiment: str
    action_dim: int = Field(gt=0)
    hz: float = Field(gt=0)
    camera: str
    frame_size: tuple[int, int]
    stride: int = Field(default=1, gt=0)
    description: str = ""

    @property
    def image_key(self) -> str:
        """robomimic's observation key for this dataset's camera."""
        return f"{self.camera}_image"


# ---------------------------------------------------------------------------------------------
# Strides: a dataset's `stride` s maps its control rate to the video rate. Kept frame f is raw
# step f*s, and its action chunk holds the s raw actions taken from kept frame f to f+1; a
# frame is kept only with its whole chunk, so an episode of T steps keeps F = T // s frames.
#
#     T raw steps, F kept frames, s stride, A action dim


def kept_steps(frames: int, stride: int) -> np.ndarray:
    """Raw step of each of the first `frames` kept frames: 0, s, 2s, ... ([frames] int64)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return np.arange(frames, dtype=np.int64) * stride


def keep_frames(steps: int, stride: int) -> np.ndarray:
    """Indices of the frames kept from an episode of `steps` steps: 0, s, 2s, ... (F = T // s)."""
    return kept_steps(steps // max(stride, 1), stride)


def video_steps(steps: int, stride: int) -> np.ndarray:
    """Every s-th step of an episode of `steps` steps, the last one included even without a whole
    chunk after it: the frames a camera at the video rate records, for judging what an episode
    shows (its outcome is in its last frames)."""
    return kept_steps(-(-steps // max(stride, 1)), stride)


def judged_frames(frames: np.ndarray, stride: int) -> np.ndarray:
    """The frames [T,H,W,3] a learned simulator started from frame 0 renders of this episode
    (every s-th after the first, its last one included): what a success classifier judges.
    Empty for an episode of at most `stride` steps."""
    return frames[video_steps(len(frames), stride)[1:]]


def chunk_actions(actions: np.ndarray, stride: int) -> np.ndarray:
    """Raw actions [T,A] -> [F,s,A]: row f holds the s actions taken between kept frames f and
    f+1; the trailing T - F*s steps are dropped with the frames they would lead to."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim != 2:
        raise ValueError(f"actions must be [T,A], got shape {list(actions.shape)}")
    frames = actions.shape[0] // stride
    return actions[: frames * stride].reshape(frames, stride, actions.shape[1])  # (F, s, A)


def hold_frames(frames: np.ndarray, stride: int) -> np.ndarray:
    """The inverse of keep_frames for generated video: kept frames [F,...] -> raw steps
    [F*s,...], each frame held (zero-order) for the s raw steps of its chunk."""
    return np.repeat(frames, stride, axis=0)  # (F*s, ...)


def unchunk_actions(chunks: np.ndarray) -> np.ndarray:
    """The inverse of chunk_actions: [...,F,s,A] -> raw actions [...,F*s,A]."""
    *lead, frames, stride, dim = chunks.shape
    return np.ascontiguousarray(chunks.reshape(*lead, frames * stride, dim), np.float32)


class Registry(StrictModel):
    datasets: dict[str, DatasetSpec]

    @field_validator("datasets")
    @classmethod
    def _names(cls, value: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        # names become file and directory names (RLDS shards, LeRobot paths, store groups)
        for name, spec in value.items():
            for what, text in (("dataset name", name), ("camera", spec.camera)):
                if not SAFE_NAME.fullmatch(text) or ".." in text:
                    raise ValueError(
                        f"{what} {text!r} is not a safe name (letters, digits, '_', '-', '.'; "
                        "starting with a letter or digit, no '..')"
                    )
        return value

    def get(self, name: str, episode_id: str = "") -> DatasetSpec:
        try:
            return self.datasets[name]
        except KeyError:
            known = ", ".join(sorted(self.datasets))
            raise EpisodeError(
                name, episode_id, "dataset", f"unknown dataset (registry has: {known})"
            ) from None

    def merged(self, other: Registry) -> Registry:
        return Registry(datasets={**self.datasets, **other.datasets})


def load_registry(extra: list[str] | tuple[str, ...] = ()) -> Registry:
    """The built-in registry, extended by files in $HMA_REGISTRY (comma-separated) and `extra`."""
    urls = [u for u in os.environ.get(REGISTRY_ENV, "").split(",") if u] + list(extra)
    return _load_registry(tuple(urls))


def extend_registry(urls: list[str] | tuple[str, ...]) -> Registry:
    """Add registry files for the rest of this process: they join $HMA_REGISTRY, so every later
    `load_registry()` (format readers included) and Ray workers started afterwards see them."""
    local = [u if "://" in u else os.path.abspath(u) for u in urls]
    current = [u for u in os.environ.get(REGISTRY_ENV, "").split(",") if u]
    os.environ[REGISTRY_ENV] = ",".join(current + [u for u in local if u not in current])
    return load_registry()


@cache
def _load_registry(urls: tuple[str, ...]) -> Registry:
    builtin = resources.files("hma").joinpath("registry.yaml")
    registry = validate(Registry, read_yaml(str(builtin)), str(builtin))
    for url in urls:
        registry = registry.merged(validate(Registry, read_yaml(url), url))
    return registry


# ---------------------------------------------------------------------------------------------
# Validation


def validate_episode(ep: Episode, registry: Registry) -> DatasetSpec:
    """Check `ep` against the schema and its registry entry; raise EpisodeError naming the field."""

    def fail(field_name: str, problem: str) -> EpisodeError:
        return EpisodeError(ep.dataset, ep.episode_id, field_name, problem)

    spec = registry.get(ep.dataset, ep.episode_id)
    if not ep.episode_id:
        raise fail("episode_id", "empty episode id")
    if ep.split not in SPLITS:
        raise fail("split", f"must be one of {SPLITS}, got {ep.split!r}")
    frames, actions = ep.frames, ep.actions
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise fail("frames", f"expected uint8 [T,H,W,3], got {frames.dtype} {list(frames.shape)}")
    steps = frames.shape[0]
    if steps == 0:
        raise fail("frames", "episode has no frames")
    if actions.ndim != 2:
        raise fail("actions", f"expected [T,A], got shape {list(actions.shape)}")
    if actions.shape[1] != spec.action_dim:
        raise fail(
            "actions",
            f"action dim {actions.shape[1]} but registry declares {spec.action_dim}",
        )
    if actions.shape[0] != steps:
        raise fail("actions", f"length {actions.shape[0]} != {steps} frames")
    bad = ~np.isfinite(actions)
    if bad.any():
        t, a = np.argwhere(bad)[0]
        raise fail("actions", f"{int(bad.sum())} non-finite values (first at step {t}, dim {a})")
    if ep.state is not None:
        if ep.state.ndim != 2 or ep.state.shape[0] != steps:
            raise fail("state", f"expected [{steps},S], got shape {list(ep.state.shape)}")
        if not np.isfinite(ep.state).all():
            raise fail("state", "non-finite values")
    for key, arr in ep.extras.items():
        if arr.shape[:1] != (steps,):
            raise fail(f"extras.{key}", f"length {arr.shape[:1]} != {steps} frames")
    if ep.hz <= 0:
        raise fail("hz", f"control rate must be positive, got {ep.hz}")
    return spec
