"""Where things live in a token store, and the small I/O both its writer and its reader need.

    <store>/zarr.json                 root group; attrs {"format", "version", "tokenizer"}
    <store>/<dataset>/                group; attrs written by `finalize` only
    <store>/<dataset>/shards/<unit>/  tokens, actions, state (if any), episodes (one task per unit)
    <store>/_quarantine/<unit>.json   rejected episodes of one unit, with reasons
    <store>/_commits/<unit>.json      the unit's commit record, written last

The commit record is the source of truth for readers: a unit without one does not exist, and the
record carries the unit's episode index (see `store.write_unit`), so opening a store costs one
listing of `_commits/` and one batched read of the records.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import zarr
from zarr.storage import FsspecStore, LocalStore

from hma import storage
from hma.errors import HmaError

FORMAT = "hma-token-store"
VERSION = 1
COMMITS = "_commits"
QUARANTINE = "_quarantine"
SHARDS = "shards"
TOKENS = "tokens"
ACTIONS = "actions"
STATE = "state"  # per-frame proprioception; absent from the shards of a dataset without it
EPISODES = "episodes"
UINT16_VOCAB = 2**16  # vq ids below this fit uint16; larger vocabularies are stored as uint32


class StoreError(HmaError, ValueError):
    """A token store is missing, damaged, or does not match what the caller expects; names the URL."""


@dataclass
class TokenizerInfo:
    """What a store records about the tokenizer that made its tokens (root attrs "tokenizer")."""

    kind: str  # "vq" | "soft"
    fingerprint: str
    config: dict[str, Any]
    url: str
    grid: tuple[int, int]  # (h, w) tokens per frame
    vocab_size: int | None
    latent_channels: int | None
    frame_size: tuple[int, int]  # (H, W) pixels the tokenizer saw

    @classmethod
    def from_tokenizer(cls, tok: Any, url: str, frame_size: tuple[int, int]) -> TokenizerInfo:
        """Describe `tok` (a hma.tokenize.base.Tokenizer) loaded from `url` for H x W frames."""
        height, width = (int(v) for v in frame_size)
        return cls(
            kind=tok.kind,
            fingerprint=tok.fingerprint,
            config=dict(tok.config),
            url=url,
            grid=tuple(tok.token_grid(height, width)),
            vocab_size=tok.vocab_size,
            latent_channels=tok.latent_channels,
            frame_size=(height, width),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerInfo:
        fields = dict(d)
        fields["grid"] = tuple(fields["grid"])
        fields["frame_size"] = tuple(fields["frame_size"])
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = list(self.grid)
        d["frame_size"] = list(self.frame_size)
        return d

    @property
    def token_shape(self) -> tuple[int, ...]:
        """Shape of one frame's tokens: (h, w) for vq, (c, h, w) for soft."""
        if self.kind == "vq":
            return tuple(self.grid)
        return (int(self.latent_channels or 0), *self.grid)

    @property
    def token_dtype(self) -> str:
        """On-disk dtype: the smallest unsigned int that holds every vq id; float16 for soft."""
        if self.kind == "soft":
            return "float16"
        return "uint16" if (self.vocab_size or 0) <= UINT16_VOCAB else "uint32"


def zarr_store(url: str, read_only: bool = False) -> LocalStore | FsspecStore:
    """A zarr store rooted at `url`: LocalStore for paths, FsspecStore (with the S3 options of
    hma.storage, e.g. $AWS_ENDPOINT_URL) for remote URLs."""
    if storage.is_remote(url):
        options = storage.storage_options(url)
        return FsspecStore.from_url(url, storage_options=options, read_only=read_only)
    return LocalStore(storage.local_path(url), read_only=read_only)


def read_root(url: str, store: LocalStore | FsspecStore | None = None) -> dict[str, Any]:
    """The root attrs of the token store at `url`; StoreError if there is none."""
    store = store if store is not None else zarr_store(url, read_only=True)
    try:
        attrs = dict(zarr.open_group(store, mode="r", zarr_format=3).attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreError(f"{url}: no token store here (no root zarr.json)") from e
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{url}: not an {FORMAT} (root attrs format={attrs.get('format')!r})")
    if attrs.get("version") != VERSION:
        raise StoreError(f"{url}: store version {attrs.get('version')!r}, expected {VERSION}")
    return attrs


def write_json(url: str, obj: Any) -> None:
    """Write a JSON file atomically: readers see the old file or the new one, never a part."""
    text = json.dumps(obj, indent=1)
    if storage.is_remote(url):
        fs, path = storage.filesystem(url)
        fs.pipe_file(path, text.encode())  # one PUT
        return
    path = storage.local_path(url)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def remove(url: str) -> None:
    fs, path = storage.filesystem(url)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)


def list_json(url: str, folder: str) -> list[str]:
    """Stems of the `*.json` files in `<url>/<folder>`, sorted; one listing, never cached."""
    fs, path = storage.filesystem(storage.join(url, folder))
    fs.invalidate_cache(path)  # s3fs caches listings; other processes write here
    try:
        names = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    stems = [storage.basename(n) for n in names]
    return sorted(s[: -len(".json")] for s in stems if s.endswith(".json"))


def read_jsons(url: str, folder: str, units: list[str]) -> dict[str, Any]:
    """{unit: parsed `<url>/<folder>/<unit>.json`}, fetched in one batched (concurrent) call."""
    if not units:
        return {}
    fs, base = storage.filesystem(storage.join(url, folder))
    paths = [f"{base.rstrip('/')}/{unit}.json" for unit in units]
    try:
        blobs = fs.cat(paths)
    except FileNotFoundError as e:
        raise StoreError(f"{url}: {folder} record vanished while reading: {e}") from e
    out = {}
    for path, blob in blobs.items():
        unit = storage.basename(path)[: -len(".json")]
        try:
            out[unit] = json.loads(blob)
        except json.JSONDecodeError as e:
            raise StoreError(f"{storage.join(url, folder, unit + '.json')}: bad JSON: {e}") from e
    return out


def shard_path(dataset: str, unit: str) -> str:
    return f"{dataset}/{SHARDS}/{unit}"


def shard_sizes(url: str) -> dict[tuple[str, str], int]:
    """{(dataset, unit): bytes stored} from one recursive listing of the store."""
    fs, root = storage.filesystem(url)
    fs.invalidate_cache(root)
    root = root.rstrip("/")
    sizes: Counter[tuple[str, str]] = Counter()
    for path, size in fs.du(root, total=False).items():
        parts = path[len(root) :].strip("/").split("/")
        if len(parts) > 3 and parts[1] == SHARDS:
            sizes[(parts[0], parts[2])] += int(size)
    return dict(sizes)
