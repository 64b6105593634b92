"""``raft-manager etcd up|down``: a local etcd cluster to try the etcd adapter on.

``up`` starts the members (``local.etcd``) and writes the cluster's entry into
clusters.yaml (``kind: etcd``, its endpoints, ``mode: sandbox`` and its ``dir`` so the
manager can kill, stop and restart members); ``down`` stops every member (data kept).
The answer is the same ``LocalClusterState`` as ``cluster up|down``, and both run
under the guard-and-audit path like the launcher (audited as ``cluster_up`` /
``cluster_down`` with ``kind: etcd``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..clients.etcd_gateway import EtcdGateway, num
from ..core import LocalClusterState, LocalNodeInfo, ManagerError
from ..core.config import state_dir
from ..local.etcd import EtcdLocalCluster
from .launcher import (
    base_port_for,
    cluster_state,
    process_info,
)
from .sandbox import (
    cmd_sandbox_down,
    cmd_sandbox_up,
    down_dir,
    record_up,
    stop_sandbox,
    up_dir,
)
from .ui import UI

DEFAULT_NAME = "etcd"
LOGS = "member logs in the cluster directory"


def default_dir() -> Path:
    return state_dir() / "etcd"


def up(
    directory: str | None,
    *,
    nodes: int,
    base_port: int | None,
    name: str,
    config: str | None,
    heartbeat_ms: int,
    election_ms: int,
) -> LocalClusterState:
    d = up_dir(directory, default_dir())
    base_port = base_port_for(base_port, nodes, 7400)
    t0 = time.monotonic()
    lc = EtcdLocalCluster.up(
        d, nodes=nodes, base_port=base_port, heartbeat_ms=heartbeat_ms, election_ms=election_ms
    )
    return record_up(
        lc,
        d,
        time.monotonic() - t0,
        describe,
        name=name,
        config=config,
        entry={"kind": "etcd", "endpoints": lc.endpoints(), "dir": str(lc.dir), "mode": "sandbox"},
        started=f"{nodes} etcd members",
        leader="leader",
    )


def down(directory: str | None, *, name: str, config: str | None) -> LocalClusterState:
    d = down_dir(directory, name, config, "etcd", default_dir())
    return stop_sandbox(d, EtcdLocalCluster.load, describe, "etcd member(s)")


def describe(lc: EtcdLocalCluster, action: str, seconds: float, detail: str) -> LocalClusterState:
    infos: list[LocalNodeInfo] = []
    gw = EtcdGateway()
    try:
        for m in lc.members:
            alive = lc.alive(m)
            role = term = None
            if alive:
                try:
                    st = gw.call(lc.client_url(m), "maintenance/status")
                except ManagerError:
                    st = None
                if st is not None:
                    me = num(st.get("header") or {}, "member_id", "memberId")
                    role = "leader" if num(st, "leader") == me else "follower"
                    role = "learner" if st.get("isLearner") else role
                    term = num(st, "raftTerm")
            url = lc.client_url(m)
            infos.append(
                process_info(lc.dir, m.name, m.peer_url, url, m.data_dir, m.pid, alive, role, term)
            )
    finally:
        gw.close()
    return cluster_state(lc.dir, action, seconds, detail, infos)


# -- the commands --------------------------------------------------------------------


def cmd_etcd_up(args: argparse.Namespace, ui: UI) -> int:
    return cmd_sandbox_up(
        args,
        ui,
        "etcd",
        f"starting {args.nodes} etcd members and waiting for a leader",
        LOGS,
        up,
        heartbeat_ms=args.heartbeat_ms,
        election_ms=args.election_ms,
    )


def cmd_etcd_down(args: argparse.Namespace, ui: UI) -> int:
    return cmd_sandbox_down(args, ui, "etcd", "stopping the etcd members", LOGS, down)
