"""What ``etcd up|down`` and ``nats up|down`` share: the local launchers of external kinds.

Both start real processes of another system in a directory, write the cluster's entry
into clusters.yaml, and run under the guard-and-audit path as a ``mode: sandbox``
cluster of their kind. Only the processes and the entry differ, so the directory, the
clusters.yaml bookkeeping, the guarded run and the ``down`` command live here once.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml

from ..core import ClusterConfig, LocalClusterState, ManagerError
from ..core.config import ENV_CONFIG, state_dir
from ..local.external import ExternalCluster
from . import render
from .launcher import run_launcher, stopped_detail
from .ui import EXIT_OK, UI

# The external kinds that have a local launcher.
SandboxKind = Literal["etcd", "nats"]
# A kind's ``describe(lc, action, seconds, detail)``: its processes as a launcher answer.
Describe = Callable[[Any, str, float, str], LocalClusterState]


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


def up_dir(directory: str | None, default: Path) -> Path:
    """The directory ``up`` starts the cluster in: --dir (resolved), else ``default``."""
    return Path(directory).expanduser().resolve() if directory else default


def down_dir(
    directory: str | None, name: str, config: str | None, kind: str, default: Path
) -> Path:
    """The directory ``down`` stops: --dir, else the one clusters.yaml records for ``name``."""
    if directory:
        return Path(directory).expanduser().resolve()
    return dir_from_config(name, config, kind, default)


def record_up(
    lc: ExternalCluster,
    d: Path,
    took: float,
    describe: Describe,
    *,
    name: str,
    config: str | None,
    entry: dict[str, Any],
    started: str,
    leader: str,
) -> LocalClusterState:
    """After ``up`` in ``d``: write ``entry`` as cluster ``name`` into the clusters.yaml in
    use and answer the cluster's state, its detail saying what ``started`` and who leads."""
    path = config_path(config)
    write_entry(path, name, entry)
    st = describe(lc, "up", took, "")
    st.detail = (
        f"{started} up in {d}; {leader} {st.leader} (in {took:.1f}s); cluster {name!r} "
        f"written to {path} (use --config {path} --cluster {name})"
    )
    return st


def stop_sandbox(
    d: Path, load: Callable[[Path], ExternalCluster], describe: Describe, what: str
) -> LocalClusterState:
    """``down``: stop every process of the cluster in ``d`` (data kept); the answer names
    the ``what`` that were running."""
    t0 = time.monotonic()
    lc = load(d)
    stopped = lc.down()
    return describe(lc, "down", time.monotonic() - t0, stopped_detail(stopped, what))


def run_sandbox(
    args: argparse.Namespace,
    kind: SandboxKind,
    operation: str,
    arguments: dict[str, Any],
    fn: Callable[[], LocalClusterState],
    logs: str,
) -> LocalClusterState:
    """Run ``fn`` under the guard (policy, one audit line) as a sandbox cluster of ``kind``,
    audited with ``kind`` among its arguments; ``logs`` says where a failure's cause is."""
    c = ClusterConfig(name=args.name, kind=kind, dir=args.dir, mode="sandbox")
    return run_launcher(args, c, operation, {"kind": kind, **arguments}, fn, logs)


def cmd_sandbox_up(
    args: argparse.Namespace,
    ui: UI,
    kind: SandboxKind,
    spinner: str,
    logs: str,
    up: Callable[..., LocalClusterState],
    **options: Any,
) -> int:
    """``KIND up``: ``up`` (the kind's) with the options every launcher takes and the
    kind's own ``options``, under the guard, audited as ``cluster_up``."""

    def start() -> LocalClusterState:
        with ui.spinner(spinner):
            return up(
                args.dir,
                nodes=args.nodes,
                base_port=args.base_port,
                name=args.name,
                config=args.config,
                **options,
            )

    arguments = {"dir": args.dir, "nodes": args.nodes, "base_port": args.base_port}
    ui.emit(run_sandbox(args, kind, "cluster_up", arguments, start, logs), render.local_view)
    return EXIT_OK


def cmd_sandbox_down(
    args: argparse.Namespace,
    ui: UI,
    kind: SandboxKind,
    spinner: str,
    logs: str,
    down: Callable[..., LocalClusterState],
) -> int:
    """``KIND down``: stop every process under the guard, audited as ``cluster_down``."""

    def stop() -> LocalClusterState:
        with ui.spinner(spinner):
            return down(args.dir, name=args.name, config=args.config)

    st = run_sandbox(args, kind, "cluster_down", {"dir": args.dir}, stop, logs)
    ui.emit(st, render.local_view)
    return EXIT_OK
