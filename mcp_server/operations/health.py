"""health_check: pre-operation checks and whether a named operation is safe now."""

from __future__ import annotations

from ..core import policy
from ..core.context import OperationContext
from ..core.errors import Refused
from ..core.models import Check, HealthReport, HealthRequest
from ..core.view import ClusterView

OPERATION = "health_check"

# Which checks each operation needs to pass to be "safe now".
NEEDS: dict[str, set[str]] = {
    "replicate": {"quorum", "leader"},
    "read": {"quorum", "leader"},
    "elect_leader": {"quorum"},
    "change_membership": {"quorum", "leader", "stable_leader", "caught_up", "no_change_in_flight"},
    "snapshot": set(),
    "recover_node": set(),
    "inject_fault": set(),
    "verify_consistency": set(),
    "cluster_status": set(),
    "health_check": set(),
    "list_clusters": set(),
    "cluster_up": set(),
    "cluster_down": set(),
}


def checks(view: ClusterView) -> list[Check]:
    out: list[Check] = []
    voters = view.voters
    unreachable = [
        m
        for m in view.members()
        if (view.is_voter(m) or view.is_learner(m)) and not view.reachable(m)
    ]
    out.append(
        Check(
            name="members_reachable",
            ok=not unreachable,
            detail="every member answers"
            if not unreachable
            else f"unreachable: {', '.join(unreachable)}",
        )
    )
    avail = view.available_voters()
    q = view.quorum()
    out.append(
        Check(
            name="quorum",
            ok=bool(voters) and view.has_quorum(),
            detail=f"{len(avail)} of {len(voters)} voters available, {q} needed"
            + (f"; old configuration {','.join(view.voters_outgoing)}" if view.joint else ""),
        )
    )
    if len(view.leaders) == 1:
        leader_detail = f"{view.leader.id} leads in term {view.leader.term}"  # type: ignore[union-attr]
    elif not view.leaders:
        leader_detail = "no member claims leadership"
    else:
        leader_detail = "several members claim leadership: " + ", ".join(
            f"{s.id} (term {s.term})" for s in view.leaders
        )
    out.append(Check(name="leader", ok=len(view.leaders) == 1, detail=leader_detail))
    unstable = []
    if view.leader is not None:
        for m in view.members():
            st = view.statuses.get(m)
            if st is None or not st.reachable or m == view.leader.id:
                continue
            if (view.is_voter(m) or view.is_learner(m)) and not view.available(m):
                unstable.append(f"{m} ({st.role}, term {st.term}, leader {st.leader})")
        if view.leader.transferring_to:
            unstable.append(f"leadership transfer to {view.leader.transferring_to} in progress")
    out.append(
        Check(
            name="stable_leader",
            ok=view.leader is not None and not unstable,
            detail="every reachable member follows the leader in its term"
            if view.leader is not None and not unstable
            else ("no leader" if view.leader is None else "not following: " + "; ".join(unstable)),
        )
    )
    lagging = [
        m
        for m in view.members()
        if (view.is_voter(m) or view.is_learner(m)) and view.caught_up(m) is False
    ]
    out.append(
        Check(
            name="caught_up",
            ok=view.leader is not None and not lagging,
            detail="every member is caught up"
            if view.leader is not None and not lagging
            else (
                "no leader to compare with"
                if view.leader is None
                else "; ".join(view.lag_reason(m) for m in lagging)
            ),
        )
    )
    in_flight = view.joint or view.change_in_flight
    out.append(
        Check(
            name="no_change_in_flight",
            ok=not in_flight,
            detail="no configuration change pending"
            if not in_flight
            else (
                "joint configuration in force"
                if view.joint
                else "a configuration change is proposed but not applied"
            ),
        )
    )
    return out


def check(ctx: OperationContext, request: HealthRequest) -> HealthReport:
    c = ctx.cluster
    return report(
        ctx.view(),
        cluster=c.name,
        mode=c.mode,
        read_only=c.read_only,
        allowed_operations=c.allowed_operations,
        operation=request.operation,
    )


def report(
    view: ClusterView,
    *,
    cluster: str,
    mode: str,
    read_only: bool,
    allowed_operations: list[str] | None,
    operation: str | None,
) -> HealthReport:
    cs = checks(view)
    failed = [c for c in cs if not c.ok]
    healthy = not failed
    reasons = [f"{c.name}: {c.detail}" for c in failed]
    warnings = view.warnings()
    if operation is None:
        return HealthReport(
            cluster=cluster,
            operation=None,
            healthy=healthy,
            safe=healthy,
            checks=cs,
            reasons=reasons,
            warnings=warnings,
            leader=view.leader.id if view.leader else None,
            term=view.term,
        )
    op = policy.canonical(operation)
    needed = NEEDS.get(op, set())
    op_reasons = [f"{c.name}: {c.detail}" for c in cs if c.name in needed and not c.ok]
    try:
        policy.check(
            cluster=cluster,
            mode=mode,
            read_only=read_only,
            allowed_operations=allowed_operations,
            operation=op,
        )
    except Refused as e:
        op_reasons.insert(0, f"policy: {e.reason}")
    if mode == "production" and policy.is_mutation(op) and op != "inject_fault":
        warnings.append(f"production cluster: {op} must be planned (dry run) and then applied")
    return HealthReport(
        cluster=cluster,
        operation=op,
        healthy=healthy,
        safe=not op_reasons,
        checks=cs,
        reasons=op_reasons if op_reasons else reasons,
        warnings=warnings,
        leader=view.leader.id if view.leader else None,
        term=view.term,
    )
