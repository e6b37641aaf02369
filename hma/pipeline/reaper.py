"""`python -m hma.pipeline.reaper PID`: a local cluster's processes end with the driver that
started it, even when the driver is killed without warning (SIGKILL, OOM).

Ray's raylet and GCS notice a dead driver, but the agents the raylet starts (DashboardAgent,
RuntimeEnvAgent) first try to flush their logs to the dead GCS and outlive it by a minute or more
(measured with Ray 2.60). This watchdog, started in its own session beside the cluster, notes the
driver's descendants every POLL_SECONDS; once the driver is gone it stops every one of them still
running (SIGTERM, then SIGKILL after GRACE_SECONDS), and exits. A process is identified by pid and
start time, so a reused pid is never touched.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import psutil

POLL_SECONDS = 0.5
GRACE_SECONDS = 3.0


def start(driver_pid: int) -> subprocess.Popen:
    """Watch `driver_pid` from a process of its own session (a signal to the driver's process
    group does not reach it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "hma.pipeline.reaper", str(driver_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch(driver_pid: int) -> None:
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    me = psutil.Process().pid
    seen: dict[tuple[int, float], psutil.Process] = {}
    while _alive(driver):
        with contextlib.suppress(psutil.Error):  # the driver may die while we look
            for child in driver.children(recursive=True):
                if child.pid != me:
                    seen.setdefault((child.pid, child.create_time()), child)
        time.sleep(POLL_SECONDS)
    survivors = [p for p in seen.values() if _alive(p)]  # is_running() checks the start time
    for process in survivors:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, still = psutil.wait_procs(survivors, timeout=GRACE_SECONDS)
    for process in still:
        with contextlib.suppress(psutil.Error):
            process.kill()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
