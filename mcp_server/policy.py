"""Which operations a cluster allows: modes, read-only, allowed_operations.

Operation names are the MCP tool names. The CLI's command names are accepted as
aliases in clusters.yaml (``status`` for ``cluster_status``, ``put`` for ``replicate``...).

Rules, checked in this order (the first that applies is the reason given):

1. an operation missing from ``allowed_operations`` (when that list is set) is refused;
2. a ``read_only`` cluster refuses every mutation (plans may still be made);
3. a ``production`` cluster refuses fault injection and the local launcher outright;
4. a ``production`` cluster refuses a mutation without a plan id from a prior dry run.
"""

from __future__ import annotations

from .errors import Refused

READS = frozenset({"list_clusters", "cluster_status", "health_check", "read", "verify_consistency"})
MUTATIONS = frozenset(
    {
        "elect_leader",
        "replicate",
        "change_membership",
        "snapshot",
        "recover_node",
        "inject_fault",
    }
)
# The local launcher (raft-manager cluster up|down|kill|start): processes on this
# machine, for sandbox clusters only.
LAUNCHER = frozenset({"cluster_up", "cluster_down", "cluster_kill", "cluster_start"})
OPERATIONS = READS | MUTATIONS | LAUNCHER

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
    return operation in MUTATIONS or operation in LAUNCHER


def check(
    *,
    cluster: str,
    mode: str,
    read_only: bool,
    allowed_operations: list[str] | None,
    operation: str,
    plan_id: str | None = None,
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
    if mode == "production" and operation in LAUNCHER:
        raise Refused(
            f"cluster {cluster!r} is a production cluster: the local launcher "
            f"({operation.replace('_', ' ')}) manages sandbox clusters only",
            "manage production processes with their service manager; use recover_node to "
            "wait for a restarted member to catch up",
            operation=operation,
        )
    if mode == "production" and operation == "inject_fault":
        raise Refused(
            f"cluster {cluster!r} is a production cluster: fault injection is refused",
            "inject faults only into sandbox clusters (mode: sandbox)",
            operation=operation,
        )
    if mode == "production" and not dry_run and not plan_id:
        raise Refused(
            f"cluster {cluster!r} is a production cluster: {operation} needs a plan id",
            "run it first as a dry run (--dry-run / dry_run=true), review the plan, then apply "
            "it with --plan-id / plan_id",
            operation=operation,
        )
