"""On-disk episode formats. Each module reads AND writes one format on fsspec URLs.

Every format module provides the same four functions (see `hma.formats.base.EpisodeFormat`):

    sniff(url) -> bool                          does `url` look like this format?
    list_refs(url, dataset) -> list[EpisodeRef] cheap: one small JSON-able ref per episode
    load(ref) -> Episode                        decode one episode (the only heavy step)
    write(episodes, url, registry) -> int       stream Episodes into a new dataset at `url`

so a reader is "list refs on the driver, load each ref in a Ray task": one row per episode,
and memory bounded by a few episodes however large the source is.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from hma.episodes import Episode, Registry, load_registry, validate_episode
from hma.errors import FormatError
from hma.formats.base import EpisodeFormat, EpisodeRef

if TYPE_CHECKING:
    import ray.data

# Imported on first use: a user converting HDF5 need not pay for importing the video stack.
FORMATS = ("robomimic", "rlds", "lerobot", "video")


def get_format(name: str) -> EpisodeFormat:
    if name not in FORMATS:
        raise FormatError(f"unknown format {name!r} (known: {', '.join(FORMATS)})")
    return cast(EpisodeFormat, importlib.import_module(f"hma.formats.{name}"))


def detect_format(url: str) -> str:
    """The name of the format stored at `url`, or a FormatError naming the URL."""
    from hma import storage

    if not storage.exists(url):
        raise FormatError(f"{url}: not found")
    for name in FORMATS:
        if get_format(name).sniff(url):
            return name
    raise FormatError(
        f"{url}: not a recognised episode source (expected one of: {', '.join(FORMATS)}); "
        "pass the format explicitly if detection fails"
    )


def list_refs(url: str, fmt: str | None = None, dataset: str | None = None) -> list[EpisodeRef]:
    """The refs of every episode at `url`. A path of the wrong kind for `fmt` (a file where the
    format keeps a directory, or the reverse) is a FormatError naming it."""
    name = fmt or detect_format(url)
    try:
        return get_format(name).list_refs(url, dataset)
    except (NotADirectoryError, IsADirectoryError) as e:
        kind = "a file" if isinstance(e, NotADirectoryError) else "a directory"
        raise FormatError(f"{url}: is {kind}, not a {name} source ({e.strerror})") from None


def iter_episodes(
    url: str, fmt: str | None = None, dataset: str | None = None
) -> Iterator[Episode]:
    """Episodes of one source, one at a time in this process (no Ray)."""
    name = fmt or detect_format(url)
    reader = get_format(name)
    for ref in list_refs(url, name, dataset):
        yield reader.load(ref)


def read_episodes(
    url: str,
    fmt: str | None = None,
    dataset: str | None = None,
    registry: Registry | None = None,
    refs: list[EpisodeRef] | None = None,
) -> ray.data.Dataset:
    """A lazy Ray Data dataset of Episode rows, one per episode of the source at `url` (`refs`:
    its episodes as `list_refs` gave them, where the caller has listed them already).

    Each row also has an `error` column: "" for a good episode, else the reason it could not be
    loaded or failed validation (such rows carry no frames). Nothing is dropped here; the caller
    decides where rejected episodes go.
    """
    import ray.data

    refs = list_refs(url, fmt, dataset) if refs is None else refs
    registry = registry or load_registry()
    if not refs:
        raise FormatError(f"{url}: no episodes found")
    ds = ray.data.from_items(refs, override_num_blocks=len(refs)).map(
        load_row, fn_kwargs={"registry": registry}
    )
    # Episodes come out in source order, so a conversion is deterministic.
    ds.context.execution_options.preserve_order = True
    return ds


def write_episodes(
    episodes: Iterable[Episode], url: str, fmt: str, registry: Registry | None = None
) -> int:
    """Write episodes to a new dataset at `url` in format `fmt`; returns the number written.
    Locally the dataset appears at `url` only once complete (storage.staged_destination): a
    failed or killed write leaves nothing there, so it never blocks a re-run."""
    from hma import storage

    if storage.exists(url):
        raise FormatError(f"{url}: destination exists; choose a new path")
    writer = get_format(fmt)
    with storage.staged_destination(url) as staging:
        return writer.write(episodes, staging, registry or load_registry())


def load_row(ref: EpisodeRef, registry: Registry) -> dict[str, Any]:
    """Load and validate the episode `ref` points to, as a Ray Data row with an `error` column.

    A failure (unreadable file, corrupt video, invalid field) gives a row with the reason and no
    frames, so bad input is accounted for instead of crashing or vanishing.
    """
    try:
        episode = get_format(ref["format"]).load(ref)
        validate_episode(episode, registry)
    except Exception as e:  # noqa: BLE001 - every failure becomes a labelled row
        return rejected_row(ref, f"{type(e).__name__}: {e}")
    return {**episode.to_row(), "error": ""}


def rejected_row(ref: EpisodeRef, reason: str) -> dict[str, Any]:
    """A row with the Episode row's columns, empty payload, and the rejection reason."""
    empty = Episode(
        dataset=str(ref.get("dataset") or ""),
        episode_id=str(ref.get("episode_id") or f"{ref.get('url')}#{ref.get('index')}"),
        frames=np.zeros((0, 1, 1, 3), np.uint8),
        actions=np.zeros((0, 1), np.float32),
        hz=0.0,
        meta={"source": ref.get("url", "")},
    )
    return {**empty.to_row(), "error": reason}
