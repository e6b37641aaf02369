"""Format conversion on Ray: read any source as Episode rows, write them in another format.

    source ──list refs──▶ Ray Data (load + validate per episode, in parallel) ──stream──▶ writer

Writers are single streams (one HDF5 file, one RLDS shard at a time), so the driver writes while
Ray tasks decode ahead of it. Episodes that fail to load or validate are put aside with their
reason in a JSONL file next to the destination; every input is accounted for.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from hma import formats, storage
from hma.episodes import Episode, Registry, load_registry
from hma.formats.base import EpisodeRef


@dataclass
class Rejected:
    episode_id: str
    source: str
    reason: str


@dataclass
class ConvertSummary:
    source: str
    destination: str
    fmt: str
    read: int = 0
    written: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    rejected_url: str | None = None

    @property
    def conserved(self) -> bool:
        return self.read == self.written + len(self.rejected)

    def lines(self) -> list[str]:
        out = [
            f"converted {self.source} -> {self.destination} ({self.fmt})",
            f"read {self.read} = written {self.written} + rejected {len(self.rejected)}"
            + ("" if self.conserved else "  <-- MISMATCH"),
        ]
        out += [f"  rejected {r.episode_id}: {r.reason}" for r in self.rejected[:20]]
        if len(self.rejected) > 20:
            out.append(f"  ... {len(self.rejected) - 20} more")
        if self.rejected_url:
            out.append(f"rejected episodes listed in {self.rejected_url}")
        return out


def convert(
    src: str,
    dst: str,
    to: str,
    src_format: str | None = None,
    dataset: str | None = None,
    registry: Registry | None = None,
    refs: list[EpisodeRef] | None = None,
) -> ConvertSummary:
    """Convert every episode of `src` (`refs`: its listing, if made already) into a new
    `to`-format dataset at `dst`. Ray must be up."""
    registry = registry or load_registry()
    fmt_in = src_format or formats.detect_format(src)
    summary = ConvertSummary(src, dst, to)
    rows = formats.read_episodes(src, fmt_in, dataset, registry, refs).iter_rows()

    def good_episodes() -> Iterator[Episode]:
        for row in rows:
            summary.read += 1
            if row["error"]:
                summary.rejected.append(Rejected(str(row["episode_id"]), src, str(row["error"])))
            else:
                yield Episode.from_row(row)

    good = good_episodes()
    try:
        first = next(good, None)  # reads (and accounts for) rows until a good one
        if first is not None:  # else nothing to write: no destination, the summary says why
            episodes = itertools.chain([first], good)
            summary.written = formats.write_episodes(episodes, dst, to, registry)
    finally:
        # even when the writer fails: the reasons collected so far are what the user needs
        if summary.rejected:
            summary.rejected_url = dst.rstrip("/") + ".rejected.jsonl"
            with storage.open_file(summary.rejected_url, "w") as f:
                for r in summary.rejected:
                    f.write(json.dumps(r.__dict__) + "\n")
    return summary
