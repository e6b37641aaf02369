"""The contract every format module meets, and the units of work they plan.

A unit is a small JSON-able dict naming at most n episodes of one source, so a pipeline can cut a
source of millions of episodes into work without listing them on the driver:

    {"unit": id, "format": name, "url": source URL, "dataset": name | None,
     "count": episodes planned, "loc": {...}: where the format finds them again}

The unit id hashes format, URL, dataset and locator: the same inputs give the same units on every
run (so a re-run skips the units already done). Each format plans its own units (`plan_units`,
on the driver, streaming) and lists the episode refs inside one (`list_unit`, on a worker).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from hma.episodes import Episode, Registry

# A small JSON-able description of one episode in a source: at least "format", "url" and
# "episode_id"; formats add what they need to find the episode again (index, offsets, ...).
EpisodeRef = dict[str, Any]
Unit = dict[str, Any]
UNKNOWN_DATASET = "(unknown)"  # dataset of a rejection whose source never said
UNIT_ID_CHARS = 20  # hex digits of sha1 kept: 80 bits, no collisions at millions of units


@dataclass
class Listed:
    """One entry of a unit: an episode ref to load, or (ref None) a rejection with its reason."""

    ref: EpisodeRef | None
    dataset: str
    episode_id: str
    source: str
    reason: str = ""

    @classmethod
    def accepted(cls, ref: EpisodeRef, source: str) -> Listed:
        return cls(ref, str(ref["dataset"]), str(ref["episode_id"]), source)


class EpisodeFormat(Protocol):
    def sniff(self, url: str) -> bool: ...

    def list_refs(self, url: str, dataset: str | None) -> list[EpisodeRef]: ...

    def plan_units(self, url: str, dataset: str | None, n: int) -> Iterator[Unit]: ...

    def list_unit(self, unit: Unit) -> list[Listed]: ...

    def load(self, ref: EpisodeRef) -> Episode: ...

    def write(self, episodes: Iterable[Episode], url: str, registry: Registry) -> int: ...


def make_unit(fmt: str, url: str, dataset: str | None, count: int, loc: dict[str, Any]) -> Unit:
    key = json.dumps([fmt, url, dataset, loc], sort_keys=True)
    return {
        "unit": hashlib.sha1(key.encode()).hexdigest()[:UNIT_ID_CHARS],
        "format": fmt,
        "url": url,
        "dataset": dataset,
        "count": int(count),
        "loc": loc,
    }


def ranges(total: int, n: int) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges of at most n over 0..total."""
    for start in range(0, total, n):
        yield start, min(start + n, total)


def position_units(fmt: str, url: str, dataset: str | None, total: int, n: int) -> Iterator[Unit]:
    """Units over a source whose episodes are listed in a fixed order: loc {"start", "stop"}."""
    for start, stop in ranges(total, n):
        yield make_unit(fmt, url, dataset, stop - start, {"start": start, "stop": stop})


def list_positions(unit: Unit, refs: list[EpisodeRef]) -> list[Listed]:
    """The refs [start, stop) of a `position_units` unit, given the source's whole listing."""
    loc = unit["loc"]
    return [Listed.accepted(r, unit["url"]) for r in refs[loc["start"] : loc["stop"]]]


def episode_from_ref(ref: EpisodeRef, **arrays: Any) -> Episode:
    """An Episode whose scalar fields come from a ref that carries them (dataset, episode_id,
    split, hz, instruction, success, meta) and whose arrays are given (frames, actions, ...)."""
    fields = ("dataset", "episode_id", "split", "hz", "instruction", "success", "meta")
    return Episode(**{k: ref[k] for k in fields}, **arrays)
