"""Tokenizer checkpoints: safetensors weights + a JSON config, on a local path or s3://.

    <dir>/model.safetensors   every persistent tensor of the net; the fingerprint in its header
    <dir>/config.json         {"format", "version", "arch", "config", "kind", "fingerprint"}
    <dir>/trainer_state.*     optional, written by training (hma.checkpoint.save_state)

The file layout rules, errors and run-directory resolution are hma.checkpoint's. Loading checks
the config, every tensor's name and shape, and that the weights hash to the recorded
fingerprint; each failure raises CheckpointError naming the file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hma import checkpoint, storage
from hma.checkpoint import CheckpointError
from hma.errors import ConfigError
from hma.tokenize.base import Tokenizer, fingerprint_of
from hma.tokenize.fsq import FSQConfig
from hma.tokenize.kl import KLConfig
from hma.tokenize.presets import TokenizerConfig, tokenizer_config

FORMAT = "hma-tokenizer"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FINGERPRINT_KEY = "fingerprint"  # safetensors header metadata


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
    tensors = checkpoint.cpu_tensors(net.state_dict())
    fingerprint = fingerprint_of(config, iter(tensors.items()))
    metadata = {"format": FORMAT, FINGERPRINT_KEY: fingerprint}
    checkpoint.write_tensors(storage.join(url, WEIGHTS_FILE), tensors, metadata)
    record = {
        "arch": config["arch"],
        "kind": net.kind,
        "config": config,
        "fingerprint": fingerprint,
    }
    checkpoint.write_record(storage.join(url, CONFIG_FILE), FORMAT, VERSION, record)
    return fingerprint


def resolve(url: str) -> str:
    """`url` itself if it holds config.json, else its newest `checkpoint_*` child (a Ray run)."""
    return checkpoint.resolve(url, CONFIG_FILE, "tokenizer")


def read_config(url: str) -> tuple[TokenizerConfig, str]:
    """(validated config, recorded fingerprint) of the FSQ/KL checkpoint at `url`, from its
    config.json alone (the weights are not read)."""
    path = storage.join(url, CONFIG_FILE)
    record = checkpoint.read_record(path, FORMAT, VERSION, "missing; not a tokenizer checkpoint")
    try:
        config = tokenizer_config(record.get("config") or {}, path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    return config, str(record.get("fingerprint", ""))


def verify_weights(url: str) -> tuple[TokenizerConfig, str]:
    """(config, fingerprint) of the FSQ/KL checkpoint at `url` once its weights are shown to hash
    to the recorded fingerprint, without building the net (the tokenize driver checks a
    checkpoint this way before any worker loads it)."""
    config, recorded = read_config(url)
    weights = storage.join(url, WEIGHTS_FILE)
    tensors = checkpoint.read_tensors(weights)
    got = fingerprint_of(config_dict(config), iter(tensors.items()))
    if got != recorded:
        raise CheckpointError(
            f"{weights}: weights do not match the fingerprint recorded in {CONFIG_FILE} "
            f"({recorded[:12] or 'none'} != {got[:12]}): the file was modified or comes from "
            "another checkpoint"
        )
    return config, recorded


def load_net(url: str) -> tuple[nn.Module, dict[str, Any], str]:
    """(net, config dict, recorded fingerprint) of the FSQ/KL checkpoint at `url`, on CPU."""
    config, fingerprint = read_config(url)
    net = config.build()
    weights = storage.join(url, WEIGHTS_FILE)
    tensors = checkpoint.read_tensors(weights)
    checkpoint.check_tensors(net.state_dict(), tensors, weights, "the config")
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
