"""The token store's writer side: create a store, write one unit per Ray task, finalize on the driver.

    F kept frames, s stride, A action dim, S state dim, h x w token grid, c latent channels (soft)

    <store>/<dataset>/shards/<unit>/
        tokens     vq: uint16 (uint32 if vocab > 65536) [F,h,w]  |  soft: float16 [F,c,h,w]
        actions    float32 [F,s,A]   raw actions between kept frame f and f+1
        state      float32 [F,S]     raw proprioception at kept frame f; only if the dataset has it
        episodes   group; attrs = the episode index as columns:
                   {"episode_id": [..], "split": [..], "success": [-1|0|1 ..],
                    "start": [..], "length": [..]}   (start/length in frames of this shard)

The same index also travels in the unit's commit record (`datasets[name]["index"]`), beside the
layout ("stride", "action_dim", "state_dim": 0 without state) and the exact train-split stats
("train_stats" of the actions, "state_train_stats"), so readers learn every episode of a store
from the commits alone (one listing + one batched read) and open a shard's arrays only to read
frames. Arrays are chunked along F and grouped into zarr shards
(`shards=`): one object per shard on S3, and a random window of tokens costs two range reads
(shard index, then the chunk). A unit is built in memory and uploaded as one batch of PUTs.

Layout facts measured in ../shared/NOTES.md: an array is created and sized once by the one task
that owns its unit (concurrent resize loses rows; writers sharing a zarr shard corrupt it).
"""

from __future__ import annotations

import contextlib
import math
import posixpath
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.storage import MemoryStore

from hma import storage
from hma.episodes import DatasetSpec, Registry
from hma.errors import HmaError
from hma.pipeline.store.layout import (
    ACTIONS,
    COMMITS,
    EPISODES,
    FORMAT,
    QUARANTINE,
    SHARDS,
    STATE,
    TOKENS,
    VERSION,
    StoreError,
    TokenizerInfo,
    list_json,
    read_jsons,
    read_root,
    remove,
    shard_path,
    shard_sizes,
    write_json,
    zarr_store,
)
from hma.pipeline.store.reader import DatasetView, build_views
from hma.pipeline.store.summary import StoreSummary
from hma.stats import ActionStats

SPLITS = ("train", "val")
# Chunk ~256 KiB along F (a 16-frame training window of vq tokens reads one or two chunks), at most
# 64 frames so windows do not over-read; group chunks into shards of ~64 MiB (one S3 object each).
TARGET_CHUNK_BYTES = 256 * 1024
MAX_CHUNK_FRAMES = 64
TARGET_SHARD_BYTES = 64 * 1024 * 1024
# zstd inside blosc with byte shuffle: shuffle groups the high bytes of uint16 ids / float16 latents.
COMPRESSORS = (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),)


@dataclass
class EncodedEpisode:
    """One episode as the pipeline hands it to `write_unit`: tokens, strided raw actions and the
    raw state at the kept frames."""

    dataset: str
    episode_id: str
    split: str  # "train" | "val"
    success: bool | None
    tokens: np.ndarray  # vq int [F,h,w] | soft float [F,c,h,w]
    actions: np.ndarray  # float32 [F,s,A], see chunk_actions
    state: np.ndarray | None = None  # float32 [F,S] at the kept frames; None or S = 0: no state


@dataclass
class Rejection:
    """An input episode that did not make it into the store, and why (goes to _quarantine)."""

    dataset: str
    episode_id: str
    source: str
    reason: str


# ---------------------------------------------------------------------------------------------
# Creating and writing


def create_store(url: str, info: TokenizerInfo) -> None:
    """Create the store at `url` for tokens of `info`'s tokenizer, or accept an existing store made
    with the same tokenizer (idempotent). A path that holds anything else (a file, a dataset
    directory) is refused: a store is never written into other data. Driver only."""
    if storage.exists(url) and not storage.isdir(url):
        raise StoreError(f"{url}: is a file, not a token store; choose a new store URL")
    store = zarr_store(url)
    try:
        zarr.open_group(store, mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        fs, path = storage.filesystem(url)
        if storage.isdir(url) and fs.ls(path, detail=False):
            raise StoreError(
                f"{url}: an existing directory that is not a token store (no root zarr.json); "
                "choose a new store URL"
            ) from None
        attrs = {"format": FORMAT, "version": VERSION, "tokenizer": info.to_dict()}
        zarr.create_group(store, attributes=attrs)
        return
    old = read_root(url, store)["tokenizer"]
    if old["fingerprint"] != info.fingerprint:
        raise StoreError(
            f"{url}: the store holds tokens of tokenizer {old['fingerprint']} ({old.get('url')}), "
            f"not of tokenizer {info.fingerprint} ({info.url}); use a new store URL or the "
            "tokenizer the store was built with"
        )
    if list(old["grid"]) != list(info.grid):
        raise StoreError(
            f"{url}: the store's token grid is {old['grid']} (frames {old['frame_size']}), "
            f"this run's is {list(info.grid)} (frames {list(info.frame_size)})"
        )


def write_unit(
    url: str, unit: str, episodes: list[EncodedEpisode], rejected: list[Rejection], read: int
) -> dict[str, Any]:
    """Write unit `unit` (one Ray task owns it): a shard per dataset, its quarantine, then its commit
    record last; returns the commit. A retried unit first withdraws its commit, then replaces its
    own shards, so readers never see a half-rewritten unit and no episode is stored twice."""
    assert read == len(episodes) + len(rejected), (read, len(episodes), len(rejected))
    if not unit or "/" in unit or unit.startswith(("_", ".")):
        raise ValueError(f"unit name must be a plain file name, got {unit!r}")
    info = TokenizerInfo.from_dict(read_root(url)["tokenizer"])
    commit_url = storage.join(url, COMMITS, f"{unit}.json")
    remove(commit_url)

    by_dataset: dict[str, list[EncodedEpisode]] = {}
    for ep in episodes:
        by_dataset.setdefault(ep.dataset, []).append(ep)
    # Build the unit's zarr hierarchy in memory, then upload its files in one concurrent batch:
    # zarr creating arrays on S3 directly costs ~80 requests per unit (parent and existence
    # probes), the upload ~15.
    staged: dict[str, Any] = {}
    memory = zarr.open_group(MemoryStore(store_dict=staged), mode="w", zarr_format=3)
    datasets = {
        name: _stage_shard(memory, url, info, name, unit, eps) for name, eps in by_dataset.items()
    }
    _upload(url, unit, list(by_dataset), staged)
    write_json(storage.join(url, QUARANTINE, f"{unit}.json"), [asdict(r) for r in rejected])
    commit = {
        "unit": unit,
        "read": read,
        "datasets": datasets,
        "quarantined": dict(Counter(r.dataset for r in rejected)),
    }
    write_json(commit_url, commit)
    return commit


def _stage_shard(
    memory: zarr.Group,
    url: str,
    info: TokenizerInfo,
    dataset: str,
    unit: str,
    eps: list[EncodedEpisode],
) -> dict[str, Any]:
    stride, action_dim, state_dim = _check_episodes(url, info, dataset, eps)
    tokens = np.concatenate([_token_array(url, info, ep) for ep in eps])
    arrays = {
        TOKENS: tokens,
        ACTIONS: np.concatenate([np.asarray(ep.actions, dtype=np.float32) for ep in eps]),
    }
    if state_dim:
        arrays[STATE] = np.concatenate([np.asarray(ep.state, dtype=np.float32) for ep in eps])
    lengths = [int(ep.tokens.shape[0]) for ep in eps]
    starts = [int(s) for s in np.cumsum([0, *lengths[:-1]])]
    index = {
        "episode_id": [ep.episode_id for ep in eps],
        "split": [ep.split for ep in eps],
        "success": [-1 if ep.success is None else int(bool(ep.success)) for ep in eps],
        "start": starts,
        "length": lengths,
    }
    group = memory.create_group(shard_path(dataset, unit))
    for name, data in arrays.items():
        chunks, shards = _layout(data.shape, data.dtype.itemsize)
        group.create_array(name, data=data, chunks=chunks, shards=shards, compressors=COMPRESSORS)
    group.create_group(EPISODES, attributes=index)

    train = [
        (start, start + n)
        for ep, start, n in zip(eps, starts, lengths, strict=True)
        if ep.split == "train"
    ]
    return {
        "episodes": len(eps),
        "frames": int(tokens.shape[0]),
        "stride": stride,
        "action_dim": action_dim,
        "state_dim": state_dim,
        "train_stats": _train_stats(arrays[ACTIONS], train),
        "state_train_stats": _train_stats(arrays[STATE], train) if state_dim else None,
        "index": index,
    }


def _train_stats(data: np.ndarray, train: list[tuple[int, int]]) -> dict[str, Any] | None:
    """Exact stats (for the Chan merge) of the train episodes' frame ranges of `data` [F,...,D],
    per last dimension; None without train episodes. Computed on exactly the float32 values
    stored, so readers normalise what they read."""
    if not train:
        return None
    rows = np.concatenate([data[a:b].reshape(-1, data.shape[-1]) for a, b in train])  # (N, D)
    return ActionStats.of(rows).to_dict(exact=True)


def _upload(url: str, unit: str, datasets: list[str], staged: dict[str, Any]) -> None:
    """Copy the staged files of `unit`'s shards to the store, replacing an earlier attempt's; the
    dataset groups above them are written only where missing (they carry `finalize`'s attrs)."""
    fs, root = storage.filesystem(url)
    root = root.rstrip("/")
    files = {}
    for name in datasets:
        prefix = shard_path(name, unit)
        with contextlib.suppress(FileNotFoundError):
            fs.rm(f"{root}/{prefix}", recursive=True)
        files.update({f"{root}/{k}": v for k, v in staged.items() if k.startswith(prefix + "/")})
        for parent in (f"{name}/zarr.json", f"{name}/{SHARDS}/zarr.json"):
            fs.invalidate_cache(f"{root}/{posixpath.dirname(parent)}")
            if not fs.exists(f"{root}/{parent}"):
                files[f"{root}/{parent}"] = staged[parent]
    if not storage.is_remote(url):
        for folder in {posixpath.dirname(path) for path in files}:
            fs.makedirs(folder, exist_ok=True)
    fs.pipe({path: buf.to_bytes() for path, buf in files.items()})


def _check_episodes(
    url: str, info: TokenizerInfo, dataset: str, eps: list[EncodedEpisode]
) -> tuple[int, int, int]:
    """(stride, action_dim, state_dim) shared by every episode; StoreError naming the first one
    that breaks the layout (the pipeline should have quarantined it)."""
    first = eps[0].actions.shape
    state_dim = _state_dim(eps[0])
    for ep in eps:
        where = f"{url}: dataset {dataset!r}, episode {ep.episode_id!r}"
        frames = ep.tokens.shape[0] if ep.tokens.ndim else 0
        if frames < 1:
            raise StoreError(f"{where}: no kept frames (episode shorter than stride)")
        if tuple(ep.tokens.shape[1:]) != info.token_shape:
            raise StoreError(
                f"{where}: tokens {list(ep.tokens.shape)}, expected [F, "
                f"{', '.join(map(str, info.token_shape))}] for this store's tokenizer"
            )
        if ep.actions.ndim != 3 or ep.actions.shape[0] != frames:
            raise StoreError(f"{where}: actions {list(ep.actions.shape)}, expected [{frames},s,A]")
        if ep.actions.shape[1:] != first[1:]:
            raise StoreError(f"{where}: actions [F,s,A] = {list(ep.actions.shape)}, others {first}")
        if ep.split not in SPLITS:
            raise StoreError(f"{where}: split {ep.split!r}, expected one of {SPLITS}")
        _check_state(where, ep, frames, state_dim, eps[0].episode_id)
    return int(first[1]), int(first[2]), state_dim


def _state_dim(ep: EncodedEpisode) -> int:
    """S of the episode's state [F,S]; 0 when it has none."""
    return 0 if ep.state is None or np.ndim(ep.state) != 2 else int(ep.state.shape[1])


def _state_words(state_dim: int) -> str:
    return f"state width {state_dim}" if state_dim else "no state"


def _check_state(where: str, ep: EncodedEpisode, frames: int, state_dim: int, first: str) -> None:
    """One dataset's shard holds one state array [F,S], so every episode in it has state of the
    same width S (or every one has none)."""
    if ep.state is not None and np.ndim(ep.state) != 2:
        raise StoreError(f"{where}: state {list(np.shape(ep.state))}, expected [{frames},S]")
    if _state_dim(ep) != state_dim:
        raise StoreError(
            f"{where}: {_state_words(_state_dim(ep))}, but episode {first!r} of this unit has "
            f"{_state_words(state_dim)}; every episode of a dataset needs state of one width"
        )
    if state_dim and ep.state.shape[0] != frames:
        raise StoreError(f"{where}: state {list(ep.state.shape)}, expected [{frames},{state_dim}]")


def _token_array(url: str, info: TokenizerInfo, ep: EncodedEpisode) -> np.ndarray:
    where = f"{url}: dataset {ep.dataset!r}, episode {ep.episode_id!r}"
    tokens = np.asarray(ep.tokens)
    if info.kind == "vq":
        if tokens.dtype.kind not in "iu":
            raise StoreError(f"{where}: vq tokens must be integers, got {tokens.dtype}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= (info.vocab_size or 0)):
            raise StoreError(
                f"{where}: token ids span [{tokens.min()}, {tokens.max()}], outside the "
                f"vocabulary [0, {info.vocab_size})"
            )
        return tokens.astype(info.token_dtype)
    out = tokens.astype(np.float16)
    if not np.isfinite(out).all():
        raise StoreError(f"{where}: soft tokens are not finite in float16 (|x| > 65504 or NaN)")
    return out


def _layout(shape: tuple[int, ...], itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(chunks, shards) for an array [F, ...] chunked along F only."""
    frames, rest = shape[0], tuple(shape[1:])
    frame_bytes = max(1, itemsize * math.prod(rest))
    chunk = int(np.clip(TARGET_CHUNK_BYTES // frame_bytes, 1, MAX_CHUNK_FRAMES))
    chunk = min(chunk, frames)
    per_shard = max(1, TARGET_SHARD_BYTES // (chunk * frame_bytes))
    shard = chunk * min(per_shard, math.ceil(frames / chunk))
    return (chunk, *rest), (shard, *rest)


# ---------------------------------------------------------------------------------------------
# Listing and finalizing


def committed_units(url: str) -> set[str]:
    """Names of the units whose commit record exists (one listing of `_commits/`)."""
    return set(list_json(url, COMMITS))


def committed_episodes(url: str) -> set[tuple[str, str]]:
    """(dataset, episode_id) of every episode the store's committed units hold."""
    units = list_json(url, COMMITS)
    out: set[tuple[str, str]] = set()
    for commit in read_jsons(url, COMMITS, units).values():
        for name, record in commit["datasets"].items():
            out.update((name, str(e)) for e in record["index"]["episode_id"])
    return out


def finalize(url: str, registry: Registry) -> StoreSummary:
    """Driver only: merge every dataset's train-split action and state stats over the commits in
    sorted unit order (exact Chan merge) into the dataset group attrs; count what was read,
    committed and quarantined per dataset."""
    store = zarr_store(url)
    info = TokenizerInfo.from_dict(read_root(url, store)["tokenizer"])
    units = list_json(url, COMMITS)
    commits = read_jsons(url, COMMITS, units)
    views = build_views(url, units, commits)  # the stats merge readers use, in unit order
    summary = StoreSummary(url=url, units=len(units), tokens_per_frame=math.prod(info.token_shape))
    for unit in units:
        commit = commits[unit]
        summary.read += int(commit["read"])
        stored = sum(int(d["episodes"]) for d in commit["datasets"].values())
        if int(commit["read"]) != stored + sum(commit["quarantined"].values()):
            summary.unbalanced.append(unit)
        for name, n in commit["quarantined"].items():
            summary.row(name).quarantined += int(n)
    specs = {name: _spec(url, registry, view) for name, view in views.items()}  # all, then write
    sizes = shard_sizes(url)
    for name, view in views.items():
        row = summary.row(name)
        row.committed = len(view)
        row.episodes.update(view.split.tolist())
        row.frames = int(view.length.sum())
        row.tokens = row.frames * summary.tokens_per_frame
        row.bytes = sum(sizes.get((name, u), 0) for u in view.units)
        attrs = {
            "registry": specs[name].model_dump(mode="json"),
            "stride": view.stride,
            "action_dim": view.action_dim,
            "action_stats": view.stats.to_dict(exact=True) if view.stats else None,
            "state_dim": view.state_dim,
            "state_stats": view.state_stats.to_dict(exact=True) if view.state_stats else None,
            "episodes": row.committed,
            "splits": dict(row.episodes),
            "frames": row.frames,
            "quarantined": row.quarantined,
            "shards": view.units,
        }
        zarr.open_group(store, path=name, mode="a", zarr_format=3).attrs.put(attrs)
    return summary


def _spec(url: str, registry: Registry, view: DatasetView) -> DatasetSpec:
    name, shape = view.name, (view.stride, view.action_dim)
    try:
        spec = registry.get(name)
    except HmaError as e:
        raise StoreError(
            f"{url}: dataset {name!r} is in the store but not the registry: {e}"
        ) from None
    if (spec.stride, spec.action_dim) != shape:
        raise StoreError(
            f"{url}: dataset {name!r} is stored with stride {shape[0]}, action_dim {shape[1]}; "
            f"the registry says stride {spec.stride}, action_dim {spec.action_dim}"
        )
    return spec
