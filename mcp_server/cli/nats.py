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
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..core import ClusterConfig, LocalClusterState, LocalNodeInfo, ManagerError
from ..core.config import state_dir
from ..core.guard import Guard
from ..local import ClusterError, free_base_port
from ..local.nats import SYS_USER, NatsLocalCluster, get_json
from ..local.ports import port_free
from . import render
from .etcd import config_path
from .launcher import audit_for
from .ui import EXIT_OK, UI


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


def write_entry(path: Path, name: str, lc: NatsLocalCluster) -> None:
    """Add (or replace) cluster ``name`` in the clusters.yaml at ``path``, keeping the rest."""
    doc: dict = {}
    if path.exists():
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise ManagerError(f"{path} is not a clusters.yaml mapping", "fix or move it")
    doc.setdefault("clusters", {})[name] = entry(lc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


def block_free(base: int, nodes: int) -> bool:
    """Are the client, route and monitoring ports of ``nodes`` servers at ``base`` free?"""
    return all(port_free(base + off + i) for off in (0, 50, 100) for i in range(1, nodes + 1))


def up(
    directory: str | None, *, nodes: int, base_port: int | None, name: str, config: str | None
) -> LocalClusterState:
    d = Path(directory).expanduser().resolve() if directory else default_dir()
    if base_port is None:
        base_port = free_base_port(7700)
        if base_port is None:
            raise ManagerError("no free block of loopback ports found", "pass --base-port")
    elif not block_free(base_port, nodes):
        raise ManagerError(
            f"a port of {base_port + 1}-{base_port + nodes} (clients), +50 (routes) or +100 "
            "(monitoring) is in use",
            "pick another --base-port (or stop what uses them)",
        )
    t0 = time.monotonic()
    lc = NatsLocalCluster.up(d, nodes=nodes, base_port=base_port)
    took = time.monotonic() - t0
    path = config_path(config)
    write_entry(path, name, lc)
    st = describe(lc, "up", took, "")
    st.detail = (
        f"{nodes} nats-server processes up in {d}; JetStream meta leader {st.leader} (in "
        f"{took:.1f}s); cluster {name!r} written to {path} (use --config {path} --cluster {name})"
    )
    return st


def down(directory: str | None, *, name: str, config: str | None) -> LocalClusterState:
    d = Path(directory).expanduser().resolve() if directory else _dir_from_config(name, config)
    t0 = time.monotonic()
    lc = NatsLocalCluster.load(d)
    stopped = lc.down()
    return describe(
        lc,
        "down",
        time.monotonic() - t0,
        f"stopped {len(stopped)} nats-server(s): {', '.join(stopped) or 'none was running'}",
    )


def _dir_from_config(name: str, config: str | None) -> Path:
    path = config_path(config)
    if path.exists():
        doc = yaml.safe_load(path.read_text()) or {}
        found = (doc.get("clusters") or {}).get(name) or {}
        if found.get("kind") == "nats" and found.get("dir"):
            return Path(found["dir"])
    return default_dir()


def describe(lc: NatsLocalCluster, action: str, seconds: float, detail: str) -> LocalClusterState:
    infos: list[LocalNodeInfo] = []
    leader = None
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
                leader = meta["leader"]
        infos.append(
            LocalNodeInfo(
                id=s.name,
                peer_address=s.route_url,
                api_address=s.client_url,
                data_dir=s.data_dir,
                pid=s.pid if alive else None,
                running=alive,
                role=role,
                log=str(lc.dir / f"{s.name}.log"),
            )
        )
    return LocalClusterState(
        dir=str(lc.dir),
        action=action,  # type: ignore[arg-type]
        nodes=infos,
        leader=leader,
        seconds=round(seconds, 3),
        detail=detail,
    )


def _guarded(
    args: argparse.Namespace,
    operation: str,
    arguments: dict[str, Any],
    fn: Callable[[], LocalClusterState],
) -> LocalClusterState:
    """Run ``fn`` under the guard (policy, one audit line) as a sandbox NATS cluster."""
    c = ClusterConfig(name=args.name, kind="nats", dir=args.dir, mode="sandbox")

    def body(_decision: object) -> LocalClusterState:
        try:
            return fn()
        except ClusterError as e:
            raise ManagerError(
                str(e), "see the server logs in the cluster directory", operation=operation
            ) from None

    return Guard(c, audit_for(args)).run(operation, {"kind": "nats", **arguments}, body)


def cmd_nats_up(args: argparse.Namespace, ui: UI) -> int:
    def start() -> LocalClusterState:
        with ui.spinner(f"starting {args.nodes} nats-servers and waiting for a meta leader"):
            return up(
                args.dir,
                nodes=args.nodes,
                base_port=args.base_port,
                name=args.name,
                config=args.config,
            )

    arguments = {"dir": args.dir, "nodes": args.nodes, "base_port": args.base_port}
    ui.emit(_guarded(args, "cluster_up", arguments, start), render.local_view)
    return EXIT_OK


def cmd_nats_down(args: argparse.Namespace, ui: UI) -> int:
    def stop() -> LocalClusterState:
        with ui.spinner("stopping the nats-servers"):
            return down(args.dir, name=args.name, config=args.config)

    ui.emit(_guarded(args, "cluster_down", {"dir": args.dir}, stop), render.local_view)
    return EXIT_OK
