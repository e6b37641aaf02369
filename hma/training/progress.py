"""Training progress from a Ray Train worker to the driver's console and TensorBoard event files.

    rank-0 worker ──ray.util.queue.Queue (a small actor)──▶ driver thread ──▶ stdout, tfevents

Worker output does not reach the driver's console on a local cluster (`log_to_driver=False`),
and `Result.metrics` only holds the last checkpointed report, so the worker sends each record
through a queue actor and the driver prints and logs it while `fit()` runs. Event files are
written with tensorboardX (a Ray Train dependency), which needs no TensorFlow or tensorboard.

A record is {"step", "seconds", scalar metrics ...} or {"message": text}. Each trainer says which
metrics its console line shows and under which TensorBoard section its untagged scalars go
(`Console`); a metric named "a/b" keeps its own tag.
"""

from __future__ import annotations

import queue as stdlib_queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from ray.util.queue import Queue

POLL_SECONDS = 0.5
BAR_WIDTH = 20


@dataclass(frozen=True)
class Console:
    """What a trainer's progress looks like: the metrics on its console line (in order) and the
    TensorBoard section of its untagged scalars."""

    keys: tuple[str, ...]
    section: str


class ProgressSink:
    """Worker side: send a record (step + scalar metrics) to the driver; no-op off rank 0."""

    def __init__(self, channel: Queue | None, rank: int):
        self.channel = channel if rank == 0 else None

    def send(self, record: dict[str, Any]) -> None:
        if self.channel is not None:
            self.channel.put_nowait(record)


def format_record(record: dict[str, Any], max_steps: int, keys: tuple[str, ...]) -> str:
    """One console line: a progress bar over the step budget, the `keys` present, the time."""
    if "message" in record:
        return str(record["message"])
    step = int(record["step"])
    filled = min(BAR_WIDTH, BAR_WIDTH * step // max(max_steps, 1))
    parts = [f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] step {step:>6}/{max_steps}"]
    parts += [f"{key} {record[key]:.4g}" for key in keys if key in record]
    minutes, seconds = divmod(int(record.get("seconds", 0)), 60)
    parts.append(f"{minutes}:{seconds:02d}")
    return "  ".join(parts)


class ProgressPrinter:
    """Driver side: a thread that drains the queue into the console and a SummaryWriter."""

    def __init__(self, logdir: str, max_steps: int, console: Console, echo: bool = True):
        from tensorboardX import SummaryWriter

        self.channel = Queue(actor_options={"num_cpus": 0})
        self.writer = SummaryWriter(logdir)
        self.max_steps = max_steps
        self.console = console
        self.echo = echo
        self.records: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="training-progress", daemon=True)

    def __enter__(self) -> ProgressPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()
        self.writer.close()
        self.channel.shutdown()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._handle(self.channel.get(timeout=POLL_SECONDS))
            except stdlib_queue.Empty:
                continue
            except Exception:  # noqa: BLE001 - the queue actor is gone: training ended or failed
                time.sleep(POLL_SECONDS)

    def _drain(self) -> None:
        try:
            while not self.channel.empty():
                self._handle(self.channel.get_nowait())
        except Exception:  # noqa: BLE001 - nothing left to read
            pass

    def _handle(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        shown = "message" in record or any(key in record for key in self.console.keys)
        if self.echo and shown:
            print(format_record(record, self.max_steps, self.console.keys), flush=True)
        if "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    tag = key if "/" in key else f"{self.console.section}/{key}"
                    self.writer.add_scalar(tag, value, record["step"])
            self.writer.flush()
