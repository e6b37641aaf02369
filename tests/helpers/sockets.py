"""Which TCP sockets start listening while a block runs, and on which address."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

LOOPBACK = ("127.", "::1", "::ffff:127.")
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Listener:
    ip: str
    port: int
    pid: int | None
    process: str  # the process's command line, shortened

    @property
    def loopback(self) -> bool:
        return self.ip.startswith(LOOPBACK)


def _listeners() -> set[Listener]:
    out = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN:
            continue
        try:
            name = " ".join(psutil.Process(conn.pid).cmdline())[:80] if conn.pid else ""
        except psutil.Error:
            name = ""
        out.add(Listener(conn.laddr.ip, conn.laddr.port, conn.pid, name))
    return out


@dataclass
class ListenerWatch:
    """Samples the machine's listening sockets while the `with` block runs; `new` holds those
    that were not listening before it started."""

    new: set[Listener] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> ListenerWatch:
        before = {(entry.pid, entry.port) for entry in _listeners()}

        def poll() -> None:
            while not self._stop.is_set():
                self.new |= {e for e in _listeners() if (e.pid, e.port) not in before}
                self._stop.wait(POLL_SECONDS)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
