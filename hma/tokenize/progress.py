"""Training progress from a Ray Train worker to the driver's console and TensorBoard event files.

    rank-0 worker ──ray.util.queue.Queue (a small actor)──▶ driver thread ──▶ stdout, tfevents

Worker output does not reach the driver's console on a local cluster (`log_to_driver=False`),
and `Result.metrics` only holds the last checkpointed report, so the worker sends each record
through a queue actor and the driver prints and logs it while `fit()` runs. Event files are
written with tensorboardX (a Ray Train dependency), which needs no TensorFlow or tensorboard.
"""

from __future__ import annotations

import queue as stdlib_queue
import threading
import time
from typing import Any

from ray.util.queue import Queue

POLL_SECONDS = 0.5
CONSOLE_KEYS = ("loss", "psnr", "val_psnr", "kl", "codes_used", "lr", "frames_per_s")


class ProgressSink:
    """Worker side: send a record (step + scalar metrics) to the driver; no-op off rank 0."""

    def __init__(self, channel: Queue | None, rank: int):
        self.channel = channel if rank == 0 else None

    def send(self, record: dict[str, Any]) -> None:
        if self.channel is not None:
            self.channel.put_nowait(record)


def format_record(record: dict[str, Any], max_steps: int) -> str:
    if "message" in record:
        return str(record["message"])
    parts = [f"step {record['step']:>6}/{max_steps}"]
    for key in CONSOLE_KEYS:
        if key in record:
            value = record[key]
            parts.append(
                f"{key} {value:.3g}" if key in ("lr", "loss", "kl") else f"{key} {value:.4g}"
            )
    minutes, seconds = divmod(int(record.get("seconds", 0)), 60)
    parts.append(f"{minutes}:{seconds:02d}")
    return "  ".join(parts)


class ProgressPrinter:
    """Driver side: a thread that drains the queue into the console and a SummaryWriter."""

    def __init__(self, logdir: str, max_steps: int, echo: bool = True):
        from tensorboardX import SummaryWriter

        self.channel = Queue(actor_options={"num_cpus": 0})
        self.writer = SummaryWriter(logdir)
        self.max_steps = max_steps
        self.echo = echo
        self.records: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokenizer-progress", daemon=True)

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
        if self.echo:
            print(format_record(record, self.max_steps), flush=True)
        if "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"tokenizer/{key}", value, record["step"])
            self.writer.flush()
