"""What a tokenize run did: counts per dataset (this run and the whole store), time per stage.

This run's counts come from two independent places: the rows the driver received (`read`) and
the commit records the writers returned (`committed`, `quarantined`), so a writer that loses an
episode shows up as `read != committed + quarantined` instead of passing silently.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hma.pipeline.store import StoreSummary

# driver stages (wall seconds): setup (tokenizer metadata, store creation), plan, finalize;
# worker stages (seconds summed over tasks): load (list, decode, validate), resize, encode, write
STAGES = ("setup", "plan", "load", "resize", "encode", "write", "finalize")
# start-up milestones the rows carry (epoch seconds, set by the load tasks and the actors)
ROW_MILESTONES = ("load_at", "actor_boot", "actor_init", "actor_ready")
MAX_LISTED = 10  # failed units listed in full


@dataclass
class RunCounts:
    """One dataset's episodes in this run."""

    read: int = 0
    committed: int = 0
    quarantined: int = 0
    frames: int = 0  # kept frames committed
    steps: int = 0  # raw steps of the committed episodes

    @property
    def balanced(self) -> bool:
        return self.read == self.committed + self.quarantined


@dataclass
class TokenizeSummary:
    store: str
    units_planned: int = 0
    units_skipped: int = 0  # committed by an earlier run
    units_committed: int = 0
    units_failed: list[tuple[str, str]] = field(default_factory=list)
    units_incomplete: list[str] = field(default_factory=list)
    duplicates: int = 0  # rows a retried upstream task sent twice (ignored)
    repeated_sources: list[str] = field(default_factory=list)  # listed twice in the job, read once
    datasets: dict[str, RunCounts] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)  # quarantine reasons, first words
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)  # perf_counter() at the job start
    started_at: float = field(default_factory=time.time)  # the same instant, epoch seconds
    # start-up milestones, seconds after the start: driver marks, and the earliest of each
    # ROW_MILESTONES over the rows (workers stamp epoch time; one machine's clock, or NTP's)
    milestones: dict[str, float] = field(default_factory=dict)
    first_row: float | None = None  # perf_counter() when the first / last token row arrived
    last_row: float = 0.0
    _lap: float | None = None
    store_summary: StoreSummary | None = None

    def lap(self, stage: str | None = None) -> None:
        """Close a driver stage: the wall time since the previous lap goes to `stage`."""
        now = time.perf_counter()
        if stage is not None:
            self.stage_seconds[stage] += now - (self._lap or self.started)
        self._lap = now

    def mark(self, milestone: str) -> None:
        """Record that the driver reached `milestone` (seconds since the start)."""
        self.milestones[milestone] = time.perf_counter() - self.started

    def _row_milestones(self, row: dict[str, Any]) -> None:
        for name in ROW_MILESTONES:
            if name in row:
                at = float(row[name]) - self.started_at
                self.milestones[name] = min(self.milestones.get(name, at), at)

    def _counts(self, dataset: str) -> RunCounts:
        return self.datasets.setdefault(dataset, RunCounts())

    def count_row(self, row: dict[str, Any]) -> None:
        """A token row reached the driver: one episode read (the empty-unit marker is none)."""
        self.last_row = time.perf_counter()
        if self.first_row is None:
            self.first_row = self.last_row
        self._row_milestones(row)
        if int(row["index"]) < 0:
            return
        self._counts(str(row["dataset"])).read += 1
        if row["reason"]:
            self.reasons[str(row["reason"]).split(":")[0]] += 1
        else:
            self._counts(str(row["dataset"])).steps += int(row["steps"])
        for stage in ("load", "resize", "encode"):
            self.stage_seconds[stage] += float(row[f"{stage}_s"])

    def count_commit(self, commit: dict[str, Any], seconds: float) -> None:
        """A writer task returned its unit's commit record."""
        self.units_committed += 1
        self.stage_seconds["write"] += seconds
        for name, rec in commit["datasets"].items():
            self._counts(name).committed += int(rec["episodes"])
            self._counts(name).frames += int(rec["frames"])
        for name, n in commit["quarantined"].items():
            self._counts(name).quarantined += int(n)

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.datasets.values())

    @property
    def startup_seconds(self) -> float:
        """From the job start to the first token row: model loads, planning, actor start."""
        return (self.first_row - self.started) if self.first_row is not None else 0.0

    def startup_breakdown(self) -> dict[str, float]:
        """The start-up (job start -> first token row) cut into consecutive phases that sum to
        `startup_seconds`; a phase whose milestone is unknown or came earlier counts 0 s."""
        if self.first_row is None:
            return {}
        seconds = self.stage_seconds
        ends = {
            "setup (tokenizer metadata, store)": seconds["setup"],
            "plan": seconds["setup"] + seconds["plan"],
            "connect to Ray": self.milestones.get("connected", 0.0),
            "build the Ray Data chain": self.milestones.get("pipeline", 0.0),
            "actor worker start (process, Ray, imports)": self.milestones.get("actor_init", 0.0),
            "actor model load (torch, checkpoint)": self.milestones.get("actor_ready", 0.0),
            "first batch (decoded unit, encode, hand-over)": self.startup_seconds,
        }
        out, previous = {}, 0.0
        for phase, end in ends.items():
            end = min(max(end, previous), self.startup_seconds)
            out[phase], previous = end - previous, end
        return out

    @property
    def steady_fps(self) -> float:
        """Frames/s between the first and the last token row (start-up and finalize excluded)."""
        span = self.last_row - (self.first_row or self.last_row)
        return self.frames / span if span > 0 else 0.0

    @property
    def episodes(self) -> int:
        return sum(c.committed for c in self.datasets.values())

    @property
    def ok(self) -> bool:
        """Every unit committed, and every episode read committed or quarantined."""
        store_ok = self.store_summary is None or self.store_summary.conserved
        done = self.units_committed == self.units_planned
        balanced = all(c.balanced for c in self.datasets.values())
        return done and balanced and store_ok and not self.units_failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "ok": self.ok,
            "units": {
                "planned": self.units_planned,
                "skipped": self.units_skipped,
                "committed": self.units_committed,
                "failed": [list(f) for f in self.units_failed],
                "incomplete": self.units_incomplete,
            },
            "duplicates_ignored": self.duplicates,
            "repeated_sources": self.repeated_sources,
            "datasets": {k: vars(v) for k, v in sorted(self.datasets.items())},
            "quarantine_reasons": dict(self.reasons),
            "stage_seconds": self.stage_seconds,
            "wall_seconds": self.wall_seconds,
            "frames_per_second": self.frames / max(self.wall_seconds, 1e-9),
            "steady_frames_per_second": self.steady_fps,
            "startup_seconds": self.startup_seconds,
            "startup_breakdown": self.startup_breakdown(),
            "milestones": self.milestones,
            "store_summary": self.store_summary.to_dict() if self.store_summary else None,
        }

    def lines(self) -> list[str]:
        out = [
            f"tokenize -> {self.store}: {self.units_committed}/{self.units_planned} units committed"
            f" ({self.units_skipped} already in the store)",
            f"{'dataset':<22}{'read':>8}{'committed':>11}{'quarantined':>13}{'frames':>10}",
        ]
        for name, c in sorted(self.datasets.items()):
            flag = "" if c.balanced else "  <-- read != committed + quarantined"
            out.append(
                f"{name:<22}{c.read:>8}{c.committed:>11}{c.quarantined:>13}{c.frames:>10}{flag}"
            )
        rate = self.frames / max(self.wall_seconds, 1e-9)
        out.append(
            f"{self.episodes} episodes, {self.frames} frames in {self.wall_seconds:.1f}s "
            f"({rate:.1f} frames/s end to end; {self.steady_fps:.1f} steady after "
            f"{self.startup_seconds:.1f}s to the first tokens)"
        )
        if self.first_row is not None:
            out.append(
                "start-up: "
                + ", ".join(f"{k} {v:.1f}" for k, v in self.startup_breakdown().items())
            )
        out.append(
            "seconds per stage (driver: wall; workers: summed over tasks): "
            + ", ".join(f"{k} {v:.1f}" for k, v in self.stage_seconds.items())
        )
        if self.reasons:
            out.append(
                "quarantined: " + ", ".join(f"{k} x{n}" for k, n in self.reasons.most_common())
            )
        if self.duplicates:
            out.append(f"{self.duplicates} duplicate rows from retried tasks ignored")
        for url in self.repeated_sources:
            out.append(f"source {url} is listed more than once in the job; read once")
        for unit, reason in self.units_failed[:MAX_LISTED]:
            out.append(f"FAILED unit {unit}: {reason} (re-run the job to retry it)")
        if len(self.units_failed) > MAX_LISTED:
            out.append(f"... {len(self.units_failed) - MAX_LISTED} more failed units")
        if self.units_incomplete:
            out.append(f"INCOMPLETE units (rows missing): {', '.join(self.units_incomplete)}")
        if self.store_summary is not None:
            out.append("store totals:")
            out.append(self.store_summary.table())
        out.append("OK" if self.ok else "NOT OK: counts do not balance or units failed")
        return out
