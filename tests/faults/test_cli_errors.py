"""Errors a user causes are one `hma: error:` line naming the culprit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from hma.envs.procedural import procedural_episodes
from hma.formats import write_episodes


def _hma(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hma.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_a_file_read_as_a_directory_format_is_one_line(tmp_path):
    src = str(tmp_path / "lift.hdf5")
    write_episodes(procedural_episodes("robosuite_lift", 2, 4, 32, 0), src, "robomimic")
    for fmt in ("lerobot", "rlds", "video"):
        out = _hma("datasets", "show", src, "--format", fmt)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2, out.stderr[-2000:]
        assert lines[-1].startswith(f"hma: error: {src}") and "Traceback" not in out.stderr


def test_an_unreachable_s3_endpoint_is_one_line(tmp_path):
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: nothing listens there
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_MAX_ATTEMPTS": "1",
    }
    out = _hma("datasets", "show", "s3://bucket/data", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("hma: error: cannot reach the object store") and "127.0.0.1:9" in last
