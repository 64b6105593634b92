"""Helpers for the manager tests: real local clusters that start fast and always stop.

Clusters use short ticks (20 ms, elections after 10-20 ticks) and their own block of
ports (``testkit.reserve_base_port``). Teardown reloads
``cluster.yaml`` so processes the manager added (``member add-learner``) stop too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from proc_helpers import register, shared_http, url
from testkit import release_base_port, reserve_base_port, wait_until

from mcp_server.core.audit import AuditLog
from mcp_server.core.config import ClusterConfig, Config
from mcp_server.core.errors import Refused
from mcp_server.core.plans import PlanStore
from mcp_server.local import LocalCluster, LocalSettings
from mcp_server.manager import Manager

FAST = {"tick_ms": 20, "election_ticks": 10}
STEADY = 50  # election_ticks for tests that need one term across several calls (1-2 s)


@contextlib.contextmanager
def local_cluster(directory: Path, nodes: int = 3, **settings: Any) -> Iterator[LocalCluster]:
    opts = {**FAST, "allow_fault_injection": True, **settings}
    base = reserve_base_port()
    try:
        lc = LocalCluster.up(
            directory, nodes=nodes, base_port=base, settings=LocalSettings(**opts), wait_s=30
        )
        register(lc)
        yield lc
    finally:
        with contextlib.suppress(Exception):
            LocalCluster.load(directory).down(grace_s=2.0)
        release_base_port(base)


def spare_address(lc: LocalCluster, k: int = 0) -> str:
    """An address in the cluster's reserved block that no process listens on."""
    base = int(lc.nodes[0].peer_address.rpartition(":")[2]) - 1
    return f"127.0.0.1:{base + 150 + k}"


def make_manager(
    directory: Path,
    state: Path,
    *,
    name: str = "t",
    mode: str = "sandbox",
    **cluster: Any,
) -> Manager:
    c = ClusterConfig(name=name, dir=str(directory), mode=mode, **cluster)
    cfg = Config(clusters={name: c}, default=name, audit_log=str(state / "audit.jsonl"))
    return Manager(c, config=cfg, plans=PlanStore(state / "plans"))


def audit_lines(state: Path) -> list[dict]:
    return AuditLog(state / "audit.jsonl").read()


def last_audit(state: Path) -> dict:
    lines = audit_lines(state)
    assert lines, "the audit log is empty"
    return lines[-1]


def refused(fn: Callable[[], Any], *match: str) -> Refused:
    """Call ``fn``, which must be refused with every ``match`` in its reasons and a next
    step; the refusal."""
    with pytest.raises(Refused) as e:
        fn()
    text = " ".join([e.value.reason, *e.value.reasons])
    for m in match:
        assert m in text, f"{m!r} not in {text!r}"
    assert e.value.next_step, "a refusal says what to do next"
    return e.value


def assert_audited(state: Path, operation: str, *reason: str) -> dict:
    """The last audit line is ``operation``'s refusal, with every ``reason`` in it."""
    line = last_audit(state)
    assert line["operation"] == operation and line["outcome"] == "refused", line
    for r in reason:
        assert r in line["reason"], line
    return line


def write_config(path: Path, clusters: dict[str, dict], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"clusters": clusters, **top}))
    return path


def node_api(lc: LocalCluster, node: str) -> str:
    """The node's API base URL (the cluster may have been started by the CLI: register
    it, so its scheme and CA are known)."""
    current = LocalCluster.load(lc.dir)
    register(current)
    return url(current.node(node), "")


def node_status(lc: LocalCluster, node: str) -> dict:
    return shared_http().get(f"{node_api(lc, node)}/v1/status", timeout=2).json()


def leader_of(lc: LocalCluster) -> str:
    def find() -> str | None:
        for n in LocalCluster.load(lc.dir).nodes:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if node_status(lc, n.id).get("role") == "leader":
                    return n.id
        return None

    return wait_until(find, 10, "a leader")


def wait_all_applied(lc: LocalCluster, timeout: float = 20.0) -> int:
    """Until every member applied the leader's commit index (a follower may trail the
    leader by a round trip, more on a loaded machine); that index."""

    def check() -> int | None:
        sts = [node_status(lc, n.id) for n in LocalCluster.load(lc.dir).nodes]
        lead = [s for s in sts if s.get("role") == "leader"]
        if len(lead) != 1:
            return None
        commit = lead[0]["commit_index"]
        return commit if all(s["applied_index"] >= commit for s in sts) else None

    return wait_until(check, timeout, "every member to apply the leader's commit index")


def set_faults(lc: LocalCluster, node: str, body: dict) -> dict:
    r = shared_http().post(f"{node_api(lc, node)}/v1/admin/faults", json=body, timeout=2)
    r.raise_for_status()
    return r.json()


def parse_json(text: str) -> Any:
    """stdout of a --json command: exactly one JSON document."""
    return json.loads(text)
