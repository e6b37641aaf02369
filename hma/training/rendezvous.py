"""torch.distributed's rendezvous on 127.0.0.1 when the whole Ray cluster is on this machine.

Ray Train's default TorchConfig starts the process group's TCPStore on the rank-0 worker, and a
TCPStore server listens on every interface whatever host it is given (measured with torch 2.13:
`*:PORT`), and gloo binds the address the machine's hostname resolves to. On a loopback-only
cluster nothing may listen beyond 127.0.0.1 (NOTES.md), so there:

  - rank 0 hosts the TCPStore on a socket it bound to 127.0.0.1 itself (`master_listen_fd`);
  - every rank joins it as a client and builds its gloo process group on the loopback device
    (GLOO_SOCKET_IFNAME=lo).

A cluster with any node beyond loopback keeps Ray Train's own rendezvous: its workers must reach
each other over the network.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import ray
import torch.distributed as dist
from ray.train._internal.worker_group import WorkerGroup as V1WorkerGroup
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

LOOPBACK = "127.0.0.1"
LOOPBACK_DEVICE = "lo"
LISTEN_BACKLOG = 128
_HOSTED: dict[str, Any] = {}  # rank 0's store server and its socket, alive with the process


def cluster_is_loopback() -> bool:
    """True when every alive node of the connected Ray cluster has a 127.x address."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return bool(nodes) and all(n["NodeManagerAddress"].startswith("127.") for n in nodes)


def torch_config() -> TorchConfig:
    """The TorchConfig for a TorchTrainer on the connected cluster (see the module doc)."""
    return LoopbackTorchConfig() if cluster_is_loopback() else TorchConfig()


def _host_store(timeout_s: int) -> int:
    """Rank 0: a TCPStore server on a socket bound to 127.0.0.1; returns its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    sock.listen(LISTEN_BACKLOG)
    port = sock.getsockname()[1]
    # the store owns the descriptor from here: detach it, or Python would close it under the store
    store = dist.TCPStore(
        LOOPBACK,
        port,
        None,
        True,
        timeout=datetime.timedelta(seconds=timeout_s),
        wait_for_workers=False,
        master_listen_fd=sock.detach(),
    )
    _HOSTED["store"] = store
    return port


def _join(port: int, world_rank: int, world: int, timeout_s: int) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK_DEVICE
    timeout = datetime.timedelta(seconds=timeout_s)
    store = _HOSTED.get("store") or dist.TCPStore(LOOPBACK, port, None, False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=world_rank, world_size=world, timeout=timeout)


class _LoopbackBackend(_TorchBackend):
    """Ray Train's torch backend with the rendezvous above (gloo: loopback clusters are CPU or
    single-machine GPU test clusters; NCCL's bootstrap is not covered)."""

    def on_start(self, worker_group, backend_config: LoopbackTorchConfig) -> None:
        if not isinstance(worker_group, V1WorkerGroup):  # as Ray Train's own on_start does
            worker_group.execute(_set_torch_distributed_env_vars)
        port = worker_group.execute_single(0, _host_store, timeout_s=backend_config.timeout_s)
        world = len(worker_group)
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    _join,
                    port=port,
                    world_rank=rank,
                    world=world,
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(world)
            ]
        )


class LoopbackTorchConfig(TorchConfig):
    @property
    def backend_cls(self):
        return _LoopbackBackend
