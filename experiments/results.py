"""docs/results.md: each experiment writes its own section (table, command, commit, wall time,
machine load), replacing the section's previous version; nothing is copied by hand."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results.md"
HEADER = (
    "# Results\n\nEvery section below is written by the experiment script it names "
    "(`experiments/*.py`), with the exact command, the commit, the wall time and the machine load "
    "while it ran. Re-running a script replaces its section.\n"
)


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


class Run:
    """Wall time and load of one experiment run, for its provenance line."""

    def __init__(self, argv: list[str] | None = None):
        self.argv = argv if argv is not None else sys.argv
        self.start = time.time()
        self.commit = commit()  # the code that runs: later commits during a long run do not count
        self.loads: list[float] = []

    def sample_load(self) -> None:
        self.loads.append(os.getloadavg()[0])

    def provenance(self) -> str:
        self.sample_load()
        minutes = (time.time() - self.start) / 60
        command = "python -m experiments." + Path(self.argv[0]).stem + " " + " ".join(self.argv[1:])
        return (
            f"Command: `{command.strip()}`; commit {self.commit}; wall time {minutes:.1f} min; load "
            f"average (1 min) {min(self.loads):.1f}-{max(self.loads):.1f} on "
            f"{os.cpu_count()} cores ({platform.machine()}); "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        )


def write_image(data: bytes, name: str, results: Path = RESULTS) -> Path:
    """Save a plot beside `results` (in its img/ folder); returns its path."""
    path = results.parent / "img" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_section(title: str, body: str, path: Path = RESULTS) -> Path:
    """Put `## title` + `body` into `path`, replacing an earlier section of the same title."""
    text = path.read_text() if path.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")
    return path
