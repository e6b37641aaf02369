"""HMA checkpoints, on a local path or s3:// (file rules and errors: hma.checkpoint).

A model directory: the weights and the ModelConfig, all `load_model` needs.

    <model>/model.safetensors   every tensor of the model's state dict (no code, no pickle)
    <model>/config.json         {"format": "hma-model", "version", "config": ModelConfig fields,
                                 "fingerprint": sha256 of config and weights}

A pretraining checkpoint, what `hma pretrain` writes and generation loads: a model directory plus
what the model's tokens and actions mean, and the state to resume training exactly.

    <dir>/model/                        the model directory above
    <dir>/trainer_state.safetensors     optimizer moments, scheduler, per-rank RNG states
          + trainer_state.json
    <dir>/pretrain.json                 written last: format, step, seconds, sampler position,
                                        tokenizer (kind, fingerprint, config, url, grid), per
                                        dataset its registry entry, stride, action_dim, action
                                        stats and mixing weight, and the run's config

Loading checks the weights against the recorded fingerprint (flipped or swapped bytes are refused,
naming the file), rebuilds the model from its config and refuses any tensor whose name, shape or
dtype differs. A model directory written before fingerprints were recorded loads with a warning. A pretraining checkpoint used with a token store of another tokenizer is refused, naming
both fingerprints: the model's codes would mean nothing for another tokenizer's tokens.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from pydantic import ValidationError

from hma import checkpoint, storage
from hma.checkpoint import CheckpointError
from hma.model.config import ModelConfig
from hma.model.hma import HMA

FORMAT = "hma-model"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
RUN_FORMAT = "hma-pretrain"
RUN_VERSION = 1
META_FILE = "pretrain.json"
MODEL_DIR = "model"
FINGERPRINT_KEY = "fingerprint"
log = logging.getLogger(__name__)


def save_model(model: HMA, url: str) -> str:
    """Write `model`'s weights and config to directory `url`; returns the fingerprint."""
    return save_model_state(model.state_dict(), model.config.model_dump(mode="json"), url)


def save_model_state(state: dict[str, torch.Tensor], config: dict[str, Any], url: str) -> str:
    """save_model from a state dict and a JSON config (under FSDP2 the full weights exist only
    as a gathered state dict, not as a module); returns the fingerprint."""
    storage.makedirs(url)
    tensors = checkpoint.cpu_tensors(state)
    fingerprint = checkpoint.fingerprint_of(config, iter(tensors.items()))
    metadata = {"format": FORMAT, FINGERPRINT_KEY: fingerprint}
    checkpoint.write_tensors(storage.join(url, WEIGHTS_FILE), tensors, metadata)
    record = {"config": config, FINGERPRINT_KEY: fingerprint}
    checkpoint.write_record(storage.join(url, CONFIG_FILE), FORMAT, VERSION, record)
    return fingerprint


def _record(url: str) -> dict[str, Any]:
    path = storage.join(url, CONFIG_FILE)
    return checkpoint.read_record(path, FORMAT, VERSION, "missing; not an HMA model checkpoint")


def read_config(url: str) -> ModelConfig:
    """The ModelConfig recorded in the checkpoint at `url`."""
    try:
        return ModelConfig(**_record(url).get("config", {}))
    except ValidationError as e:
        raise CheckpointError(
            f"{storage.join(url, CONFIG_FILE)}: invalid model config: {e}"
        ) from None


def read_fingerprint(url: str) -> str:
    """The fingerprint recorded for the model directory at `url` ("" if it predates them)."""
    return str(_record(url).get(FINGERPRINT_KEY, ""))


def load_model(url: str, device: str | torch.device = "cpu") -> HMA:
    """Rebuild the model recorded at `url` and load its weights."""
    model = HMA(read_config(url))
    load_weights(model, url)
    return model.to(device)


def read_weights(url: str) -> dict[str, torch.Tensor]:
    """The tensors of the model directory at `url`, verified against its recorded fingerprint."""
    tensors = checkpoint.read_tensors(storage.join(url, WEIGHTS_FILE))
    _verify(url, tensors)
    return tensors


def load_weights(model: HMA, url: str, strict: bool = True) -> None:
    """Load the weights at `url` into `model`. strict=False allows tensors missing from the
    file (e.g. the stem/head of a dataset added after pre-training), never a shape mismatch."""
    path = storage.join(url, WEIGHTS_FILE)
    tensors = checkpoint.read_tensors(path)
    # names and shapes first: they say what a hand-edited config broke, the fingerprint only that
    checkpoint.check_tensors(model.state_dict(), tensors, path, "the model", strict=strict)
    _verify(url, tensors)
    model.load_state_dict(tensors, strict=strict)


def _verify(url: str, tensors: dict[str, torch.Tensor]) -> None:
    record = _record(url)
    recorded = record.get(FINGERPRINT_KEY)
    if not recorded:
        log.warning("%s: no fingerprint recorded (an older checkpoint); weights not verified", url)
        return
    got = checkpoint.fingerprint_of(record.get("config", {}), iter(tensors.items()))
    if got != recorded:
        raise CheckpointError(
            f"{storage.join(url, WEIGHTS_FILE)}: weights do not match the fingerprint recorded in "
            f"{CONFIG_FILE} ({recorded[:12]} != {got[:12]}): the file was modified or comes from "
            "another checkpoint"
        )


# ---------------------------------------------------------------------------------------------
# Pretraining checkpoints


def model_url(url: str) -> str:
    """The model directory of the pretraining checkpoint at `url`."""
    return storage.join(url, MODEL_DIR)


def save_run(
    url: str,
    weights: dict[str, torch.Tensor],
    model_config: dict[str, Any],
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
) -> None:
    """Write a pretraining checkpoint; `meta` (JSON), with the model's fingerprint added, goes
    last, into pretrain.json."""
    fingerprint = save_model_state(weights, model_config, model_url(url))
    checkpoint.save_state(url, trainer_state)
    record = {**meta, "model_fingerprint": fingerprint}
    checkpoint.write_record(storage.join(url, META_FILE), RUN_FORMAT, RUN_VERSION, record)


def read_meta(url: str) -> dict[str, Any]:
    """The checked pretrain.json of the pretraining checkpoint at `url`."""
    path = storage.join(url, META_FILE)
    missing = "missing; not a pretraining checkpoint"
    return checkpoint.read_record(path, RUN_FORMAT, RUN_VERSION, missing)


def latest(url: str) -> str | None:
    """`url` itself if it is a pretraining checkpoint, else its newest complete `checkpoint_*`
    child (a Ray Train run directory), else None."""
    return checkpoint.newest(url, META_FILE)


def resolve(url: str) -> str:
    """`latest(url)`, or a CheckpointError saying `url` is not a pretraining checkpoint."""
    return checkpoint.resolve(url, META_FILE, "pretraining")


def check_tokenizer(meta: dict[str, Any], url: str, fingerprint: str, store: str) -> None:
    """Refuse a checkpoint trained on another tokenizer's tokens than the store's."""
    recorded = (meta.get("tokenizer") or {}).get("fingerprint")
    if recorded != fingerprint:
        raise CheckpointError(
            f"{url}: trained on tokens of tokenizer {recorded}, but the token store {store} "
            f"holds tokens of tokenizer {fingerprint}; re-tokenize the data with the checkpoint's "
            "tokenizer or train from scratch"
        )
