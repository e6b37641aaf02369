"""What decides an `hma-generate` run: its config, its plan, and its error type.

The driver (synthesize.py) makes the plan; the batch runner's actors (batch_runner.py) receive
config and plan and roll out their batches; neither imports the other's module for these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from hma.config import StrictModel
from hma.errors import HmaError
from hma.generate import synthetic as syn

ActionsMode = Literal["model", "replay", "perturb"]
SCHEMA_FORMATS = ("rlds", "lerobot")  # formats that need one step schema for every episode


class GenerateConfig(StrictModel):
    """Everything that decides what `hma-generate` writes (and whether a staged run resumes)."""

    checkpoint: str = Field(description="pretraining checkpoint dir (or run dir with checkpoint_*)")
    source: str = Field(description="SRC dataset URL: robomimic HDF5, RLDS dir or LeRobot dir")
    out: str = Field(description="DST URL (must not exist); written in the source's format")
    n: int = Field(90, ge=0, description="synthetic episodes")
    mix: int = Field(10, ge=0, description="real episodes copied unchanged from SRC's train split")
    actions: ActionsMode = Field(
        "model", description="model: proposed (full dynamics); replay/perturb: real ones"
    )
    horizon: int | None = Field(
        None, ge=1, description="new kept frames per episode (default: the prompt episode's)"
    )
    prompt_frames: int = Field(2, ge=1, description="real kept frames the rollout starts from")
    seed: int = 0
    workers: int = Field(1, ge=0, description="Ray actors (one model replica each); 0: in-process")
    batch_size: int = Field(4, ge=1, description="synthetic episodes per batched rollout")
    steps: int = Field(2, ge=1, description="MaskGIT passes per frame")
    temperature: float = Field(1.0, ge=0)
    perturb_scale: float = Field(
        0.1, ge=0, description="perturb: noise std as a share of the real std per dimension"
    )
    valid_fraction: float = Field(0.1, ge=0, lt=1, description="synthetic episodes put in valid")
    attempts: int = Field(3, ge=1, description="tries per synthetic episode before giving up")
    range_tolerance: float = Field(
        0.1, ge=0, description="actions may exceed the real per-dim range by this share of it"
    )
    min_std_ratio: float = Field(
        0.25, ge=0, description="refuse a run whose action std per dim is below this x real"
    )
    require_keys: list[str] = Field(
        default_factory=list,
        description="per-step keys every synthetic episode must carry (e.g. robot0_eef_pos, "
        "obs/object); refuse to write if one cannot be produced",
    )
    success_model: str | None = Field(
        None,
        description="success classifier dir (hma simulate train-success) that judges each "
        "synthetic episode's success and reward; default: the checkpoint's own success/ if any",
    )
    format: str | None = Field(None, description="source format (default: detected)")
    dataset_name: str | None = Field(None, description="registry dataset, where SRC lacks it")
    tokenizer: str | None = Field(None, description="tokenizer URL if moved since training")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpus_per_worker: float = Field(1.0, gt=0)
    torch_threads: int | None = Field(None, ge=1)


class GenerateError(HmaError, ValueError):
    """A generation run that cannot or must not produce its output."""


@dataclass
class Plan:
    fmt: str
    dataset: str
    train: list[dict[str, Any]]  # train-split refs of SRC
    real: list[dict[str, Any]]  # the `mix` real episodes, in source order
    seed: int
    valid: set[int]  # synthetic indices in the valid split
    run: dict[str, Any]  # what the staging dir records (resume must match)
    provenance: syn.Provenance
    skipped_real: list[dict[str, str]] = field(default_factory=list)  # invalid, not copied

    def prompt(self, index: int, attempt: int) -> dict[str, Any]:
        """Episode i's prompt at this attempt: a seeded permutation of the train split per
        attempt, so a retry starts from another episode (where the split has several)."""
        order = np.random.default_rng([self.seed, 1, attempt]).permutation(len(self.train))
        return self.train[int(order[index % len(order)])]
