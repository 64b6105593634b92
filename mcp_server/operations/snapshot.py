"""snapshot: take a snapshot on one member (or every reachable member) and compact its log."""

from __future__ import annotations

from ..core.context import OperationContext, ProgressFn
from ..core.errors import ManagerError
from ..core.models import NodeSnapshot, Plan, PlanStep, SnapshotRequest, SnapshotResult

OPERATION = "snapshot"


def plan(ctx: OperationContext, request: SnapshotRequest) -> Plan:
    view = ctx.view()
    node = request.node
    reasons = []
    if node is not None:
        targets = [node]
        if node not in view.members():
            reasons.append(f"{node} is not a member of this cluster")
        elif not view.reachable(node):
            reasons.append(f"{node} is unreachable")
    elif ctx.adapter.snapshot_whole_group:
        # One snapshot of the group (a stream backup), taken through its leader.
        targets = [view.leader.id] if view.leader else []
        if not targets:
            reasons.append("the group has no leader to read the backup through")
    else:
        targets = [
            m
            for m in view.members()
            if (view.is_voter(m) or view.is_learner(m)) and view.reachable(m)
        ]
        if not targets:
            reasons.append("no member is reachable")
    steps = [
        PlanStep(action="snapshot", node=t, detail=f"snapshot {t} and compact its log")
        for t in targets
    ]
    return ctx.plan(OPERATION, request.arguments(), view, steps=steps, reasons=reasons)


def run(ctx: OperationContext, plan: Plan, progress: ProgressFn) -> SnapshotResult:
    snaps = []
    for i, step in enumerate(plan.steps):
        node = step.node
        assert node is not None
        progress(i, len(plan.steps), step.detail)
        try:
            idx, size = ctx.adapter.snapshot(node)
            snaps.append(NodeSnapshot(node=node, ok=True, snapshot_index=idx, bytes=size))
        except ManagerError as e:
            snaps.append(NodeSnapshot(node=node, ok=False, error=e.reason))
    return SnapshotResult(cluster=ctx.name, snapshots=snaps)
