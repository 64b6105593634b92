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
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..clients.etcd_gateway import EtcdGateway, num
from ..core import ClusterConfig, LocalClusterState, LocalNodeInfo, ManagerError
from ..core.config import ENV_CONFIG, state_dir
from ..local.etcd import EtcdLocalCluster
from . import render
from .launcher import (
    base_port_for,
    cluster_state,
    process_info,
    run_launcher,
    stopped_detail,
)
from .ui import EXIT_OK, UI

DEFAULT_NAME = "etcd"


def default_dir() -> Path:
    return state_dir() / "etcd"


def config_path(given: str | None) -> Path:
    """Where the entry goes: --config, else $RAFT_MANAGER_CONFIG, else STATE_DIR/clusters.yaml."""
    return Path(given or os.environ.get(ENV_CONFIG) or state_dir() / "clusters.yaml").expanduser()


def write_entry(path: Path, name: str, entry: dict[str, Any]) -> None:
    """Add (or replace) cluster ``name`` in the clusters.yaml at ``path``, keeping the rest
    (the local launchers of external kinds, etcd and nats, write their entries so)."""
    doc: dict = {}
    if path.exists():
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise ManagerError(f"{path} is not a clusters.yaml mapping", "fix or move it")
    doc.setdefault("clusters", {})[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


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
    d = Path(directory).expanduser().resolve() if directory else default_dir()
    base_port = base_port_for(base_port, nodes, 7400)
    t0 = time.monotonic()
    lc = EtcdLocalCluster.up(
        d, nodes=nodes, base_port=base_port, heartbeat_ms=heartbeat_ms, election_ms=election_ms
    )
    took = time.monotonic() - t0
    path = config_path(config)
    write_entry(
        path,
        name,
        {"kind": "etcd", "endpoints": lc.endpoints(), "dir": str(lc.dir), "mode": "sandbox"},
    )
    st = describe(lc, "up", took, "")
    st.detail = (
        f"{nodes} etcd members up in {d}; leader {st.leader} (in {took:.1f}s); cluster "
        f"{name!r} written to {path} (use --config {path} --cluster {name})"
    )
    return st


def down(directory: str | None, *, name: str, config: str | None) -> LocalClusterState:
    d = (
        Path(directory).expanduser().resolve()
        if directory
        else dir_from_config(name, config, "etcd", default_dir())
    )
    t0 = time.monotonic()
    lc = EtcdLocalCluster.load(d)
    stopped = lc.down()
    return describe(lc, "down", time.monotonic() - t0, stopped_detail(stopped, "etcd member(s)"))


def dir_from_config(name: str, config: str | None, kind: str, default: Path) -> Path:
    """The ``dir`` of cluster ``name`` (of ``kind``) in the clusters.yaml in use, else
    ``default``: what ``etcd down`` / ``nats down`` stop when given no --dir."""
    path = config_path(config)
    if path.exists():
        doc = yaml.safe_load(path.read_text()) or {}
        entry = (doc.get("clusters") or {}).get(name) or {}
        if entry.get("kind") == kind and entry.get("dir"):
            return Path(entry["dir"])
    return default


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


def _guarded(
    args: argparse.Namespace,
    operation: str,
    arguments: dict[str, Any],
    fn: Callable[[], LocalClusterState],
) -> LocalClusterState:
    """Run ``fn`` under the guard (policy, one audit line) as a sandbox etcd cluster."""
    c = ClusterConfig(name=args.name, kind="etcd", dir=args.dir, mode="sandbox")
    return run_launcher(
        args,
        c,
        operation,
        {"kind": "etcd", **arguments},
        fn,
        "member logs in the cluster directory",
    )


def cmd_etcd_up(args: argparse.Namespace, ui: UI) -> int:
    def start() -> LocalClusterState:
        with ui.spinner(f"starting {args.nodes} etcd members and waiting for a leader"):
            return up(
                args.dir,
                nodes=args.nodes,
                base_port=args.base_port,
                name=args.name,
                config=args.config,
                heartbeat_ms=args.heartbeat_ms,
                election_ms=args.election_ms,
            )

    arguments = {"dir": args.dir, "nodes": args.nodes, "base_port": args.base_port}
    ui.emit(_guarded(args, "cluster_up", arguments, start), render.local_view)
    return EXIT_OK


def cmd_etcd_down(args: argparse.Namespace, ui: UI) -> int:
    def stop() -> LocalClusterState:
        with ui.spinner("stopping the etcd members"):
            return down(args.dir, name=args.name, config=args.config)

    ui.emit(_guarded(args, "cluster_down", {"dir": args.dir}, stop), render.local_view)
    return EXIT_OK
