"""``raft-manager nats up|down``: a local NATS JetStream cluster to try the NATS adapter on.

``up`` starts the servers (``local.nats``) and writes the cluster's entry into
clusters.yaml (``kind: nats``, its client and monitoring URLs, the system-account user
and the file holding its password, ``mode: sandbox`` and its ``dir`` so the manager can
kill, stop, restart and add servers); ``down`` stops every server (data kept). Both
answer a ``LocalClusterState`` and run under the guard-and-audit path, audited as
``cluster_up`` / ``cluster_down`` with ``kind: nats`` (as ``etcd up|down`` are).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..core import LocalClusterState, LocalNodeInfo
from ..core.config import state_dir
from ..local.nats import SYS_USER, NatsLocalCluster, get_json
from .launcher import base_port_for, cluster_state, process_info
from .sandbox import (
    cmd_sandbox_down,
    cmd_sandbox_up,
    down_dir,
    record_up,
    stop_sandbox,
    up_dir,
)
from .ui import UI

LOGS = "server logs in the cluster directory"


def default_dir() -> Path:
    return state_dir() / "nats"


def entry(lc: NatsLocalCluster) -> dict[str, Any]:
    """The clusters.yaml entry of a local NATS cluster."""
    return {
        "kind": "nats",
        "servers": lc.client_urls(),
        "monitor": lc.monitor_urls(),
        "username": SYS_USER,
        "password_file": str(lc.password_file),
        "dir": str(lc.dir),
        "mode": "sandbox",
    }


def up(
    directory: str | None, *, nodes: int, base_port: int | None, name: str, config: str | None
) -> LocalClusterState:
    d = up_dir(directory, default_dir())
    # Clients on base+i and monitoring on base+100+i are the ports checked; routes
    # (base+50+i) sit inside the same reserved block.
    base_port = base_port_for(base_port, nodes, 7700)
    t0 = time.monotonic()
    lc = NatsLocalCluster.up(d, nodes=nodes, base_port=base_port)
    return record_up(
        lc,
        d,
        time.monotonic() - t0,
        describe,
        name=name,
        config=config,
        entry=entry(lc),
        started=f"{nodes} nats-server processes",
        leader="JetStream meta leader",
    )


def down(directory: str | None, *, name: str, config: str | None) -> LocalClusterState:
    d = down_dir(directory, name, config, "nats", default_dir())
    return stop_sandbox(d, NatsLocalCluster.load, describe, "nats-server(s)")


def describe(lc: NatsLocalCluster, action: str, seconds: float, detail: str) -> LocalClusterState:
    """Each server, its pid and its role in the meta group."""
    infos: list[LocalNodeInfo] = []
    for s in lc.servers:
        alive = lc.alive(s)
        role = None
        if alive:
            try:
                meta = get_json(f"{s.monitor_url}/jsz").get("meta_cluster") or {}
            except (OSError, ValueError):
                meta = {}
            if meta.get("leader"):
                role = "leader" if meta["leader"] == s.name else "follower"
        infos.append(
            process_info(
                lc.dir, s.name, s.route_url, s.client_url, s.data_dir, s.pid, alive, role, None
            )
        )
    return cluster_state(lc.dir, action, seconds, detail, infos)


# -- the commands --------------------------------------------------------------------


def cmd_nats_up(args: argparse.Namespace, ui: UI) -> int:
    return cmd_sandbox_up(
        args,
        ui,
        "nats",
        f"starting {args.nodes} nats-servers and waiting for a meta leader",
        LOGS,
        up,
    )


def cmd_nats_down(args: argparse.Namespace, ui: UI) -> int:
    return cmd_sandbox_down(args, ui, "nats", "stopping the nats-servers", LOGS, down)
