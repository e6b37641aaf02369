"""What is in a token store: the counts `finalize` reports, `hma store inspect`, a decoded strip.

Counts are conserved per unit: every episode a unit read is either committed or quarantined
(`StoreSummary.conserved`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hma import storage
from hma.pipeline.store.layout import FORMAT, VERSION, StoreError
from hma.pipeline.store.reader import TokenStore

STRIP_FRAMES = 8  # frames per episode row in `decode_strip`, evenly spaced over the episode
MIB = 2**20
SUCCESS_CODES = {"success": 1, "failure": 0, "unknown": -1}  # the index's int8 success column


@dataclass
class DatasetCounts:
    """One dataset's line in a store summary."""

    committed: int = 0  # episodes stored
    quarantined: int = 0  # episodes read but rejected
    episodes: Counter[str] = field(default_factory=Counter)  # committed per split
    frames: int = 0  # kept frames stored
    tokens: int = 0  # frames x tokens per frame
    bytes: int = 0  # bytes of the dataset's committed shards

    @property
    def read(self) -> int:
        return self.committed + self.quarantined

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "committed": self.committed,
            "quarantined": self.quarantined,
            "episodes": dict(self.episodes),
            "frames": self.frames,
            "tokens": self.tokens,
            "bytes": self.bytes,
        }


@dataclass
class StoreSummary:
    url: str
    units: int = 0
    read: int = 0  # episodes the committed units read, as they recorded it
    tokens_per_frame: int = 0
    datasets: dict[str, DatasetCounts] = field(default_factory=dict)
    unbalanced: list[str] = field(default_factory=list)  # units whose counts do not add up

    def row(self, name: str) -> DatasetCounts:
        return self.datasets.setdefault(name, DatasetCounts())

    @property
    def committed(self) -> int:
        return sum(d.committed for d in self.datasets.values())

    @property
    def quarantined(self) -> int:
        return sum(d.quarantined for d in self.datasets.values())

    @property
    def conserved(self) -> bool:
        """Every episode read is committed or quarantined, in every unit and in total."""
        return not self.unbalanced and self.read == self.committed + self.quarantined

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "units": self.units,
            "read": self.read,
            "committed": self.committed,
            "quarantined": self.quarantined,
            "conserved": self.conserved,
            "unbalanced_units": self.unbalanced,
            "datasets": {k: v.to_dict() for k, v in sorted(self.datasets.items())},
        }

    def table(self) -> str:
        """A fixed-width text table, one row per dataset plus a total."""
        head = ("dataset", "read", "committed", "quarantined", "train", "val", "frames", "tokens")
        rows = [(*head, "MiB")]
        for name, d in sorted(self.datasets.items()):
            counts = (d.read, d.committed, d.quarantined, d.episodes["train"], d.episodes["val"])
            label = name or "(no dataset)"  # a rejection whose source named none
            rows.append((label, *counts, d.frames, d.tokens, f"{d.bytes / MIB:.2f}"))
        total = (self.read, self.committed, self.quarantined)
        frames = sum(d.frames for d in self.datasets.values())
        train = sum(d.episodes["train"] for d in self.datasets.values())
        val = sum(d.episodes["val"] for d in self.datasets.values())
        tokens = frames * self.tokens_per_frame
        size = sum(d.bytes for d in self.datasets.values()) / MIB
        rows.append(("total", *total, train, val, frames, tokens, f"{size:.2f}"))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        lines = [f"{self.url}: {self.units} units"]
        for r in rows:
            cells = [str(r[0]).ljust(widths[0])]
            cells += [str(v).rjust(w) for v, w in zip(r[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells))
        verdict = "conserved" if self.conserved else f"NOT conserved (units {self.unbalanced})"
        lines.append(f"read = committed + quarantined: {verdict}")
        return "\n".join(lines)


def inspect_store(url: str) -> dict[str, Any]:
    """Everything `hma store inspect` prints: tokenizer, per-dataset counts and stats, quarantine."""
    ts = TokenStore.open(url)
    datasets = {}
    for name in ts.datasets:
        view = ts.dataset(name)
        datasets[name] = {
            "episodes": dict(Counter(view.split.tolist())),
            "frames": int(view.length.sum()),
            "tokens": int(view.length.sum()) * math.prod(ts.tokenizer.token_shape),
            "stride": view.stride,
            "action_dim": view.action_dim,
            "action_stats": view.stats.to_dict() if view.stats else None,
            "state_dim": view.state_dim,
            "state_stats": view.state_stats.to_dict() if view.state_stats else None,
            "success": {k: int((view.success == v).sum()) for k, v in SUCCESS_CODES.items()},
            "units": len(view.units),
            "finalized": view.spec is not None,
        }
    quarantine = ts.quarantine()
    return {
        "url": url,
        "format": FORMAT,
        "version": VERSION,
        "tokenizer": ts.tokenizer.to_dict(),
        "fingerprint": ts.fingerprint,
        "units": len(ts.units),
        "read": ts.read,
        "committed": sum(len(ts.dataset(n)) for n in ts.datasets),
        "quarantined": len(quarantine),
        "datasets": datasets,
        "quarantine": quarantine,
    }


def inspect_lines(info: dict[str, Any]) -> list[str]:
    """`inspect_store`'s dict as the short text `hma store inspect` prints."""
    tok = info["tokenizer"]
    lines = [
        f"{info['url']}: {info['format']} v{info['version']}, {info['units']} units",
        f"tokenizer: {tok['kind']} grid {tok['grid']} fingerprint {info['fingerprint']}",
        f"read {info['read']} = committed {info['committed']} + quarantined {info['quarantined']}",
    ]
    for name, d in info["datasets"].items():
        episodes = ", ".join(f"{k} {v}" for k, v in sorted(d["episodes"].items()))
        lines.append(
            f"  {name}: {episodes}; {d['frames']} frames, {d['tokens']} tokens, "
            f"stride {d['stride']}, action dim {d['action_dim']}, state dim {d['state_dim']}"
        )
        lines.append(f"    {success_line(d['success'])}")
        lines += _stats_lines("action", d["action_stats"])
        lines += _stats_lines("state", d["state_stats"])
    for q in info["quarantine"]:
        lines.append(f"  quarantined {q['dataset']}/{q['episode_id']}: {q['reason']}")
    return lines


def success_line(counts: dict[str, int]) -> str:
    """'success 2/10 labelled, 100%': the rate over episodes with a known outcome only."""
    labelled = counts["success"] + counts["failure"]
    total = labelled + counts["unknown"]
    if not labelled:
        return f"success 0/{total} labelled"
    return f"success {labelled}/{total} labelled, {counts['success'] / labelled:.0%}"


def _stats_lines(what: str, stats: dict[str, Any] | None) -> list[str]:
    """Per-dimension train stats of `what` ("action" | "state"), a line per statistic."""
    if not stats:
        return []
    lines = []
    for key in ("mean", "std", "min", "max"):
        values = " ".join(f"{v:.4g}" for v in stats[key])
        lines.append(f"    {what:>6} {key:>4} [{values}]")
    return lines


def decode_strip(url: str, n: int, tokenizer: Any, out_png: str) -> str:
    """Decode the first `n` stored episodes (datasets in name order) with `tokenizer` and write a
    PNG with one row per episode of STRIP_FRAMES evenly spaced kept frames; returns `out_png`."""
    if n < 1:
        raise ValueError(f"number of episodes to decode must be >= 1, got {n}")
    ts = TokenStore.open(url)
    if tokenizer.fingerprint != ts.fingerprint:
        raise StoreError(
            f"{url}: the store holds tokens of tokenizer {ts.fingerprint}, but the tokenizer given "
            f"has fingerprint {tokenizer.fingerprint}; decode with {ts.tokenizer.url}"
        )
    picks = [(name, i) for name in ts.datasets for i in range(len(ts.dataset(name)))][:n]
    if not picks:
        raise StoreError(f"{url}: the store has no committed episodes to decode")
    rows = []
    for name, i in picks:
        tokens, _ = ts.read_episode(name, i)
        which = np.unique(np.linspace(0, len(tokens) - 1, STRIP_FRAMES).round().astype(int))
        frames = tokenizer.decode(tokens[which]).cpu().numpy()  # (k, H, W, 3)
        row = np.zeros((STRIP_FRAMES, *frames.shape[1:]), dtype=np.uint8)
        row[: len(frames)] = frames
        rows.append(np.concatenate(list(row), axis=1))  # (H, STRIP_FRAMES * W, 3)
    storage.write_png(np.concatenate(rows, axis=0), out_png)  # (n * H, STRIP_FRAMES * W, 3)
    return out_png
