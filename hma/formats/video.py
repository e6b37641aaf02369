"""Raw video episodes: a directory with `manifest.jsonl`, one mp4 and one actions parquet per episode.

    <root>/manifest.jsonl        one JSON object per line (= per episode):
        episode_id   str  (required)
        video        str  (required) mp4 path relative to <root>, or an absolute path / URL
        actions      str  (required) parquet path relative to <root>, or an absolute path / URL
        dataset      str  registry name (else the `dataset` argument of list_refs)
        split        "train" | "val"                   (default "train")
        hz           float control rate                (default: the registry's)
        instruction  str, success bool|null, meta {...}  (optional)
        frames       int  frame count, frame_size [H, W] true frame size (written by us; optional)
    <root>/videos/*.mp4          frame i is step i
    <root>/actions/*.parquet     one row per frame: `action` list<float>, optional `state`
                                 list<float>, and any other numeric column = an Episode extra

Listing reads the manifest line by line (one small ref per episode); `load` decodes one video.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hma import storage
from hma.episodes import Episode, Registry, load_registry, validate_episode
from hma.errors import FormatError
from hma.formats import mp4
from hma.formats.base import (
    UNKNOWN_DATASET,
    EpisodeRef,
    Listed,
    Unit,
    episode_from_ref,
    make_unit,
)

MANIFEST = "manifest.jsonl"
REQUIRED = ("episode_id", "video", "actions")
ACTION = "action"
STATE = "state"
# Parquet schema metadata key: extras whose per-step shape is not (K,) (see `_extras_table`).
SHAPES_KEY = b"hma.extra_shapes"
FORMAT = "video"
SCAN_BLOCK = 1 << 22  # manifest bytes read per block while looking for line ends
NEWLINE = ord("\n")


def sniff(url: str) -> bool:
    try:
        return storage.exists(_manifest_url(url))
    except Exception:  # noqa: BLE001 - sniffing never raises
        return False


def list_refs(url: str, dataset: str | None) -> list[EpisodeRef]:
    manifest = _manifest_url(url)
    root = _root(manifest)
    refs = []
    try:
        with storage.open_file(manifest, "r") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    entry = _parse(line, manifest, lineno)
                    refs.append(_ref(entry, root, manifest, lineno, dataset))
    except FileNotFoundError:
        raise FormatError(f"{manifest}: manifest not found") from None
    return refs


def plan_units(url: str, dataset: str | None, n: int) -> Iterator[Unit]:
    """Cut the manifest at every n-th line end: loc {"manifest", "start", "stop": byte range
    [start, stop), "line": first line number}. Only newline offsets are looked at (large blocks,
    no JSON parsing), so a manifest of millions of lines plans in about a second."""
    manifest = _manifest_url(url)
    fs, path = storage.filesystem(manifest)
    try:
        f = fs.open(path, "rb", block_size=SCAN_BLOCK)
    except FileNotFoundError:
        raise FormatError(f"{manifest}: manifest not found") from None
    start, line, lines_seen, offset, last = 0, 1, 0, 0, b"\n"
    with f:
        while block := f.read(SCAN_BLOCK):
            last = block[-1:]
            ends = np.flatnonzero(np.frombuffer(block, np.uint8) == NEWLINE)
            # ends[k] closes line number lines_seen + k + 1; a unit closes when that is a multiple of n
            first = n - lines_seen % n - 1
            for k in range(first, len(ends), n):
                stop = offset + int(ends[k]) + 1
                loc = {"manifest": manifest, "start": start, "stop": stop, "line": line}
                yield make_unit(FORMAT, url, dataset, n, loc)
                start, line = stop, line + n
            lines_seen += len(ends)
            offset += len(block)
    if offset > start:  # lines after the last full unit (the last may lack its newline)
        count = lines_seen - (line - 1) + (0 if last == b"\n" else 1)
        loc = {"manifest": manifest, "start": start, "stop": offset, "line": line}
        yield make_unit(FORMAT, url, dataset, count, loc)


def list_unit(unit: Unit) -> list[Listed]:
    """The unit's manifest lines as refs; a bad line is a rejection naming its line number."""
    loc = unit["loc"]
    manifest = loc["manifest"]
    root = _root(manifest)
    fs, path = storage.filesystem(manifest)
    data = fs.cat_file(path, start=loc["start"], end=loc["stop"])
    out = []
    for i, raw in enumerate(data.split(b"\n")):
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            continue
        lineno = loc["line"] + i
        try:
            ref = _ref(_parse(text, manifest, lineno), root, manifest, lineno, unit["dataset"])
            out.append(Listed.accepted(ref, manifest))
        except FormatError as e:
            name = unit["dataset"] or _dataset_of_line(text)
            out.append(Listed(None, name, f"{manifest}:{lineno}", manifest, str(e)))
    return out


def _dataset_of_line(text: str) -> str:
    try:
        return str(json.loads(text).get("dataset") or UNKNOWN_DATASET)
    except (ValueError, AttributeError):
        return UNKNOWN_DATASET


def load(ref: EpisodeRef) -> Episode:
    where = f"{ref['manifest']}: episode {ref['episode_id']!r}"
    actions_url = _resolve(ref["url"], ref["actions"])
    video_url = _resolve(ref["url"], ref["video"])
    fs, path = storage.filesystem(actions_url)
    try:
        table = pq.read_table(path, filesystem=fs)
    except FileNotFoundError:
        raise FormatError(f"{where}: actions file {actions_url} not found") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise FormatError(f"{where}: cannot read actions file {actions_url}: {e}") from e
    if ACTION not in table.column_names:
        raise FormatError(f"{where}: actions file {actions_url} has no {ACTION!r} column")
    actions = _matrix(table, ACTION, np.float32)
    state = _matrix(table, STATE, np.float32) if STATE in table.column_names else None
    shapes = json.loads((table.schema.metadata or {}).get(SHAPES_KEY, b"{}"))
    extras = {}
    for key in table.column_names:
        if key not in (ACTION, STATE):
            arr = _matrix(table, key, None)
            if arr.shape[1:] == (1,) and key not in shapes:
                arr = arr[:, 0]
            extras[key] = arr.reshape((len(arr), *shapes.get(key, arr.shape[1:])))
    size = tuple(ref["frame_size"]) if ref.get("frame_size") else None
    try:
        frames = mp4.read_frames(video_url, size=size)
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from e
    if len(frames) != len(actions):
        raise FormatError(
            f"{where}: video {video_url} has {len(frames)} frames but actions file "
            f"{actions_url} has {len(actions)} rows (one action per frame expected)"
        )
    return episode_from_ref(ref, frames=frames, actions=actions, state=state, extras=extras)


def write(
    episodes: Iterable[Episode],
    url: str,
    registry: Registry,
    *,
    encoding: mp4.VideoEncoding = mp4.DEFAULT_ENCODING,
) -> int:
    """Write episodes as a new raw-video directory at `url`; returns the number written.

    Each manifest line is written after its episode's files, so an interrupted write leaves a
    manifest that lists only complete episodes.
    """
    url = url.rstrip("/")
    manifest = storage.join(url, MANIFEST)
    if storage.exists(manifest):
        raise FormatError(f"{manifest}: already exists; write to a new location")
    storage.makedirs(url)
    count = 0
    with storage.open_file(manifest, "w") as out:
        for ep in episodes:
            validate_episode(ep, registry)
            stem = f"{count:06d}_{_safe(ep.episode_id)}"
            video, actions = f"videos/{stem}.mp4", f"actions/{stem}.parquet"
            mp4.write_mp4(ep.frames, storage.child(url, video), ep.hz, encoding)
            _write_actions(ep, storage.child(url, actions))
            line = {
                "episode_id": ep.episode_id,
                "dataset": ep.dataset,
                "split": ep.split,
                "video": video,
                "actions": actions,
                "hz": float(ep.hz),
                "instruction": ep.instruction,
                "success": ep.success,
                "meta": ep.meta,
                "frames": len(ep),
                "frame_size": list(ep.frames.shape[1:3]),
            }
            out.write(json.dumps(line) + "\n")
            count += 1
    return count


def _manifest_url(url: str) -> str:
    return url if url.endswith(".jsonl") else storage.join(url.rstrip("/"), MANIFEST)


def _root(manifest: str) -> str:
    if storage.is_remote(manifest):
        return posixpath.dirname(manifest)
    return os.path.dirname(os.path.abspath(storage.local_path(manifest)))


def _resolve(root: str, path: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    return storage.join(root, path)


def _parse(line: str, manifest: str, lineno: int) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as e:
        raise FormatError(f"{manifest}:{lineno}: not valid JSON: {e}") from e
    if not isinstance(entry, dict):
        raise FormatError(f"{manifest}:{lineno}: expected a JSON object per line")
    missing = [key for key in REQUIRED if not entry.get(key)]
    if missing:
        raise FormatError(f"{manifest}:{lineno}: missing key(s) {', '.join(missing)}")
    return entry


def _ref(
    entry: dict[str, Any], root: str, manifest: str, lineno: int, dataset: str | None
) -> EpisodeRef:
    where = f"{manifest}:{lineno} (episode {entry['episode_id']!r})"
    name = dataset or entry.get("dataset")
    if not name:
        raise FormatError(f"{where}: no dataset name; pass the registry dataset (dataset=...)")
    hz = entry.get("hz")
    if hz is None:
        spec = load_registry().datasets.get(name)
        if spec is None:
            raise FormatError(f"{where}: no 'hz' and dataset {name!r} is not in the registry")
        hz = spec.hz
    return {
        "format": FORMAT,
        "url": root,
        "manifest": manifest,
        "index": lineno - 1,
        "episode_id": str(entry["episode_id"]),
        "dataset": name,
        "split": entry.get("split") or "train",
        "video": entry["video"],
        "actions": entry["actions"],
        "hz": float(hz),
        "instruction": entry.get("instruction") or "",
        "success": entry.get("success"),
        "meta": entry.get("meta") or {},
        "frame_size": entry.get("frame_size"),
    }


def _matrix(table: pa.Table, key: str, dtype: Any) -> np.ndarray:
    """A column as [T, K]: list columns flattened per row, scalar columns as K = 1."""
    col = table.column(key).combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type):
        values = col.flatten().to_numpy(zero_copy_only=False)
        out = values.reshape(len(col), -1) if len(col) else values.reshape(0, 0)
    else:
        out = col.to_numpy(zero_copy_only=False).reshape(len(col), 1)
    return out if dtype is None else out.astype(dtype, copy=False)


def _fixed_list(arr: np.ndarray) -> pa.Array:
    arr = np.ascontiguousarray(arr.reshape(len(arr), -1))
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])


def _write_actions(ep: Episode, url: str) -> None:
    columns = {ACTION: _fixed_list(ep.actions.astype(np.float32))}
    if ep.state is not None:
        columns[STATE] = _fixed_list(ep.state.astype(np.float32))
    shapes = {}
    for key, arr in sorted(ep.extras.items()):
        if key in (ACTION, STATE) or arr.dtype.kind not in "biuf":
            raise FormatError(f"{url}: extras {key!r} must be numeric and not named action/state")
        if arr.ndim == 1:
            columns[key] = pa.array(arr)
        else:
            columns[key] = _fixed_list(arr)
            if arr.ndim != 2 or arr.shape[1] == 1:
                shapes[key] = list(arr.shape[1:])
    table = pa.table(columns)
    if shapes:
        table = table.replace_schema_metadata({SHAPES_KEY: json.dumps(shapes).encode()})
    fs, path = storage.filesystem(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    pq.write_table(table, path, filesystem=fs)


def _safe(episode_id: str) -> str:
    """A file-name-safe, bounded form of an episode id (uniqueness comes from the index prefix)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", episode_id)[:80]
