"""Helpers for the tests against real NATS JetStream: find ``nats-server``, run 3-server
clusters that always stop, and managers on them.

With no nats-server the tests fail when ``CI`` is set and are skipped elsewhere, saying
how to install one. Clusters use a reserved block of loopback ports (the allocator the
raft_core and etcd tests share). Teardown reloads the state file so servers the manager
added stop too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import launched_cluster, unavailable

from mcp_server.core.audit import AuditLog
from mcp_server.core.config import ClusterConfig, Config
from mcp_server.core.plans import PlanStore
from mcp_server.local.nats import INSTALL_HINT, SYS_USER, NatsLocalCluster, find_binary
from mcp_server.manager import Manager


def require() -> str:
    binary = find_binary()
    if binary is None:
        unavailable(f"no nats-server found: {INSTALL_HINT}")
    return binary


@contextlib.contextmanager
def nats_cluster(directory: Path, nodes: int = 3) -> Iterator[NatsLocalCluster]:
    binary = require()
    with launched_cluster(
        lambda base: NatsLocalCluster.up(directory, nodes=nodes, base_port=base, binary=binary),
        lambda: NatsLocalCluster.load(directory).down(grace_s=2.0),
    ) as lc:
        yield lc


def nats_config(
    lc: NatsLocalCluster, state: Path, *, name: str = "js", local: bool = True, **cluster: Any
) -> Config:
    """A config naming ``lc``: with its ``dir`` (servers managed) unless ``local`` is false."""
    # Production needs an out-of-band approval by default; these tests exercise the
    # plan-then-apply flow itself, not approvals (test_mcp_approvals.py).
    cluster.setdefault("require_approval", False)
    cluster.setdefault("mode", "sandbox")
    c = ClusterConfig(
        name=name,
        kind="nats",
        servers=lc.client_urls(),
        monitor=lc.monitor_urls(),
        username=SYS_USER,
        password_file=str(lc.password_file),
        dir=str(lc.dir) if local else None,
        **cluster,
    )
    return Config(clusters={name: c}, default=name, audit_log=str(state / "audit.jsonl"))


def nats_manager(lc: NatsLocalCluster, state: Path, **kw: Any) -> Manager:
    cfg = nats_config(lc, state, **kw)
    c = cfg.cluster(None)
    return Manager(c, config=cfg, plans=PlanStore(state / "plans"))


def module_fixtures(prepare: Callable[[Manager], Any] | None = None) -> tuple[Any, Any]:
    """A test module's fixtures for one real NATS cluster, to assign at module level:
    ``cluster, mgr = module_fixtures()`` (as ``etcd_helpers.module_fixtures``).
    ``cluster`` is one 3-server cluster per module; ``mgr`` a manager on it per test,
    first given to ``prepare`` (a module whose tests need data in place)."""

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory: Any) -> Iterator[NatsLocalCluster]:
        with nats_cluster(tmp_path_factory.mktemp("nats")) as lc:
            yield lc

    @pytest.fixture
    def mgr(cluster: NatsLocalCluster, state: Path) -> Iterator[Manager]:
        with nats_manager(cluster, state) as m:
            if prepare is not None:
                prepare(m)
            yield m

    return cluster, mgr


def audit_lines(state: Path) -> list[dict]:
    return AuditLog(state / "audit.jsonl").read()
