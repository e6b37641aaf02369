"""Planning a tokenize run: cut every source into small, deterministic units of work.

    sources ──plan_units (driver, streaming)──▶ units ──list_unit (worker)──▶ episode refs

Each format plans its own units and lists their refs (hma.formats.base: what a unit is, and
each format module's `plan_units` / `list_unit`). This module adds what the pipeline needs
around them: sources from a job config, and bad input that never crashes the run:

    a source URL that does not exist     ConfigError (a typo stops the run before it starts)
    a source that cannot be planned      one broken unit, loc {"error": reason}, whose one
                                         "episode" is quarantined with the reason
    a unit that cannot be listed         one rejection per planned episode, with the reason

Planning is a generator and holds one source's bookkeeping at a time, never a list of
per-episode objects. Inputs must not change between runs: appending to a video manifest moves
the byte range of its last unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pydantic import Field

from hma import formats, storage
from hma.config import StorageURL, StrictModel
from hma.errors import ConfigError, FormatError
from hma.formats.base import UNKNOWN_DATASET, Listed, Unit, make_unit


class Source(StrictModel):
    """One episode source (any format `hma formats list` names), local path or s3://."""

    url: StorageURL
    format: str | None = Field(default=None, description="default: detected from the files")
    dataset: str | None = Field(default=None, description="registry name, if the source lacks it")


def unique_sources(sources: Iterable[Source]) -> tuple[list[Source], list[Source]]:
    """(sources in order with repeats left out, the repeats): a source listed twice is read
    once; it would otherwise be stored twice."""
    seen: set[tuple[str, str | None, str | None]] = set()
    unique, repeats = [], []
    for source in sources:
        key = (source.url.rstrip("/"), source.format, source.dataset)
        (repeats if key in seen else unique).append(source)
        seen.add(key)
    return unique, repeats


def plan_units(sources: Iterable[Source], episodes_per_unit: int) -> Iterator[Unit]:
    """Units of every source, in source order."""
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
        yield from formats.get_format(fmt).plan_units(source.url, source.dataset, n)
    except FormatError as e:
        yield make_unit(fmt or "unknown", source.url, source.dataset, 1, {"error": str(e)})
    except (NotADirectoryError, IsADirectoryError) as e:  # a file where a directory belongs
        reason = f"{source.url}: not a {fmt} source ({e.strerror})"
        yield make_unit(fmt or "unknown", source.url, source.dataset, 1, {"error": reason})


def list_unit(unit: Unit) -> list[Listed]:
    """The unit's episodes as refs (or rejections). Never raises for bad input: a unit whose
    listing fails yields one rejection per planned episode, naming the reason."""
    loc = unit["loc"]
    dataset = unit["dataset"] or UNKNOWN_DATASET
    if "error" in loc:
        return [Listed(None, dataset, unit["url"], unit["url"], loc["error"])]
    try:
        return formats.get_format(unit["format"]).list_unit(unit)
    except Exception as e:  # noqa: BLE001 - a unit that cannot be listed is quarantined whole
        reason = f"cannot list source: {type(e).__name__}: {e}"
        start = int(loc.get("line", loc.get("start", 0)))
        return [
            Listed(None, dataset, f"{unit['url']}#{start + i}", unit["url"], reason)
            for i in range(unit["count"])
        ]
