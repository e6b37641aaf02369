"""Connect to Ray: join an existing cluster if one is named, else start a local one on loopback only.

Local clusters bind every listener to 127.0.0.1 and run with token auth disabled. Both need
environment variables that Ray's child processes inherit, so they are set before `ray.init`
(measured with Ray 2.60, ../shared/NOTES.md):
- RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps the node address at 127.0.0.1; without it Ray rewrites
  it to the machine's network address and binds every interface even when 127.0.0.1 is passed.
- RAY_AUTH_MODE=disabled: otherwise the first `ray.init` writes ~/.ray/auth_token and a later
  `ray job submit` fails unless client and cluster agree.
A local cluster's processes end with the process that started it, however it ends
(hma.pipeline.reaper).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray

from hma.pipeline import reaper

LOOPBACK = "127.0.0.1"
ADDRESS_ENV = "RAY_ADDRESS"
VERBOSE_ENV = "HMA_VERBOSE"  # 1: keep Ray Data's per-dataset INFO logs on the console
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


@dataclass(frozen=True)
class LocalClusterConfig:
    """Resources of a cluster started in this process (None: Ray detects them)."""

    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory: int | None = None
    include_dashboard: bool = False


def loopback_environment() -> dict[str, str]:
    """Environment variables every Ray process of a local cluster needs (see module doc)."""
    return dict(LOCAL_ENV)


def connect(address: str | None = None, local: LocalClusterConfig | None = None) -> str:
    """Join the cluster at `address` (or $RAY_ADDRESS); else start a loopback-only local one.

    Returns the address of the cluster joined. Calling it when Ray is already initialised
    in this process reuses that connection.
    """
    if not os.environ.get(VERBOSE_ENV):
        # Ray Data logs every dataset's plan (and, off a TTY, its progress) at INFO; our commands
        # print their own summaries. Ray Data reads this when it configures its loggers.
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    address = address or os.environ.get(ADDRESS_ENV) or None
    if address and address != "local":
        ray.init(address=address, log_to_driver=True)
        return ray.get_runtime_context().gcs_address
    return start_local(local or LocalClusterConfig())


def start_local(config: LocalClusterConfig) -> str:
    """Start a single-node cluster in this process, every listener on 127.0.0.1."""
    os.environ.update(loopback_environment())
    # Ray read the variable into a constant when it was imported, possibly before this call;
    # child processes read the environment, this process needs the constant too.
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(
        # "local" always starts a new cluster; a bare init() may join a stale one recorded in
        # /tmp/ray/ray_current_cluster (NOTES.md).
        address="local",
        _node_ip_address=LOOPBACK,
        num_cpus=config.num_cpus,
        num_gpus=config.num_gpus,
        object_store_memory=config.object_store_memory,
        include_dashboard=config.include_dashboard,
        dashboard_host=LOOPBACK,
        configure_logging=False,
        log_to_driver=False,
    )
    reaper.start(os.getpid())
    return ray.get_runtime_context().gcs_address


def shutdown() -> None:
    """Disconnect (and stop the cluster if this process started it). Never `ray stop`."""
    if ray.is_initialized():
        ray.shutdown()
