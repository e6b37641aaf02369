"""HMA checkpoints: safetensors weights + the ModelConfig as JSON, on a local path or s3://.

    <dir>/model.safetensors   every tensor of the model's state dict (no code, no pickle)
    <dir>/config.json         {"format": "hma-model", "version", "config": ModelConfig fields}

config.json is written last, so a directory without it is an unfinished write. Loading
rebuilds the model from the config and refuses any tensor whose name, shape or dtype differs,
with a CheckpointError naming the file and the tensor.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import save as save_tensor_bytes

from hma import storage
from hma.errors import HmaError
from hma.model.config import ModelConfig
from hma.model.hma import HMA
from hma.tokenize.checkpoint import read_tensors

FORMAT = "hma-model"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MAX_LISTED = 5  # tensor names listed in a mismatch message


class CheckpointError(HmaError, ValueError):
    """A model checkpoint is missing, damaged, or does not match the model."""


def save_model(model: HMA, url: str) -> None:
    """Write `model`'s weights and config to directory `url`."""
    save_model_state(model.state_dict(), model.config.model_dump(mode="json"), url)


def save_model_state(state: dict[str, torch.Tensor], config: dict[str, Any], url: str) -> None:
    """save_model from a state dict and a JSON config (under FSDP2 the full weights exist only
    as a gathered state dict, not as a module)."""
    storage.makedirs(url)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with storage.open_file(storage.join(url, WEIGHTS_FILE), "wb") as f:
        f.write(save_tensor_bytes(tensors, metadata={"format": FORMAT}))
    record = {"format": FORMAT, "version": VERSION, "config": config}
    with storage.open_file(storage.join(url, CONFIG_FILE), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)


def read_config(url: str) -> ModelConfig:
    """The ModelConfig recorded in the checkpoint at `url`."""
    path = storage.join(url, CONFIG_FILE)
    record = storage.read_versioned_json(
        path, FORMAT, VERSION, CheckpointError, "missing; not an HMA model checkpoint"
    )
    try:
        return ModelConfig(**record.get("config", {}))
    except ValidationError as e:
        raise CheckpointError(f"{path}: invalid model config: {e}") from None


def load_model(url: str, device: str | torch.device = "cpu") -> HMA:
    """Rebuild the model recorded at `url` and load its weights."""
    model = HMA(read_config(url))
    load_weights(model, url)
    return model.to(device)


def load_weights(model: HMA, url: str, strict: bool = True) -> None:
    """Load the weights at `url` into `model`. strict=False allows tensors missing from the
    file (e.g. the stem/head of a dataset added after pre-training), never a shape mismatch."""
    path = storage.join(url, WEIGHTS_FILE)
    tensors = read_tensors(path, CheckpointError)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected or (strict and missing):
        raise CheckpointError(
            f"{path}: tensors do not match the model: missing {_listed(missing)}, unexpected "
            f"{_listed(unexpected)}"
        )
    for name, got in sorted(tensors.items()):
        ref = expected[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise CheckpointError(
                f"{path}: tensor {name!r} is {got.dtype} {list(got.shape)}, the model needs "
                f"{ref.dtype} {list(ref.shape)}"
            )
    model.load_state_dict(tensors, strict=strict)


def _listed(names: list[str]) -> str:
    return f"{names[:MAX_LISTED]}{' ...' if len(names) > MAX_LISTED else ''}"
