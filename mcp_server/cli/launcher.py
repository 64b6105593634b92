"""``raft-manager cluster up|down|kill|start|status``: the local launcher.

Each command runs under the manager's one guard-and-audit path (``core.guard.Guard``):
policy (production clusters refuse the launcher), one audit line per action.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ..core import (
    ClusterConfig,
    Config,
    InputError,
    LocalClusterState,
    LocalNodeInfo,
    ManagerError,
)
from ..core.audit import AuditLog
from ..core.config import state_dir
from ..core.guard import Guard
from ..local import ClusterError, LocalCluster, LocalSettings, free_base_port, ports_free
from . import render
from .ui import EXIT_OK, UI, config_of

# -- commands: the local launcher ------------------------------------------------------


def _launcher_target(args: argparse.Namespace) -> tuple[ClusterConfig, Path]:
    """The cluster a `cluster ...` command acts on: --dir, else the selected local cluster."""
    cfg: Config | None = None
    if args.dir:
        d = Path(args.dir).expanduser().resolve()
        with contextlib.suppress(InputError):
            cfg = config_of(args)
        for c in cfg.clusters.values() if cfg else []:
            if c.dir and Path(c.dir) == d:
                return c, d
        return ClusterConfig(name=f"dir:{d}", dir=str(d), mode="sandbox"), d
    cfg = config_of(args)
    c = cfg.cluster(args.cluster)
    if not c.is_local:
        raise InputError(
            f"cluster {c.name!r} is not a local cluster (it has no `dir`)",
            "pass --dir DIR, or pick a local cluster with --cluster",
        )
    return c, Path(c.dir)  # type: ignore[arg-type]


def audit_for(args: argparse.Namespace) -> AuditLog:
    try:
        return AuditLog(config_of(args).audit_path())
    except InputError:
        return AuditLog(state_dir() / "audit.jsonl")


def run_launcher(
    args: argparse.Namespace,
    c: ClusterConfig,
    operation: str,
    arguments: dict[str, Any],
    fn: Callable[[], LocalClusterState],
    logs: str,
) -> LocalClusterState:
    """Run a launcher action (``cluster ...``, ``etcd ...``) under the guard: policy, one
    audit line; a ``ClusterError`` becomes a ``ManagerError`` that points at ``logs``."""

    def body(_decision: object) -> LocalClusterState:
        try:
            return fn()
        except ClusterError as e:
            raise ManagerError(str(e), f"see the {logs}", operation=operation) from None

    return Guard(c, audit_for(args)).run(operation, arguments, body)


def _launch(
    args: argparse.Namespace,
    operation: str,
    arguments: dict[str, Any],
    fn: Callable[[ClusterConfig, Path], LocalClusterState],
) -> LocalClusterState:
    c, d = _launcher_target(args)
    return run_launcher(args, c, operation, arguments, lambda: fn(c, d), f"node logs in {d}")


def base_port_for(given: int | None, count: int, first_try: int) -> int:
    """The ``--base-port`` given, if its ports are free; else the first free block from
    ``first_try`` on."""
    if given is None:
        base = free_base_port(first_try)
        if base is None:
            raise InputError("no free block of loopback ports found", "pass --base-port")
        return base
    if not ports_free(given, count):
        raise InputError(
            f"ports {given + 1}-{given + count} or {given + 101}-{given + 100 + count} are in use",
            "pick another --base-port (or stop what uses them)",
        )
    return given


def cluster_state(
    directory: Path, action: str, seconds: float, detail: str, nodes: list[LocalNodeInfo], **extra
) -> LocalClusterState:
    """A launcher command's answer (either kind): its processes, and the leader among them."""
    return LocalClusterState(
        dir=str(directory),
        action=action,  # type: ignore[arg-type]
        nodes=nodes,
        leader=next((n.id for n in nodes if n.role == "leader"), None),
        seconds=round(seconds, 3),
        detail=detail,
        **extra,
    )


def process_info(
    directory: Path,
    id: str,
    peer: str,
    api: str,
    data_dir: str,
    pid: int | None,
    alive: bool,
    role: str | None,
    term: int | None,
) -> LocalNodeInfo:
    """One process of a launcher answer; its log is ``ID.log`` in the cluster directory."""
    return LocalNodeInfo(
        id=id,
        peer_address=peer,
        api_address=api,
        data_dir=data_dir,
        pid=pid if alive else None,
        running=alive,
        role=role,
        term=term,
        log=str(directory / f"{id}.log"),
    )


def stopped_detail(stopped: list[str], what: str) -> str:
    return f"stopped {len(stopped)} {what}: {', '.join(stopped) or 'none was running'}"


def describe(lc: LocalCluster, action: str, seconds: float, detail: str) -> LocalClusterState:
    """The answer of a launcher command: each process, its pid, role and term."""
    nodes: list[LocalNodeInfo] = []
    with lc.http_client(httpx.Timeout(1.0, connect=0.5)) as client:
        for n in lc.nodes:
            alive = lc.alive(n)
            role = term = None
            if alive:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    st = client.get(lc.url(n, "/v1/status")).json()
                    role, term = st.get("role"), st.get("term")
            nodes.append(
                process_info(
                    lc.dir,
                    n.id,
                    n.peer_address,
                    n.api_address,
                    n.data_dir,
                    n.pid,
                    alive,
                    role,
                    term,
                )
            )
    s = lc.settings
    return cluster_state(
        lc.dir,
        action,
        seconds,
        detail,
        nodes,
        peer_auth=s.peer_auth,
        api_scheme=s.api_scheme,
        ca_file=s.ca_file,
    )


def _security_note(lc: LocalCluster) -> str:
    """How the cluster's peers authenticate, for the `cluster up` summary (paths only)."""
    s = lc.settings
    if s.peer_auth == "tls":
        return f"peers use mutual TLS and the API HTTPS (CA {s.ca_file})"
    if s.peer_auth == "secret":
        return f"peers authenticate with the cluster secret in {s.cluster_secret_file}"
    return "WARNING: no peer authentication (--insecure): any local process can join as a peer"


def cmd_cluster_up(args: argparse.Namespace, ui: UI) -> int:
    def up(c: ClusterConfig, d: Path) -> LocalClusterState:
        base = base_port_for(args.base_port, args.nodes, c.base_port or 7100)
        token_file = str(Path(args.api_token_file).resolve()) if args.api_token_file else None
        settings = LocalSettings(
            allow_fault_injection=args.allow_fault_injection,
            tick_ms=args.tick_ms,
            election_ticks=args.election_ticks,
            fsync=args.fsync,
            api_token_file=token_file,
        )
        t0 = time.monotonic()
        with ui.spinner(f"starting {args.nodes} nodes and waiting for a leader"):
            lc = LocalCluster.up(
                d, nodes=args.nodes, base_port=base, settings=settings, insecure=args.insecure
            )
        took = time.monotonic() - t0
        st = describe(lc, "up", took, "")
        st.detail = (
            f"{args.nodes} nodes up in {d}; leader {st.leader} (in {took:.1f}s); "
            + _security_note(lc)
        )
        return st

    arguments = {
        "dir": args.dir,
        "nodes": args.nodes,
        "base_port": args.base_port,
        "allow_fault_injection": args.allow_fault_injection,
        "insecure": args.insecure,
    }
    ui.emit(_launch(args, "cluster_up", arguments, up), render.local_view)
    return EXIT_OK


def cmd_cluster_down(args: argparse.Namespace, ui: UI) -> int:
    def down(c: ClusterConfig, d: Path) -> LocalClusterState:
        t0 = time.monotonic()
        lc = LocalCluster.load(d)
        with ui.spinner("stopping the cluster"):
            stopped = lc.down()
        return describe(lc, "down", time.monotonic() - t0, stopped_detail(stopped, "process(es)"))

    ui.emit(_launch(args, "cluster_down", {"dir": args.dir}, down), render.local_view)
    return EXIT_OK


def _cluster_node_command(
    args: argparse.Namespace, ui: UI, action: str, act: Callable[[LocalCluster], None], done: str
) -> int:
    """`cluster kill|start NODE`: one launcher action on one node, audited."""

    def run(c: ClusterConfig, d: Path) -> LocalClusterState:
        t0 = time.monotonic()
        lc = LocalCluster.load(d)
        act(lc)
        return describe(lc, action, time.monotonic() - t0, done)

    arguments = {"dir": args.dir, "node": args.node}
    ui.emit(_launch(args, f"cluster_{action}", arguments, run), render.local_view)
    return EXIT_OK


def cmd_cluster_kill(args: argparse.Namespace, ui: UI) -> int:
    return _cluster_node_command(
        args, ui, "kill", lambda lc: lc.kill(args.node), f"killed {args.node} (SIGKILL)"
    )


def cmd_cluster_start(args: argparse.Namespace, ui: UI) -> int:
    def start(lc: LocalCluster) -> None:
        with ui.spinner(f"starting {args.node}"):
            lc.start(args.node)

    return _cluster_node_command(args, ui, "start", start, f"started {args.node}")


def cmd_cluster_status(args: argparse.Namespace, ui: UI) -> int:
    def status(c: ClusterConfig, d: Path) -> LocalClusterState:
        t0 = time.monotonic()
        lc = LocalCluster.load(d)
        running = sum(lc.alive(n) for n in lc.nodes)
        return describe(
            lc, "status", time.monotonic() - t0, f"{running}/{len(lc.nodes)} running in {d}"
        )

    ui.emit(_launch(args, "cluster_status", {"dir": args.dir}, status), render.local_view)
    return EXIT_OK
