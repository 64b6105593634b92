"""Local process management: raft-node clusters (``cluster``) and etcd clusters (``etcd``)
on this machine, the pid primitives both use (``pids``), and their ports."""

from .cluster import (
    CLUSTER_FILE,
    ClusterError,
    LocalCluster,
    LocalNode,
    LocalSettings,
    ensure_running,
    is_running,
)
from .ports import free_base_port, port_free, ports_free

__all__ = [
    "CLUSTER_FILE",
    "ClusterError",
    "LocalCluster",
    "LocalNode",
    "LocalSettings",
    "ensure_running",
    "free_base_port",
    "is_running",
    "port_free",
    "ports_free",
]
