"""`hma datasets show`: what is in an episode source — counts, frames, action stats, a thumbnail strip.

Statistics are exact over every episode (one Ray task per episode computes a partial, the driver
merges); the thumbnail strip decodes only the first few episodes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from hma import formats, storage
from hma.episodes import Episode, Registry, load_registry
from hma.formats import load_row
from hma.formats.base import EpisodeRef
from hma.pipeline.store.summary import success_line
from hma.stats import ActionStats

THUMB_PX = 64  # height of one thumbnail in the strip


@dataclass
class DatasetPart:
    """Everything known about one dataset (registry name) inside a source."""

    episodes: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # per split
    frames: int = 0
    frame_shapes: set[tuple[int, int]] = field(default_factory=set)
    successes: int = 0
    labelled: int = 0  # episodes with a known outcome (synthetic ones often have none)
    synthetic: int = 0  # episodes an hma-generate run made (meta["synthetic"])
    actions: ActionStats | None = None

    @property
    def total(self) -> int:
        return sum(self.episodes.values())

    def success_line(self) -> str:
        failures, unknown = self.labelled - self.successes, self.total - self.labelled
        return success_line({"success": self.successes, "failure": failures, "unknown": unknown})

    def to_dict(self) -> dict[str, Any]:
        return {
            "episodes": dict(self.episodes),
            "real": self.total - self.synthetic,
            "synthetic": self.synthetic,
            "labelled": self.labelled,
            "frames": self.frames,
            "frame_shapes": sorted(list(s) for s in self.frame_shapes),
            "success_rate": self.successes / self.labelled if self.labelled else None,
            "actions": self.actions.to_dict() if self.actions else None,
        }


@dataclass
class SourceSummary:
    url: str
    fmt: str
    datasets: dict[str, DatasetPart] = field(default_factory=lambda: defaultdict(DatasetPart))
    rejected: list[tuple[str, str]] = field(default_factory=list)
    strip_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "format": self.fmt,
            "datasets": {k: v.to_dict() for k, v in self.datasets.items()},
            "rejected": [{"episode_id": e, "reason": r} for e, r in self.rejected],
            "thumbnail_strip": self.strip_url,
        }

    def lines(self) -> list[str]:
        out = [f"{self.url}  ({self.fmt})"]
        for name, part in sorted(self.datasets.items()):
            splits = ", ".join(f"{s} {n}" for s, n in sorted(part.episodes.items()))
            shapes = ", ".join(f"{h}x{w}" for h, w in sorted(part.frame_shapes))
            out.append(
                f"dataset {name}: episodes {part.total} ({splits}; real {part.total - part.synthetic}"
                f", synthetic {part.synthetic})"
            )
            out.append(f"  frames {part.frames}  frame size {shapes}  {part.success_line()}")
            if part.actions is not None:
                out.append(
                    "  action  "
                    + "".join(f"{'dim ' + str(i):>10}" for i in range(len(part.actions.mean)))
                )
                for stat in ("mean", "std", "min", "max"):
                    values = getattr(part.actions, stat)
                    out.append(f"  {stat:<6}  " + "".join(f"{v:>10.4f}" for v in values))
        if self.rejected:
            out.append(f"rejected {len(self.rejected)} episodes:")
            out += [f"  {e}: {r}" for e, r in self.rejected[:20]]
        if self.strip_url:
            out.append(f"thumbnail strip: {self.strip_url}")
        return out


def episode_summary(row: dict[str, Any]) -> dict[str, Any]:
    """Ray task: the few numbers `describe` needs from one episode row (frames stay in the task)."""
    out: dict[str, Any] = {
        k: row[k] for k in ("dataset", "episode_id", "split", "success", "error")
    }
    out["synthetic"] = bool(row["meta"] and json.loads(row["meta"]).get("synthetic"))
    if row["error"]:
        return {**out, "steps": 0, "height": 0, "width": 0, "stats": np.zeros((4, 0))}
    stats = ActionStats.of(row["actions"])
    _, height, width, _ = row["frames"].shape
    packed = np.stack([stats.mean, stats.m2, stats.min, stats.max])  # [4, A]
    return {**out, "steps": stats.count, "height": height, "width": width, "stats": packed}


def describe(
    url: str,
    fmt: str | None = None,
    dataset: str | None = None,
    strip_url: str | None = None,
    strip_episodes: int = 6,
    strip_frames: int = 8,
    registry: Registry | None = None,
    refs: list[EpisodeRef] | None = None,
) -> SourceSummary:
    """Summarise the episode source at `url` (`refs`: its listing, if made already). Ray must
    be up."""
    registry = registry or load_registry()
    fmt = fmt or formats.detect_format(url)
    refs = formats.list_refs(url, fmt, dataset) if refs is None else refs
    summary = SourceSummary(url, fmt)
    rows = formats.read_episodes(url, fmt, dataset, registry, refs).map(episode_summary)
    for row in rows.iter_rows():
        if row["error"]:
            summary.rejected.append((str(row["episode_id"]), str(row["error"])))
            continue
        part = summary.datasets[str(row["dataset"])]
        part.episodes[str(row["split"])] += 1
        part.frames += int(row["steps"])
        part.frame_shapes.add((int(row["height"]), int(row["width"])))
        part.synthetic += bool(row["synthetic"])
        if int(row["success"]) >= 0:
            part.labelled += 1
            part.successes += int(row["success"])
        mean, m2, lo, hi = np.asarray(row["stats"])
        stats = ActionStats(int(row["steps"]), mean, m2, lo, hi)
        part.actions = stats if part.actions is None else part.actions.merge(stats)
    episodes = first_good_episodes(refs, registry, strip_episodes) if strip_url else []
    if strip_url and episodes:
        storage.write_png(thumbnail_strip(episodes, strip_frames), strip_url)
        summary.strip_url = strip_url
    return summary


def first_good_episodes(refs: list[EpisodeRef], registry: Registry, count: int) -> list[Episode]:
    """The first `count` episodes of `refs` that load and validate (rejected ones are already
    reported)."""
    good: list[Episode] = []
    for ref in refs:
        if len(good) == count:
            break
        row = load_row(ref, registry)
        if not row["error"]:
            good.append(Episode.from_row(row))
    return good


def thumbnail_strip(episodes: list[Episode], frames_per_episode: int) -> np.ndarray:
    """One row per episode of `frames_per_episode` evenly spaced frames, THUMB_PX high."""
    rows = []
    for ep in episodes:
        idx = np.linspace(0, len(ep) - 1, frames_per_episode).round().astype(int)
        thumbs = [_thumb(ep.frames[i]) for i in idx]
        rows.append(np.concatenate(thumbs, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]  # 2 px gutter
    return np.concatenate(rows, axis=0)


def _thumb(frame: np.ndarray) -> np.ndarray:
    h, w, _ = frame.shape
    size = (max(1, round(w * THUMB_PX / h)), THUMB_PX)
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
