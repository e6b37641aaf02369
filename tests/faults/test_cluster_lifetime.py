"""A local cluster's processes end with its driver, even when the driver is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

DRIVER = """
import time, psutil
from hma.pipeline import cluster
cluster.connect()
time.sleep(2)
me = psutil.Process()
print(" ".join(str(p.pid) for p in me.children(recursive=True)), flush=True)
time.sleep(600)
"""
DEADLINE_S = 20


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killing_the_driver_ends_every_cluster_process():
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        names = {pid: " ".join(psutil.Process(pid).cmdline())[:60] for pid in pids}
        assert any("DashboardAgent" in n or "dashboard/agent" in n for n in names.values()), names
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and any(_running(p) for p in pids):
            time.sleep(0.5)
        left = {pid: names[pid] for pid in pids if _running(pid)}
        assert left == {}, f"still running {DEADLINE_S}s after the driver died: {left}"
    finally:
        if driver.poll() is None:
            driver.kill()
