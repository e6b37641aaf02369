"""Checkpoint files, for every kind of checkpoint the project writes (local path or s3://).

A checkpoint is a directory. Each kind (tokenizer, HMA model, pretraining run, success
classifier) names its own files and format tag and builds on these pieces:

    <dir>/<weights>.safetensors   tensors only (no code, no pickle); string metadata in the header
    <dir>/<record>.json           {"format": <kind>, "version": n, ...}, written last: a directory
                                  without it is an unfinished write, never a checkpoint
    <dir>/trainer_state.*         optional, from training: nested optimizer / scheduler / RNG
                                  state as safetensors (tensors) + JSON (everything else)

A Ray Train run directory holds `checkpoint_*` children; `resolve` turns "this checkpoint or the
run it belongs to" into the newest complete one. A weights fingerprint (sha256 over the config
and every tensor) ties a checkpoint's weights to its record. Every failure raises
CheckpointError naming the file. Nothing here calls pickle or torch.load.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensor_bytes
from safetensors.torch import save as save_tensor_bytes

from hma import storage
from hma.errors import HmaError

RUN_CHECKPOINT = re.compile(r"checkpoint_.*")  # Ray Train's checkpoint directory names
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
HEADER_LEN_BYTES = 8  # a safetensors file opens with its JSON header's length, u64 little-endian
MAX_LISTED = 5  # tensor names listed in a mismatch message


class CheckpointError(HmaError, ValueError):
    """A checkpoint is missing, damaged, or does not fit what it is loaded into; names the file."""


def fingerprint_of(config: dict[str, Any], tensors: Iterator[tuple[str, torch.Tensor]]) -> str:
    """sha256 over the canonical JSON of `config`, then each tensor's name, dtype, shape and bytes.

    Tensors are hashed in name order, so the result does not depend on module construction order.
    """
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}".encode())
        # view as bytes: numpy has no bfloat16, and the raw bytes are what a weight *is*.
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Weights: safetensors files


def cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as safetensors stores it: detached, contiguous, on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def write_tensors(
    url: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write `tensors` (and string `metadata` in the header) as one safetensors file."""
    with storage.open_file(url, "wb") as f:
        f.write(save_tensor_bytes(cpu_tensors(tensors), metadata=metadata))


def read_bytes(url: str) -> bytes:
    """The bytes of the checkpoint file at `url`; a missing file raises CheckpointError."""
    try:
        with storage.open_file(url, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{url}: missing") from None


def read_tensors(url: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file at `url`."""
    data = read_bytes(url)
    try:
        return load_tensor_bytes(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{url}: corrupted or not a safetensors file ({e})") from None


def read_metadata(url: str) -> dict[str, str]:
    """The string metadata in the header of the safetensors file at `url` (the header only)."""
    try:
        with storage.open_file(url, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(HEADER_LEN_BYTES))
            header = json.loads(f.read(size))
    except FileNotFoundError:
        raise CheckpointError(f"{url}: missing") from None
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{url}: not a safetensors file ({e})") from None
    return dict(header.get("__metadata__") or {})


def check_tensors(
    expected: dict[str, torch.Tensor],
    tensors: dict[str, torch.Tensor],
    url: str,
    owner: str,
    strict: bool = True,
) -> None:
    """Refuse `tensors` (read from `url`) that do not fit the state dict `expected` of `owner`
    ("the model", "the config"): unexpected names always; missing names when `strict`; any
    shape or dtype difference."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected or (strict and missing):
        raise CheckpointError(
            f"{url}: tensors do not match {owner}: missing {_listed(missing)}, unexpected "
            f"{_listed(unexpected)}"
        )
    for name in sorted(set(tensors) & set(expected)):
        got, ref = tensors[name], expected[name]
        if got.shape != ref.shape or got.dtype != ref.dtype:
            raise CheckpointError(
                f"{url}: tensor {name!r} is {got.dtype} {list(got.shape)}, {owner} needs "
                f"{ref.dtype} {list(ref.shape)}"
            )


def _listed(names: list[str]) -> str:
    return f"{names[:MAX_LISTED]}{' ...' if len(names) > MAX_LISTED else ''}"


# ---------------------------------------------------------------------------------------------
# Records: versioned JSON, written last


def write_record(url: str, fmt: str, version: int, record: dict[str, Any]) -> None:
    """Write `record` tagged {"format": fmt, "version": version} as JSON at `url`."""
    with storage.open_file(url, "w") as f:
        json.dump({**record, "format": fmt, "version": version}, f, indent=2, sort_keys=True)


def read_record(url: str, fmt: str, version: int, missing: str) -> dict[str, Any]:
    """The JSON record at `url`, checked to be {"format": fmt, "version": version}; `missing`
    says what a missing file means (e.g. "missing; not a tokenizer checkpoint")."""
    record = storage.read_json(url, CheckpointError, missing)
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise CheckpointError(f"{url}: not an {fmt} record (format key missing or different)")
    if record.get("version") != version:
        raise CheckpointError(
            f"{url}: checkpoint version {record.get('version')!r}, this code reads {version}"
        )
    return record


# ---------------------------------------------------------------------------------------------
# A small module as one checkpoint: weights + a record whose `identity` (config, dataset, ...)
# the fingerprint covers together with the weights (success classifiers, policies)

FINGERPRINT = "fingerprint"


@dataclass(frozen=True)
class Layout:
    """The files and tag of one checkpoint kind."""

    kind: str  # words for messages: "success classifier"
    fmt: str  # the record's "format"
    version: int
    weights: str  # file names inside the checkpoint directory
    record: str


def save_module(
    url: str,
    layout: Layout,
    state: dict[str, torch.Tensor],
    identity: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> str:
    """Write `state` and a record {**identity, **extra, fingerprint}; returns the fingerprint."""
    storage.makedirs(url)
    tensors = cpu_tensors(state)
    fingerprint = fingerprint_of(identity, iter(tensors.items()))
    metadata = {"format": layout.fmt, FINGERPRINT: fingerprint}
    write_tensors(storage.join(url, layout.weights), tensors, metadata)
    record = {**identity, **(extra or {}), FINGERPRINT: fingerprint}
    write_record(storage.join(url, layout.record), layout.fmt, layout.version, record)
    return fingerprint


def load_module(
    url: str, layout: Layout, identity: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(record, tensors) of a `save_module` checkpoint, the tensors verified against the
    fingerprint over the record's `identity` keys."""
    missing = f"missing; not a {layout.kind} checkpoint"
    record = read_record(storage.join(url, layout.record), layout.fmt, layout.version, missing)
    path = storage.join(url, layout.weights)
    tensors = read_tensors(path)
    got = fingerprint_of({k: record.get(k) for k in identity}, iter(tensors.items()))
    if got != record.get(FINGERPRINT):
        raise CheckpointError(
            f"{path}: weights do not match the fingerprint recorded in {layout.record}: the "
            "file was modified or comes from another checkpoint"
        )
    return record, tensors


# ---------------------------------------------------------------------------------------------
# Finding a checkpoint: the directory itself, or the newest in a Ray Train run directory


def newest(url: str, marker: str) -> str | None:
    """`url` itself if it holds `marker` (the file a checkpoint writes last), else its newest
    complete `checkpoint_*` child (by name), else None."""
    if storage.exists(storage.join(url, marker)):
        return url
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


def resolve(url: str, marker: str, kind: str) -> str:
    """`newest(url, marker)`, or a CheckpointError saying `url` is not a `kind` checkpoint."""
    found = newest(url, marker)
    if found is None:
        raise CheckpointError(
            f"{url}: not a {kind} checkpoint (no {marker} in it or its checkpoint_* dirs)"
        )
    return found


# ---------------------------------------------------------------------------------------------
# Trainer state: nested dicts/lists of tensors and JSON values (optimizer moments, RNG states)


def save_state(url: str, state: dict[str, Any]) -> None:
    """Write a nested state as safetensors (its tensors) + JSON (everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    plain = _split_tensors(state, "", tensors)
    write_tensors(storage.join(url, STATE_TENSORS), tensors)
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


def rng_state() -> dict[str, Any]:
    """Every generator a training step may touch (torch, CUDA, numpy, python), for save_state."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8))
