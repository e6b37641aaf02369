"""Policy checkpoints (file rules, errors and fingerprints: hma.checkpoint).

    <dir>/policy.safetensors   the network's weights
    <dir>/policy.json          {"format": "hma-policy", "version", config, dataset, stride,
                                action_dim, chunk, state_dim, action_stats, state_stats,
                                frame_size (of the demonstrations), fingerprint, step, losses}

A training run keeps a checkpoint every `checkpoint_every` steps in Ray Train's `checkpoint_*`
directories, so one run holds policies of graded quality (as the paper's Table 5 takes them).
`DIR@STEP` names the checkpoint of step STEP in run directory DIR; plain `DIR` its newest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from hma import checkpoint, storage
from hma.checkpoint import CheckpointError

FORMAT = "hma-policy"
VERSION = 1
WEIGHTS_FILE = "policy.safetensors"
RECORD_FILE = "policy.json"
LAYOUT = checkpoint.Layout("policy", FORMAT, VERSION, WEIGHTS_FILE, RECORD_FILE)
# what the fingerprint covers besides the weights: everything that changes what the policy does
IDENTITY = (
    "config",
    "dataset",
    "stride",
    "action_dim",
    "chunk",
    "state_dim",
    "action_stats",
    "state_stats",
    "frame_size",
)
AT_STEP = re.compile(r"(?P<url>.+)@(?P<step>\d+)")


def save(url: str, state: dict[str, torch.Tensor], record: dict[str, Any]) -> str:
    """Write a policy checkpoint; `record` holds the IDENTITY keys and any extras (step, losses)."""
    identity = {k: record[k] for k in IDENTITY}
    extra = {k: v for k, v in record.items() if k not in IDENTITY}
    return checkpoint.save_module(url, LAYOUT, state, identity, extra)


def load(url: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(record, verified tensors) of the policy checkpoint at `url`."""
    return checkpoint.load_module(url, LAYOUT, IDENTITY)


@dataclass(frozen=True)
class Saved:
    url: str
    step: int


def run_checkpoints(url: str) -> list[Saved]:
    """The policy checkpoints of run directory `url` (or `url` itself), by step."""
    if storage.exists(storage.join(url, RECORD_FILE)):
        return [Saved(url, int(_record(url)["step"]))]
    if not storage.isdir(url):
        return []
    fs, path = storage.filesystem(url)
    fs.invalidate_cache(path)
    found = []
    for child in sorted(fs.ls(path, detail=False)):
        name = child.rstrip("/").rsplit("/", 1)[-1]
        child_url = storage.join(url, name)
        if checkpoint.RUN_CHECKPOINT.fullmatch(name) and storage.exists(
            storage.join(child_url, RECORD_FILE)
        ):
            found.append(Saved(child_url, int(_record(child_url)["step"])))
    return sorted(found, key=lambda s: s.step)


def resolve(spec: str) -> str:
    """The checkpoint `spec` names: DIR (a checkpoint, or a run's newest) or DIR@STEP."""
    match = AT_STEP.fullmatch(spec)
    url, step = (match["url"], int(match["step"])) if match else (spec, None)
    saved = run_checkpoints(url)
    if not saved:
        raise CheckpointError(f"{url}: not a policy checkpoint or run (no {RECORD_FILE} found)")
    if step is None:
        return saved[-1].url
    for s in saved:
        if s.step == step:
            return s.url
    steps = ", ".join(str(s.step) for s in saved)
    raise CheckpointError(f"{url}: no checkpoint at step {step} (steps saved: {steps})")


def _record(url: str) -> dict[str, Any]:
    path = storage.join(url, RECORD_FILE)
    return checkpoint.read_record(path, FORMAT, VERSION, "missing; not a policy checkpoint")
