"""Planning a tokenize run: cut every source into small, deterministic units of work.

    sources ──plan_units (driver, streaming)──▶ units ──list_unit (worker)──▶ episode refs

A unit is a small JSON-able dict naming at most `episodes_per_unit` episodes of one source:

    {"unit": id, "format": name, "url": source URL, "dataset": name | None,
     "count": episodes planned (video: manifest lines, blank ones included), "loc": {...}}

    video      loc {"manifest", "start", "stop": byte range [start, stop), "line": first line no.}
               found by scanning newline offsets in large blocks, without parsing any JSON
    robomimic  loc {"start", "stop"}: demo positions (numeric demo order) in the HDF5 file
    rlds       loc {"file", "split", "start", "stop"}: record range of one TFRecord shard, from
               dataset_info.json's shard lengths (the shard itself is scanned on the worker)
    lerobot    loc {"start", "stop"}: positions in episode-index order
    (broken)   loc {"error": reason}: a source that exists but cannot be listed; its one
               "episode" is quarantined with the reason, so nothing vanishes silently

The unit id is a hash of format, URL, dataset and locator: the same inputs give the same units
on every run, so a re-run skips the units the store has committed (resume). Inputs must not change
between runs: appending to a manifest moves the byte range of its last unit.

Planning is a generator and holds one source's bookkeeping at a time (a few numbers per unit
for video manifests), never a list of per-episode objects. Listing the refs inside a unit happens
on the worker (`list_unit`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pydantic import Field

from hma import formats, storage
from hma.config import StorageURL, StrictModel
from hma.errors import ConfigError, FormatError
from hma.formats import lerobot, rlds, robomimic, tfrecord, video
from hma.formats.base import EpisodeRef

Unit = dict[str, Any]
UNKNOWN_DATASET = "(unknown)"  # dataset of a rejection whose source never said
SCAN_BLOCK = 1 << 22  # manifest bytes read per block while looking for line ends
NEWLINE = ord("\n")
UNIT_ID_CHARS = 20  # hex digits of sha1 kept: 80 bits, no collisions at millions of units
LISTING_CACHE = 8  # sources whose full listing a worker keeps (robomimic, lerobot)


class Source(StrictModel):
    """One episode source (any format `hma formats list` names), local path or s3://."""

    url: StorageURL
    format: str | None = Field(default=None, description="default: detected from the files")
    dataset: str | None = Field(default=None, description="registry name, if the source lacks it")


@dataclass
class Listed:
    """One entry of a unit: an episode ref to load, or (ref None) a rejection with its reason."""

    ref: EpisodeRef | None
    dataset: str
    episode_id: str
    source: str
    reason: str = ""


def unit_id(fmt: str, url: str, dataset: str | None, loc: dict[str, Any]) -> str:
    key = json.dumps([fmt, url, dataset, loc], sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()[:UNIT_ID_CHARS]


def make_unit(fmt: str, url: str, dataset: str | None, count: int, loc: dict[str, Any]) -> Unit:
    return {
        "unit": unit_id(fmt, url, dataset, loc),
        "format": fmt,
        "url": url,
        "dataset": dataset,
        "count": int(count),
        "loc": loc,
    }


# ---------------------------------------------------------------------------------------------
# Driver: plan


def plan_units(sources: Iterable[Source], episodes_per_unit: int) -> Iterator[Unit]:
    """Units of every source, in source order.

    A source URL that does not exist is a ConfigError (a typo should stop the run before it
    starts); a source that exists but cannot be listed becomes one broken unit.
    """
    if episodes_per_unit < 1:
        raise ConfigError(f"episodes_per_unit must be >= 1, got {episodes_per_unit}")
    for source in sources:
        yield from _plan_source(source, episodes_per_unit)


def _plan_source(source: Source, n: int) -> Iterator[Unit]:
    if not storage.exists(source.url):
        raise ConfigError(f"source {source.url}: not found")
    fmt = source.format
    try:
        fmt = fmt or formats.detect_format(source.url)
        formats.get_format(fmt)
        yield from PLANNERS[fmt](source.url, source.dataset, n)
    except FormatError as e:
        yield make_unit(fmt or "unknown", source.url, source.dataset, 1, {"error": str(e)})


def _ranges(total: int, n: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, n):
        yield start, min(start + n, total)


def _plan_video(url: str, dataset: str | None, n: int) -> Iterator[Unit]:
    """Cut the manifest at every n-th line end; only newline offsets are looked at."""
    manifest = video._manifest_url(url)
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
                yield make_unit("video", url, dataset, n, loc)
                start, line = stop, line + n
            lines_seen += len(ends)
            offset += len(block)
    if offset > start:  # lines after the last full unit (the last may lack its newline)
        count = lines_seen - (line - 1) + (0 if last == b"\n" else 1)
        loc = {"manifest": manifest, "start": start, "stop": offset, "line": line}
        yield make_unit("video", url, dataset, count, loc)


def _plan_robomimic(url: str, dataset: str | None, n: int) -> Iterator[Unit]:
    total = len(_robomimic_refs(url, dataset))
    for start, stop in _ranges(total, n):
        yield make_unit("robomimic", url, dataset, stop - start, {"start": start, "stop": stop})


def _plan_rlds(url: str, dataset: str | None, n: int) -> Iterator[Unit]:
    """Units from dataset_info.json's shard lengths; shards are scanned on the workers."""
    root = rlds._resolve(url)
    info_url = storage.join(root, rlds.INFO_FILE)
    info = rlds._read_json(info_url)
    rlds._fields(root)  # a damaged features.json fails here, naming the file
    name = info.get("name")
    if not name:
        raise FormatError(f"{info_url}: no dataset 'name'")
    if dataset is None and info.get("moduleName") != rlds.MODULE_NAME:
        raise FormatError(
            f"{root}: RLDS dataset {name!r} was not written by HMA; "
            "pass the registry dataset name it belongs to"
        )
    for split in info.get("splits", []):
        lengths = [int(k) for k in split.get("shardLengths", [])]
        template = split.get("filepathTemplate") or rlds.FILE_TEMPLATE
        for i, length in enumerate(lengths):
            shard = storage.join(
                root, rlds._shard_name(template, name, split["name"], i, len(lengths))
            )
            for start, stop in _ranges(length, n):
                loc = {"file": shard, "split": split["name"], "start": start, "stop": stop}
                yield make_unit("rlds", url, dataset, stop - start, loc)


def _plan_lerobot(url: str, dataset: str | None, n: int) -> Iterator[Unit]:
    """Units over the episode index order; only the episode_index column is read here."""
    url = url.rstrip("/")
    lerobot.read_info(url)
    fs, root = storage.filesystem(storage.join(url, "meta/episodes"))
    files = sorted(fs.glob(f"{root}/*/*.parquet"))
    if not files:
        raise FormatError(f"{storage.join(url, 'meta/episodes')}: no episode parquet files")
    total = 0
    for path in files:
        try:
            total += pq.read_metadata(path, filesystem=fs).num_rows
        except OSError as e:
            raise FormatError(f"{path}: cannot read episode metadata: {e}") from e
    for start, stop in _ranges(total, n):
        yield make_unit("lerobot", url, dataset, stop - start, {"start": start, "stop": stop})


PLANNERS = {
    "video": _plan_video,
    "robomimic": _plan_robomimic,
    "rlds": _plan_rlds,
    "lerobot": _plan_lerobot,
}


# ---------------------------------------------------------------------------------------------
# Worker: the refs inside one unit


def list_unit(unit: Unit) -> list[Listed]:
    """The unit's episodes as refs (or rejections). Never raises for bad input: a unit whose
    listing fails yields one rejection per planned episode, naming the reason."""
    loc = unit["loc"]
    if "error" in loc:
        return [
            Listed(None, unit["dataset"] or UNKNOWN_DATASET, unit["url"], unit["url"], loc["error"])
        ]
    try:
        return LISTERS[unit["format"]](unit)
    except Exception as e:  # noqa: BLE001 - a unit that cannot be listed is quarantined whole
        reason = f"cannot list source: {type(e).__name__}: {e}"
        dataset = unit["dataset"] or UNKNOWN_DATASET
        start = int(loc.get("line", loc.get("start", 0)))
        return [
            Listed(None, dataset, f"{unit['url']}#{start + i}", unit["url"], reason)
            for i in range(unit["count"])
        ]


def _accepted(ref: EpisodeRef, source: str) -> Listed:
    return Listed(ref, str(ref["dataset"]), str(ref["episode_id"]), source)


def _list_video(unit: Unit) -> list[Listed]:
    loc = unit["loc"]
    manifest = loc["manifest"]
    root = video._root(manifest)
    fs, path = storage.filesystem(manifest)
    data = fs.cat_file(path, start=loc["start"], end=loc["stop"])
    out = []
    for i, raw in enumerate(data.split(b"\n")):
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            continue
        lineno = loc["line"] + i
        try:
            entry = video._parse(text, manifest, lineno)
            out.append(
                _accepted(video._ref(entry, root, manifest, lineno, unit["dataset"]), manifest)
            )
        except FormatError as e:
            name = unit["dataset"] or _dataset_of_line(text)
            out.append(Listed(None, name, f"{manifest}:{lineno}", manifest, str(e)))
    return out


def _dataset_of_line(text: str) -> str:
    try:
        return str(json.loads(text).get("dataset") or UNKNOWN_DATASET)
    except (ValueError, AttributeError):
        return UNKNOWN_DATASET


@lru_cache(maxsize=LISTING_CACHE)
def _robomimic_refs(url: str, dataset: str | None) -> list[EpisodeRef]:
    # One listing per worker process and file: a file's demos are read by many units.
    return robomimic.list_refs(url, dataset)


@lru_cache(maxsize=LISTING_CACHE)
def _lerobot_refs(url: str, dataset: str | None) -> list[EpisodeRef]:
    return lerobot.list_refs(url, dataset)


def _list_robomimic(unit: Unit) -> list[Listed]:
    refs = _robomimic_refs(unit["url"], unit["dataset"])
    return [_accepted(r, unit["url"]) for r in refs[unit["loc"]["start"] : unit["loc"]["stop"]]]


def _list_lerobot(unit: Unit) -> list[Listed]:
    refs = _lerobot_refs(unit["url"].rstrip("/"), unit["dataset"])
    return [_accepted(r, unit["url"]) for r in refs[unit["loc"]["start"] : unit["loc"]["stop"]]]


@lru_cache(maxsize=LISTING_CACHE)
def _rlds_name(root: str) -> str:
    return str(rlds._read_json(storage.join(root, rlds.INFO_FILE))["name"])


@lru_cache(maxsize=LISTING_CACHE)
def _rlds_offsets(shard: str) -> list[tuple[int, int]]:
    fs, path = storage.filesystem(shard)
    with fs.open(path, "rb", block_size=rlds._SCAN_BLOCK) as f:
        return tfrecord.scan_offsets(f, shard)


def _list_rlds(unit: Unit) -> list[Listed]:
    """Refs of records [start, stop) of one shard, as rlds.list_refs makes them."""
    loc = unit["loc"]
    shard, root = loc["file"], rlds._resolve(unit["url"])
    dataset = unit["dataset"] or _rlds_name(root)
    try:
        offsets = _rlds_offsets(shard)
    except FileNotFoundError:
        offsets, missing = [], f"{shard}: shard listed in dataset_info.json is missing"
    else:
        missing = f"{shard}: only {len(offsets)} records, dataset_info.json lists more"
    split = "val" if loc["split"] in rlds._VAL_SPLITS else "train"
    out = []
    for j in range(loc["start"], loc["stop"]):
        episode_id = f"{storage.basename(shard)}#{j}"
        if j >= len(offsets):
            out.append(Listed(None, dataset, episode_id, shard, missing))
            continue
        offset, length = offsets[j]
        ref = {
            "format": "rlds",
            "url": root,
            "file": shard,
            "offset": offset,
            "length": length,
            "index": j,
            "split": split,
            "dataset": dataset,
            "episode_id": episode_id,
        }
        out.append(_accepted(ref, shard))
    return out


LISTERS = {
    "video": _list_video,
    "robomimic": _list_robomimic,
    "rlds": _list_rlds,
    "lerobot": _list_lerobot,
}
