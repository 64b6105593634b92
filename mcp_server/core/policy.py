"""Which operations a cluster allows: modes, read-only, allowed_operations.

Operation names are the MCP tool names. The CLI's command names are accepted as
aliases in clusters.yaml (``status`` for ``cluster_status``, ``put`` for ``replicate``...).

Rules, checked in this order (the first that applies is the reason given):

1. an operation missing from ``allowed_operations`` (when that list is set) is refused;
2. a ``read_only`` cluster refuses every mutation (plans may still be made);
3. a ``production`` cluster refuses fault injection, load generation and the local
   launcher outright.

When a mutation needs a plan id (the dry-run rule) is decided in ``plans.dry_run_rule``.
"""

from __future__ import annotations

from .catalog import TOOLS
from .errors import Refused

# The tools' sets come from the catalog (core/catalog.py), the one place a tool is spelled.
READS = frozenset(t.name for t in TOOLS if t.read_only)
MUTATIONS = frozenset(t.name for t in TOOLS if not t.read_only)
# Operations that change who leads, who is a member, or which processes run: the MCP
# tools annotated destructive, the ones `--disable-destructive` hides, and the ones a
# `require_approval` cluster applies only after a human's approval (core/approvals.py).
DESTRUCTIVE = frozenset(t.name for t in TOOLS if t.destructive)
# The local launcher (raft-manager cluster up|down|kill|start): processes on this
# machine, for sandbox clusters only.
LAUNCHER = frozenset({"cluster_up", "cluster_down", "cluster_kill", "cluster_start"})
# Load generation (raft-manager bench --existing): real writes at full speed, sandbox clusters only.
BENCH = "bench"
# A chaos run (raft-manager chaos, the MCP chaos tool): clients plus a nemesis that kills,
# pauses and partitions members and changes membership, sandbox clusters only.
CHAOS = "chaos"
SANDBOX_ONLY = LAUNCHER | {"inject_fault", BENCH, CHAOS}
OPERATIONS = READS | MUTATIONS | LAUNCHER | {BENCH, CHAOS}

ALIASES = {
    "status": "cluster_status",
    "watch": "cluster_status",
    "health": "health_check",
    "verify": "verify_consistency",
    "elect": "elect_leader",
    "put": "replicate",
    "get": "read",
    "member": "change_membership",
    "membership": "change_membership",
    "recover": "recover_node",
    "fault": "inject_fault",
    "clusters": "list_clusters",
}


def canonical(name: str) -> str:
    """The operation name for ``name`` (an MCP tool name or a CLI alias)."""
    op = ALIASES.get(name, name)
    if op not in OPERATIONS:
        raise ValueError(
            f"unknown operation {name!r}; operations are {', '.join(sorted(OPERATIONS))}"
        )
    return op


def is_mutation(operation: str) -> bool:
    return operation in MUTATIONS or operation in LAUNCHER or operation == BENCH


def check(
    *,
    cluster: str,
    mode: str,
    read_only: bool,
    allowed_operations: list[str] | None,
    operation: str,
    dry_run: bool = False,
) -> None:
    """Raise ``Refused`` when policy forbids ``operation`` on this cluster."""
    if allowed_operations is not None and operation not in allowed_operations:
        raise Refused(
            f"{operation} is not in the allowed_operations of cluster {cluster!r}",
            f"this cluster allows only: {', '.join(sorted(allowed_operations)) or 'nothing'}; "
            "change allowed_operations in clusters.yaml if this operation should be allowed",
            operation=operation,
        )
    if not is_mutation(operation):
        return
    if read_only and not dry_run:
        raise Refused(
            f"cluster {cluster!r} is read-only: {operation} would change it",
            "use read operations only (status, health, read, verify), or set read_only: false "
            "in clusters.yaml",
            operation=operation,
        )
    if mode == "production" and operation in SANDBOX_ONLY:
        raise Refused(
            f"cluster {cluster!r} is a production cluster: {_SANDBOX_WHY[_kind(operation)]}",
            _SANDBOX_NEXT[_kind(operation)],
            operation=operation,
        )


def _kind(operation: str) -> str:
    return "launcher" if operation in LAUNCHER else operation


_SANDBOX_WHY = {
    "launcher": "the local launcher manages sandbox clusters only",
    "inject_fault": "fault injection is refused",
    BENCH: "bench writes load into the cluster: sandbox clusters only",
    CHAOS: "chaos kills, pauses and partitions members: sandbox clusters only",
}
_SANDBOX_NEXT = {
    "launcher": "manage production processes with their service manager; use recover_node to "
    "wait for a restarted member to catch up",
    "inject_fault": "inject faults only into sandbox clusters (mode: sandbox)",
    BENCH: "run it against a sandbox cluster",
    CHAOS: "run chaos on a sandbox cluster, or with no cluster for a throwaway one",
}
