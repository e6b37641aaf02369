"""The local cluster listens on loopback only, checked against the OS socket table."""

from __future__ import annotations

import ipaddress
import os

import psutil
import ray


def _listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    # psutil reads /proc/net/tcp{,6} and maps socket inodes to processes.
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            out.append((conn.pid, conn.laddr.ip, conn.laddr.port))
    return out


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def test_local_cluster_listens_on_loopback_only(ray_cluster):
    @ray.remote
    def pid() -> int:
        return os.getpid()

    ray.get([pid.remote() for _ in range(4)])  # make sure workers exist
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    sockets = _listening_sockets(pids)
    assert len(sockets) >= 3, f"expected Ray's GCS, raylet and workers to listen: {sockets}"
    exposed = [s for s in sockets if not _is_loopback(s[1])]
    assert not exposed, f"listeners beyond loopback: {exposed}"


def test_cluster_address_is_loopback(ray_cluster):
    host = ray_cluster.rsplit(":", 1)[0]
    assert _is_loopback(host)
    assert ray.util.get_node_ip_address() == "127.0.0.1"
