"""The MCP contract's tools (docs/design.md, section 6), each a thin face over one
``Manager`` method.

A tool answers the same document ``raft-manager ... --json`` prints, as structured
output with an output schema: for a mutation that is the outcome's ``answer()``, the
plan while planned and the result once applied, so the contract fields (``plan_id``,
``safe``, ``leader``, ``term``...) sit at the top level. Every output schema is a root
object, as protocol revisions up to 2025-11-25 require: ``elect_leader`` answers one
``ElectionAnswer`` whose ``outcome`` says planned or applied; ``change_membership``
answers a ``MembershipChange`` both ways.

Annotations tell the truth: destructive is the one set ``policy.DESTRUCTIVE`` (which
approvals use too), and each tool's group (observe, data, change, maintain) is sent in
its ``_meta`` so a client can show related tools together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

from ..chaos.models import ChaosVerdict
from ..chaos.schedule import ALL as NEMESES
from ..core import (
    ClusterList,
    ClusterStatus,
    Config,
    ElectionAnswer,
    FaultKind,
    FaultResult,
    HealthReport,
    KVEntry,
    MembershipAction,
    MembershipChange,
    ProgressFn,
    ReadResult,
    RecoverResult,
    ReplicateResult,
    SnapshotResult,
    VerifyReport,
)
from ..core.policy import DESTRUCTIVE
from ..manager import Manager, list_clusters
from .backend import Backend


@dataclass(frozen=True)
class ToolSpec:
    """A tool's annotations and its group."""

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool = True
    group: str = ""

    def annotations(self, title: str) -> ToolAnnotations:
        return ToolAnnotations(
            title=title,
            read_only_hint=self.read_only,
            destructive_hint=self.destructive,
            idempotent_hint=self.idempotent,
            open_world_hint=self.open_world,
        )


def _spec(
    name: str, *, read_only: bool, idempotent: bool, group: str, open_world: bool = True
) -> ToolSpec:
    """Destructive is not a per-tool choice: it is ``policy.DESTRUCTIVE``."""
    return ToolSpec(read_only, name in DESTRUCTIVE, idempotent, open_world, group)


TOOLS: dict[str, ToolSpec] = {
    # observe
    "list_clusters": _spec(
        "list_clusters", read_only=True, idempotent=True, group="observe", open_world=False
    ),
    "cluster_status": _spec("cluster_status", read_only=True, idempotent=True, group="observe"),
    "health_check": _spec("health_check", read_only=True, idempotent=True, group="observe"),
    "verify_consistency": _spec(
        "verify_consistency", read_only=True, idempotent=True, group="observe"
    ),
    # data
    "read": _spec("read", read_only=True, idempotent=True, group="data"),
    "replicate": _spec("replicate", read_only=False, idempotent=False, group="data"),
    # change the cluster
    "elect_leader": _spec("elect_leader", read_only=False, idempotent=False, group="change"),
    "change_membership": _spec(
        "change_membership", read_only=False, idempotent=False, group="change"
    ),
    # maintain and recover
    "snapshot": _spec("snapshot", read_only=False, idempotent=False, group="maintain"),
    "recover_node": _spec("recover_node", read_only=False, idempotent=True, group="maintain"),
    "inject_fault": _spec("inject_fault", read_only=False, idempotent=False, group="maintain"),
    "chaos": _spec("chaos", read_only=False, idempotent=False, group="maintain"),
}


def hidden_tools(*, read_only: bool, disable_destructive: bool) -> dict[str, str]:
    """Tools turned off by the scoping flags, each with the flag that turned it off."""
    off: dict[str, str] = {}
    for name, spec in TOOLS.items():
        if read_only and not spec.read_only:
            off[name] = "the server runs with --read-only"
        elif disable_destructive and spec.destructive:
            off[name] = "the server runs with --disable-destructive"
    return off


ClusterArg = Annotated[
    str | None,
    Field(
        description="cluster name from clusters.yaml (see list_clusters); "
        "omit for the default cluster (the embedded local cluster when no config is given)"
    ),
]
PlanIdArg = Annotated[str | None, Field(description="apply this dry run's plan")]
Nemesis = Literal[NEMESES]  # type: ignore[valid-type]
MAX_CHAOS_S = 600.0


def register(server: MCPServer, backend: Backend, cfg: Config) -> None:
    """Add every contract tool to ``server``."""

    def tool(name: str, title: str, description: str):
        spec = TOOLS[name]
        return server.tool(
            name=name,
            description=description,
            annotations=spec.annotations(title),
            meta={"group": spec.group},
        )

    # -- observe -----------------------------------------------------------------------------

    @tool(
        "list_clusters",
        "List clusters",
        "The clusters this server can operate (from clusters.yaml, or the embedded local "
        "cluster): name, kind, mode (sandbox|production), read_only, allowed_operations, "
        "require_approval, and which is the default. Use it first when you do not know the "
        "cluster's name. Reads the configuration only.",
    )
    async def list_clusters_tool() -> ClusterList:
        return list_clusters(cfg)

    @tool(
        "cluster_status",
        "Cluster status",
        "Who leads, in which term, every member with its role, reachability, indexes and lag "
        "behind the leader, the voters and learners, any change in flight, warnings, and "
        "notices of what the manager itself did (e.g. started the embedded cluster). Use it "
        "to look before you act and after you act. Safe at any time; never changes anything.",
    )
    async def cluster_status(ctx: Context, cluster: ClusterArg = None) -> ClusterStatus:
        return await backend.run(ctx, cluster, lambda m, p: m.cluster_status())

    @tool(
        "health_check",
        "Health check",
        "Pre-operation checks: quorum available, one stable leader, members caught up, no "
        "membership change pending. Name the `operation` you intend (e.g. change_membership, "
        "elect_leader, recover_node) and `safe` says whether it is safe right now, with "
        "`reasons` when not. Call it before any mutation. Never changes anything.",
    )
    async def health_check(
        ctx: Context,
        cluster: ClusterArg = None,
        operation: Annotated[
            str | None,
            Field(description="the operation you intend: one of the tool names, e.g. elect_leader"),
        ] = None,
    ) -> HealthReport:
        return await backend.run(ctx, cluster, lambda m, p: m.health_check(operation))

    @tool(
        "verify_consistency",
        "Verify consistency",
        "Compares every reachable member's applied-state hash at a common index and their "
        "committed log entries. `consistent` is true, false (divergences name the member, "
        "index and kind), or null when it could not verify (reasons say why, e.g. members "
        "unreachable). Run it after any change or incident. Never changes anything.",
    )
    async def verify_consistency(ctx: Context, cluster: ClusterArg = None) -> VerifyReport:
        return await backend.run(ctx, cluster, lambda m, p: m.verify_consistency())

    # -- data --------------------------------------------------------------------------------

    @tool(
        "read",
        "Read a key",
        "Reads one key from the cluster's key/value state. consistency=linearizable (default) "
        "goes through the leader and sees every committed write; stale may answer from any "
        "member and lag behind. `value` is null when the key is absent. Never changes "
        "anything.",
    )
    async def read(
        ctx: Context,
        key: Annotated[str, Field(min_length=1, description="the key to read")],
        cluster: ClusterArg = None,
        consistency: Literal["linearizable", "stale"] = "linearizable",
    ) -> ReadResult:
        return await backend.run(ctx, cluster, lambda m, p: m.read(key, consistency))

    @tool(
        "replicate",
        "Replicate entries",
        "Commits key/value entries through the leader, in order, each exactly once (client "
        "sessions make retries safe); returns the log index and term of each. A value "
        "overwrites the key; value null deletes it. Refused without a quorum, on read-only "
        "clusters, and on production clusters (which need a plan id; use the CLI there). "
        "If it fails part-way, the error says how many entries were written.",
    )
    async def replicate(
        ctx: Context,
        entries: Annotated[
            list[KVEntry], Field(min_length=1, description="[{key, value}], value null deletes")
        ],
        cluster: ClusterArg = None,
    ) -> ReplicateResult:
        return await backend.run(  # type: ignore[return-value]
            ctx,
            cluster,
            lambda m, p: m.replicate(entries, progress=p).answer(),
            mutation=True,
            cli="put KEY VALUE",
        )

    # -- change the cluster -------------------------------------------------------------------

    @tool(
        "elect_leader",
        "Move or elect the leader",
        "Moves leadership to `target` (a caught-up, reachable voter) by a leadership "
        "transfer, or, with no target, makes a leaderless cluster elect one. Check "
        "health_check(operation='elect_leader') first. dry_run=true returns the plan and its "
        "plan_id without acting; apply it with plan_id (required on production clusters, "
        "and after a human's `raft-manager approve` where approval is required). Refused for "
        "a learner, unreachable, cut-off or lagging target, without quorum, or with a stale "
        "plan. Returns previous_leader, leader and term. Reports progress.",
    )
    async def elect_leader(
        ctx: Context,
        cluster: ClusterArg = None,
        target: Annotated[str | None, Field(description="voter id to lead, e.g. n2")] = None,
        dry_run: Annotated[bool, Field(description="only plan; returns plan_id")] = False,
        plan_id: PlanIdArg = None,
    ) -> ElectionAnswer:
        return await backend.run(
            ctx,
            cluster,
            lambda m, p: m.elect_leader(
                target, dry_run=dry_run, plan_id=plan_id, progress=p
            ).document(),
            mutation=True,
        )

    @tool(
        "change_membership",
        "Change membership",
        "Plans, and applies only a still-valid plan, one membership change: add_learner "
        "(local clusters start the node's process), add_voter (learner, catch up, promote), "
        "promote (a caught-up learner), remove (the leader hands over first if it is the one "
        "removed). dry_run defaults to true: you get the plan (steps, safe, reasons, risks, "
        "quorum before/after, plan_id) and nothing changes. Then call again with "
        "dry_run=false and that plan_id. Refused when unsafe (quorum would break, a learner "
        "lags, another change is in flight), when the plan is stale or made for other "
        "arguments, and, where approval is required, until a human ran `raft-manager approve "
        "PLAN_ID`. Reports progress while it waits for catch-up and commits.",
    )
    async def change_membership(
        ctx: Context,
        action: MembershipAction,
        node_id: Annotated[str, Field(min_length=1, description="the member, e.g. n4")],
        cluster: ClusterArg = None,
        peer_address: Annotated[
            str | None, Field(description="HOST:PORT for peers (remote clusters, adding)")
        ] = None,
        api_address: Annotated[
            str | None, Field(description="HOST:PORT of its API (remote clusters, adding)")
        ] = None,
        dry_run: Annotated[bool, Field(description="only plan (default)")] = True,
        plan_id: PlanIdArg = None,
    ) -> MembershipChange:
        return await backend.run(  # type: ignore[return-value]
            ctx,
            cluster,
            lambda m, p: m.change_membership(
                action,
                node_id,
                peer_address,
                api_address,
                dry_run=dry_run,
                plan_id=plan_id,
                progress=p,
            ).answer(),
            mutation=True,
        )

    # -- maintain and recover -----------------------------------------------------------------

    @tool(
        "snapshot",
        "Snapshot and compact",
        "Takes a snapshot on `node` (or every reachable member) and compacts its log; the "
        "state is unchanged. Returns each node's snapshot index and size, or its error. "
        "Refused on read-only clusters and on production clusters (use the CLI's plan "
        "there).",
    )
    async def snapshot(
        ctx: Context,
        cluster: ClusterArg = None,
        node: Annotated[str | None, Field(description="one member; omit for all")] = None,
    ) -> SnapshotResult:
        return await backend.run(  # type: ignore[return-value]
            ctx,
            cluster,
            lambda m, p: m.snapshot(node, progress=p).answer(),
            mutation=True,
            cli="snapshot",
        )

    @tool(
        "recover_node",
        "Recover a node",
        "Brings a crashed or lagging member back: on a local cluster it restarts the "
        "node's process, then waits until the node has caught up with the leader "
        "(`caught_up`, applied_index vs target_index). For a remote cluster it cannot "
        "restart, it returns `instructions` for the operator. Use it after a crash or a "
        "partition healed. Reports progress.",
    )
    async def recover_node(
        ctx: Context,
        node_id: Annotated[str, Field(min_length=1, description="the member to recover")],
        cluster: ClusterArg = None,
    ) -> RecoverResult:
        return await backend.run(  # type: ignore[return-value]
            ctx,
            cluster,
            lambda m, p: m.recover_node(node_id, progress=p).answer(),
            mutation=True,
            cli=f"recover {node_id}",
        )

    @tool(
        "inject_fault",
        "Inject a fault (sandbox)",
        "For rehearsals on sandbox clusters only (refused on production): partition cuts "
        "`nodes` off from the rest, heal clears faults (all members when nodes is empty), "
        "kill SIGKILLs their processes, restart starts them again, stop freezes them "
        "(SIGSTOP, connections stay open) and continue resumes them. Partitions need "
        "raft_core nodes started with --allow-fault-injection (etcd members cannot be "
        "partitioned); process faults need a local cluster. Undo with heal, continue or "
        "recover_node.",
    )
    async def inject_fault(
        ctx: Context,
        kind: FaultKind,
        nodes: Annotated[list[str], Field(description='member ids, e.g. ["n3"]')],
        cluster: ClusterArg = None,
    ) -> FaultResult:
        return await backend.run(  # type: ignore[return-value]
            ctx,
            cluster,
            lambda m, p: m.inject_fault(kind, nodes, progress=p).answer(),
            mutation=True,
        )

    @tool(
        "chaos",
        "Chaos run (sandbox)",
        "A Jepsen-style test of a local sandbox cluster (raft-node or etcd; refused on "
        "production): concurrent clients write, compare-and-swap and read linearizably for "
        "`duration_s` seconds while a seeded nemesis kills (SIGKILL) and restarts members, "
        "pauses them (SIGSTOP/SIGCONT), partitions them both ways or one way and slows "
        "their disks (raft-node only), changes membership and moves leadership through this "
        "manager's guarded operations. Then it heals "
        "everything and returns the verdict: ok, linearizable, lost writes and other "
        "anomalies, verify_consistency's answer, operation and fault counts, and the paths "
        "of the saved history, timeline (HTML) and node logs. It disrupts the cluster for "
        "the whole run; use it only on a cluster meant for testing. Reports progress.",
    )
    async def chaos(
        ctx: Context,
        duration_s: Annotated[
            float, Field(gt=0, le=MAX_CHAOS_S, description="seconds of workload and faults")
        ],
        cluster: ClusterArg = None,
        nemesis: Annotated[
            list[Nemesis] | None,
            Field(description="fault kinds to inject; omit for all the cluster can serve"),
        ] = None,
        seed: Annotated[
            int | None, Field(description="schedule seed (a run is replayable by its seed)")
        ] = None,
    ) -> ChaosVerdict:
        from ..chaos import ChaosOptions, run_chaos
        from ..chaos.runner import default_out_dir

        run_seed = seed if seed is not None else random.randrange(1_000_000)

        def call(m: Manager, p: ProgressFn) -> ChaosVerdict:
            opts = ChaosOptions(
                duration_s=duration_s,
                nemeses=list(dict.fromkeys(nemesis or NEMESES)),
                seed=run_seed,
                out_dir=default_out_dir(run_seed),
                cluster=m.cluster,
                config=m.config,
            )
            return run_chaos(opts, progress=p)

        return await backend.run(ctx, cluster, call, mutation=True)
