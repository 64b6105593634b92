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


def _check(name: str, problem: str | None, fine: str) -> Check:
    """A check that passes unless ``problem`` says what is wrong."""
    return Check(name=name, ok=problem is None, detail=fine if problem is None else problem)


def checks(view: ClusterView) -> list[Check]:
    voters = view.voters
    in_config = [m for m in view.members() if view.is_voter(m) or view.is_learner(m)]
    unreachable = [m for m in in_config if not view.reachable(m)]
    out = [
        _check(
            "members_reachable",
            f"unreachable: {', '.join(unreachable)}" if unreachable else None,
            "every member answers",
        ),
        Check(
            name="quorum",
            ok=bool(voters) and view.has_quorum(),
            detail=f"{len(view.available_voters())} of {len(voters)} voters available, "
            f"{view.quorum()} needed"
            + (f"; old configuration {','.join(view.voters_outgoing)}" if view.joint else ""),
        ),
    ]
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
        for m in in_config:
            st = view.statuses.get(m)
            if st is None or not st.reachable or m == view.leader.id:
                continue
            if not view.available(m):
                unstable.append(f"{m} ({st.role}, term {st.term}, leader {st.leader})")
        if view.leader.transferring_to:
            unstable.append(f"leadership transfer to {view.leader.transferring_to} in progress")
    lagging = [m for m in in_config if view.caught_up(m) is False]
    no_leader = view.leader is None
    out += [
        _check(
            "stable_leader",
            "no leader"
            if no_leader
            else ("not following: " + "; ".join(unstable) if unstable else None),
            "every reachable member follows the leader in its term",
        ),
        _check(
            "caught_up",
            "no leader to compare with"
            if no_leader
            else ("; ".join(view.lag_reason(m) for m in lagging) if lagging else None),
            "every member is caught up",
        ),
        _check(
            "no_change_in_flight",
            "joint configuration in force"
            if view.joint
            else (
                "a configuration change is proposed but not applied"
                if view.change_in_flight
                else None
            ),
            "no configuration change pending",
        ),
    ]
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
