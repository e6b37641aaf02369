"""A node dies mid-run (ray.cluster_utils.Cluster): the job still commits every unit, once.

The scenario needs a multi-node cluster of its own, so it runs in a child Python process (the
session cluster of the other tests stays untouched); the cluster shuts down when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hma.pipeline.cluster import loopback_environment
from tests.helpers.tokenize_fixtures import (
    assert_store_matches,
    expected_content,
    save_tiny_tokenizer,
    write_video_source,
)

TIMEOUT_S = 240

# Head without CPUs (the driver only); two 2-CPU worker nodes, so the one left can still hold the
# tokenizer actor beside the load and write tasks. As soon as the tokenizer actor is alive, the
# node holding it (with its share of load tasks and their outputs) is removed without warning.
SCENARIO = textwrap.dedent(
    """
    import json, sys, threading, time
    import ray
    from ray._private import state
    from ray.cluster_utils import Cluster
    from hma.pipeline.store import committed_units
    from hma.pipeline.tokenize_job import TokenizeJobConfig, run_tokenize

    config = TokenizeJobConfig.model_validate(json.loads(sys.argv[1]))
    node_args = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "num_cpus": 0})
    nodes = [cluster.add_node(**node_args, num_cpus=2) for _ in range(2)]
    ray.init(address=cluster.address)
    removed = {}

    def remove_the_actor_node():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            alive = state.actors(actor_state_name="ALIVE").values()
            homes = [a["Address"]["NodeID"] for a in alive if "TokenizeActor" in a["ActorClassName"]]
            if homes:
                node = next(n for n in nodes if n.node_id == homes[0])
                removed["node"] = node.node_id
                removed["commits_before"] = len(committed_units(config.store))
                cluster.remove_node(node, allow_graceful=False)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=remove_the_actor_node)
    killer.start()
    try:
        summary = run_tokenize(config)
        killer.join()
        print("RESULT " + json.dumps({**removed, "summary": summary.to_dict()}, default=str))
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


@pytest.mark.slow
def test_a_node_removed_mid_run(tmp_path):
    ckpt = save_tiny_tokenizer("fsq", str(tmp_path / "fsq"))
    sources = [write_video_source(str(tmp_path / "video"), count=12)]
    url = str(tmp_path / "store.zarr")
    config = {
        "sources": sources,
        "tokenizer": ckpt,
        "store": url,
        "episodes_per_unit": 1,
        "batch_episodes": 1,
        "max_inflight_writes": 1,
        "load_cpus": 0.5,
        "write_cpus": 0.25,
        "progress": False,
    }
    env = {**os.environ, **loopback_environment()}
    env.pop("RAY_ADDRESS", None)
    # its own process group: on a timeout the child and every Ray process it started go together
    proc = subprocess.Popen(
        [sys.executable, "-c", SCENARIO, json.dumps(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, out[-3000:] + err[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert "node" in result, "the actor's node was never removed"
    assert result["commits_before"] < 12  # removed mid-run
    summary = result["summary"]
    assert summary["ok"], summary
    assert summary["units"]["committed"] == 12
    assert_store_matches(url, expected_content(sources, ckpt), "vq")
