"""Tokenizer checkpoints: safetensors weights + a JSON config, on a local path or s3://.

    <dir>/model.safetensors   every persistent tensor of the net (safetensors: no code, no pickle)
    <dir>/config.json         {"format", "version", "arch", "config", "kind", "fingerprint"}
    <dir>/trainer_state.*     optional, written by training: optimizer state (safetensors) + JSON

config.json is written last, so a directory without it is an unfinished write, never a
checkpoint. Loading checks the file format, the config, every tensor's name and shape, and that
the weights hash to the recorded fingerprint; each failure raises CheckpointError naming the
file. Nothing here calls pickle or torch.load.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensor_bytes
from safetensors.torch import save as save_tensor_bytes
from torch import nn

from hma import storage
from hma.errors import ConfigError, HmaError
from hma.tokenize.base import Tokenizer, fingerprint_of
from hma.tokenize.fsq import FSQConfig
from hma.tokenize.kl import KLConfig
from hma.tokenize.presets import TokenizerConfig, tokenizer_config

FORMAT = "hma-tokenizer"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
RUN_CHECKPOINT = re.compile(r"checkpoint_.*")
MAX_LISTED = 5  # names listed in a key-mismatch message


class CheckpointError(HmaError, ValueError):
    """A tokenizer checkpoint is missing, damaged, or does not match its config."""


def config_dict(config: FSQConfig | KLConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def build_tokenizer(
    config: FSQConfig | KLConfig, device: str | torch.device = "cpu", batch_size: int = 64
) -> Tokenizer:
    """A freshly initialised (untrained) tokenizer for `config`."""
    return Tokenizer(config.build(), config_dict(config), device, batch_size)


def save_tokenizer(tokenizer: Tokenizer, url: str) -> str:
    """Write `tokenizer` (an FSQ or KL net) to directory `url`; returns its fingerprint."""
    if not isinstance(tokenizer.net, nn.Module) or "arch" not in tokenizer.config:
        raise CheckpointError(f"{url}: only FSQ/KL tokenizers can be saved as checkpoints")
    return save_net(tokenizer.net, tokenizer.config, url)


def save_net(net: nn.Module, config: dict[str, Any], url: str) -> str:
    """Write `net`'s weights and `config` to directory `url`; returns the fingerprint."""
    storage.makedirs(url)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    fingerprint = fingerprint_of(config, iter(tensors.items()))
    with storage.open_file(storage.join(url, WEIGHTS_FILE), "wb") as f:
        f.write(save_tensor_bytes(tensors, metadata={"format": FORMAT, "fingerprint": fingerprint}))
    record = {
        "format": FORMAT,
        "version": VERSION,
        "arch": config["arch"],
        "kind": net.kind,
        "config": config,
        "fingerprint": fingerprint,
    }
    with storage.open_file(storage.join(url, CONFIG_FILE), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return fingerprint


def newest_run_checkpoint(url: str, marker: str) -> str | None:
    """The newest complete `checkpoint_*` child of `url` (a Ray Train run directory): the last by
    name that holds `marker`, the file a checkpoint writes last. None if there is none."""
    if not storage.isdir(url):
        return None
    fs, path = storage.filesystem(url)
    fs.invalidate_cache(path)  # a run writes new checkpoints while readers poll it
    names = sorted(
        p.rstrip("/").rsplit("/", 1)[-1]
        for p in fs.ls(path, detail=False)
        if RUN_CHECKPOINT.fullmatch(p.rstrip("/").rsplit("/", 1)[-1])
    )
    for name in reversed(names):
        child = storage.join(url, name)
        if storage.exists(storage.join(child, marker)):
            return child
    return None


def resolve(url: str) -> str:
    """`url` itself if it holds config.json, else its newest `checkpoint_*` child (a Ray run)."""
    if storage.exists(storage.join(url, CONFIG_FILE)):
        return url
    found = newest_run_checkpoint(url, CONFIG_FILE)
    if found is None:
        raise CheckpointError(
            f"{url}: not a tokenizer checkpoint (no {CONFIG_FILE} in it or below)"
        )
    return found


def read_record(url: str) -> dict[str, Any]:
    """The parsed and checked config.json of the checkpoint at `url`."""
    path = storage.join(url, CONFIG_FILE)
    return storage.read_versioned_json(
        path, FORMAT, VERSION, CheckpointError, "missing; not a tokenizer checkpoint"
    )


def read_config(url: str) -> tuple[TokenizerConfig, str]:
    """(validated config, recorded fingerprint) of the FSQ/KL checkpoint at `url`, from its
    config.json alone (the weights are not read)."""
    record = read_record(url)
    try:
        config = tokenizer_config(record.get("config") or {}, storage.join(url, CONFIG_FILE))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    return config, str(record.get("fingerprint", ""))


def load_net(url: str) -> tuple[nn.Module, dict[str, Any], str]:
    """(net, config dict, recorded fingerprint) of the FSQ/KL checkpoint at `url`, on CPU."""
    config, fingerprint = read_config(url)
    net = config.build()
    weights = storage.join(url, WEIGHTS_FILE)
    tensors = read_tensors(weights)
    _check_tensors(net, tensors, weights)
    net.load_state_dict(tensors, strict=True)
    return net, config_dict(config), fingerprint


def load_tokenizer(url: str, device: str | torch.device = "cpu", batch_size: int = 64) -> Tokenizer:
    """Load a tokenizer: an FSQ/KL checkpoint (or a Ray run dir holding them), or Cosmos files."""
    from hma.tokenize import cosmos

    if cosmos.is_cosmos_dir(url):
        return cosmos.load_cosmos(url, device=device, batch_size=batch_size)
    url = resolve(url)
    net, config, recorded = load_net(url)
    tokenizer = Tokenizer(net, config, device, batch_size)
    if tokenizer.fingerprint != recorded:
        raise CheckpointError(
            f"{storage.join(url, WEIGHTS_FILE)}: weights do not match the fingerprint recorded in "
            f"{CONFIG_FILE} ({recorded[:12] or 'none'} != {tokenizer.fingerprint[:12]}): the file "
            "was modified or comes from another checkpoint"
        )
    return tokenizer


def read_bytes(url: str, error: type[Exception] = CheckpointError) -> bytes:
    """The bytes of the checkpoint file at `url`; a missing file raises `error` naming it (each
    checkpoint format passes its own error class)."""
    try:
        with storage.open_file(url, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise error(f"{url}: missing") from None


def read_tensors(url: str, error: type[Exception] = CheckpointError) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file at `url`; a missing or unreadable file raises `error`
    naming it (each checkpoint format passes its own error class)."""
    data = read_bytes(url, error)
    try:
        return load_tensor_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise error(f"{url}: corrupted or not a safetensors file ({e})") from None


def _check_tensors(net: nn.Module, tensors: dict[str, torch.Tensor], url: str) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{url}: tensors do not match the config: missing {missing[:MAX_LISTED]}"
            f"{' ...' if len(missing) > MAX_LISTED else ''}, unexpected "
            f"{unexpected[:MAX_LISTED]}{' ...' if len(unexpected) > MAX_LISTED else ''}"
        )
    for name, ref in expected.items():
        got = tensors[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise CheckpointError(
                f"{url}: tensor {name!r} is {got.dtype} {list(got.shape)}, the config needs "
                f"{ref.dtype} {list(ref.shape)}"
            )


# ---------------------------------------------------------------------------------------------
# Trainer state (optimizer moments, step): safetensors for tensors, JSON for everything else.


def save_state(url: str, state: dict[str, Any]) -> None:
    """Write a nested state (dicts/lists of tensors and JSON values) as safetensors + JSON."""
    tensors: dict[str, torch.Tensor] = {}
    plain = _split_tensors(state, "", tensors)
    with storage.open_file(storage.join(url, STATE_TENSORS), "wb") as f:
        f.write(save_tensor_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    with storage.open_file(storage.join(url, STATE_JSON), "w") as f:
        json.dump(plain, f)


def load_state(url: str) -> dict[str, Any]:
    """The state `save_state` wrote, with tensors back in place."""
    path = storage.join(url, STATE_JSON)
    plain = storage.read_json(path, CheckpointError, "missing (checkpoint has no trainer state)")
    tensors = read_tensors(storage.join(url, STATE_TENSORS))
    return _join_tensors(plain, tensors)


_TENSOR_REF = "__tensor__"
_PAIRS = "__pairs__"
_MARKERS = (_TENSOR_REF, _PAIRS)


def _split_tensors(value: Any, prefix: str, out: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        out[prefix] = value
        return {_TENSOR_REF: prefix}
    if isinstance(value, dict):
        items = [
            (k, _split_tensors(v, f"{prefix}.{k}" if prefix else str(k), out))
            for k, v in value.items()
        ]
        if all(isinstance(k, str) and k not in _MARKERS for k, _ in items):
            return dict(items)
        # JSON keys are strings; keep others (optimizer state is keyed by param index) as pairs.
        return {_PAIRS: [list(item) for item in items]}
    if isinstance(value, (list, tuple)):
        return [_split_tensors(v, f"{prefix}.{i}", out) for i, v in enumerate(value)]
    return value


def _join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict) and _TENSOR_REF in value:
        return tensors[value[_TENSOR_REF]]
    if isinstance(value, dict) and _PAIRS in value:
        return {k: _join_tensors(v, tensors) for k, v in value[_PAIRS]}
    if isinstance(value, dict):
        return {k: _join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value
