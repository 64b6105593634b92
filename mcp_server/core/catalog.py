"""The one table of the manager's tools (docs/design.md, section 6).

Each operation an agent can call is spelled once, here: its toolset, what it is for,
its annotations, the ``Manager`` method that does it, the model it answers and the CLI
command a human would run instead. The policy sets (``policy.READS``, ``MUTATIONS``,
``DESTRUCTIVE``), the MCP tools' annotations and scoping, the backend's mutation lock
and the README's tool table are all derived from it, so a tool cannot be read-only in
one place and a mutation in another.

Toolsets, as github-mcp-server groups its tools: ``read`` never changes anything,
``write`` changes data, leadership or membership through the guarded operations, and
``operate`` injects faults and runs chaos (sandbox clusters only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Toolset = Literal["read", "write", "operate"]
TOOLSETS: tuple[Toolset, ...] = ("read", "write", "operate")


@dataclass(frozen=True)
class ToolEntry:
    name: str
    toolset: Toolset
    title: str
    description: str
    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool
    method: str | None
    """The ``Manager`` method; None when the tool needs no manager (``list_clusters``
    reads the configuration) or has its own runner (``chaos``)."""
    result: str
    """The answer's model, by name: ``mcp_server.core`` models, or ``ChaosVerdict`` from
    ``mcp_server.chaos`` (named, not imported: the core imports nothing above it)."""
    cli: str
    """The CLI command; ``{arg}`` is filled from the call's arguments."""
    plans: bool = False
    """Takes ``dry_run``/``plan_id``; the others cannot be applied by plan id, so on a
    production cluster the refusal points at the CLI."""


def _read(name: str, title: str, description: str, method: str, result: str, cli: str) -> ToolEntry:
    """A read-only tool of the read toolset: idempotent, open world."""
    return ToolEntry(name, "read", title, description, True, False, True, True, method, result, cli)


TOOLS: tuple[ToolEntry, ...] = (
    ToolEntry(
        "list_clusters",
        "read",
        "List clusters",
        "The clusters served (kind, mode, read_only, allowed_operations, require_approval, "
        "default) and the config and state dir in use. Call it first if you do not know a "
        "cluster's name.",
        read_only=True,
        destructive=False,
        idempotent=True,
        open_world=False,
        method=None,
        result="ClusterList",
        cli="raft-manager clusters",
    ),
    _read(
        "cluster_status",
        "Cluster status",
        "Leader and term; each member's role, reachability, indexes and lag; voters, "
        "learners, a change in flight, warnings, notices. Look before and after you act.",
        "cluster_status",
        "ClusterStatus",
        "raft-manager status",
    ),
    _read(
        "health_check",
        "Health check",
        "Pre-operation checks: quorum, a stable leader, members caught up, no change "
        "pending. Name the `operation` you intend: `safe` says if it is safe now, `reasons` "
        "why not. Call it before any mutation.",
        "health_check",
        "HealthReport",
        "raft-manager health",
    ),
    _read(
        "verify_consistency",
        "Verify consistency",
        "Compares members' applied-state hashes at a common index and their committed log "
        "entries. `consistent`: true, false (see `divergences`) or null if it could not "
        "verify (see `reasons`). Run it after any change.",
        "verify_consistency",
        "VerifyReport",
        "raft-manager verify",
    ),
    _read(
        "read",
        "Read a key",
        "Reads one key. linearizable (default) goes through the leader and sees every "
        "committed write; stale may answer from any member and lag. `value` is null when "
        "the key is absent.",
        "read",
        "ReadResult",
        "raft-manager get {key}",
    ),
    ToolEntry(
        "replicate",
        "write",
        "Replicate entries",
        "Commits key/value entries through the leader, in order, each exactly once; returns "
        "each one's index and term. value null deletes the key. Refused on production "
        "clusters (use the CLI's plan there).",
        read_only=False,
        destructive=False,
        idempotent=False,
        open_world=True,
        method="replicate",
        result="ReplicateResult",
        cli="raft-manager put KEY VALUE",
    ),
    ToolEntry(
        "elect_leader",
        "write",
        "Move or elect the leader",
        "Moves leadership to `target` (a caught-up voter) or, without one, has a leaderless "
        "cluster elect one. dry_run=true only plans; apply its plan_id (required on "
        "production, after a human's `raft-manager approve` where required). Refused when "
        "unsafe or for a stale plan.",
        read_only=False,
        destructive=True,
        idempotent=False,
        open_world=True,
        method="elect_leader",
        result="ElectionAnswer",
        cli="raft-manager elect --to TARGET",
        plans=True,
    ),
    ToolEntry(
        "change_membership",
        "write",
        "Change membership",
        "One membership change: add_learner (local clusters start the node), add_voter "
        "(learner, catch up, promote), promote, remove (a leader hands over first). dry_run "
        "(default true) only plans; then call with dry_run=false and its plan_id. Refused "
        "when unsafe or for a stale plan, and where approval is required until a human ran "
        "`raft-manager approve`.",
        read_only=False,
        destructive=True,
        idempotent=False,
        open_world=True,
        method="change_membership",
        result="MembershipChange",
        cli="raft-manager member ACTION NODE",
        plans=True,
    ),
    ToolEntry(
        "snapshot",
        "write",
        "Snapshot and compact",
        "Snapshots `node` (or every reachable member) and compacts its log; the state is "
        "unchanged. Refused on production clusters (use the CLI's plan there).",
        read_only=False,
        destructive=False,
        idempotent=False,
        open_world=True,
        method="snapshot",
        result="SnapshotResult",
        cli="raft-manager snapshot",
    ),
    ToolEntry(
        "recover_node",
        "write",
        "Recover a node",
        "Brings a crashed or lagging member back: restarts it (local clusters) and waits "
        "until it caught up. For a remote cluster it returns `instructions` for the "
        "operator.",
        read_only=False,
        destructive=True,
        idempotent=True,
        open_world=True,
        method="recover_node",
        result="RecoverResult",
        cli="raft-manager recover {node_id}",
    ),
    ToolEntry(
        "inject_fault",
        "operate",
        "Inject a fault (sandbox)",
        "Sandbox rehearsals: partition cuts `nodes` off, heal clears faults (every member "
        "when nodes is empty), kill SIGKILLs, restart starts, stop freezes (SIGSTOP), "
        "continue resumes.",
        read_only=False,
        destructive=True,
        idempotent=False,
        open_world=True,
        method="inject_fault",
        result="FaultResult",
        cli="raft-manager fault KIND NODE...",
    ),
    ToolEntry(
        "chaos",
        "operate",
        "Chaos run (sandbox)",
        "A Jepsen-style test of a local sandbox cluster: clients write, CAS and read for "
        "`duration_s` while a seeded nemesis kills, pauses, partitions, slows disks, changes "
        "membership and moves leadership; then it heals and returns the verdict.",
        read_only=False,
        destructive=True,
        idempotent=False,
        open_world=True,
        method=None,
        result="ChaosVerdict",
        cli="raft-manager chaos",
    ),
)

BY_NAME: dict[str, ToolEntry] = {t.name: t for t in TOOLS}


def in_toolset(toolset: str) -> list[str]:
    """The tools of one toolset, in catalog order."""
    return [t.name for t in TOOLS if t.toolset == toolset]
