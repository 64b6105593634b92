"""elect_leader: plan a leadership move (or an election), then carry it out.

With a target: transfer leadership to it, refusing a target that is not a reachable,
caught-up voter following the leader; in a leaderless cluster the target campaigns
if its log is the most up to date. Without one: nothing to do when a leader exists,
else the most up-to-date reachable voter campaigns (asked again while pre-vote holds
it back) until a leader is elected.

Where leaders move only by stepping down (NATS JetStream: ``supports_step_down`` and
no ``supports_transfer_target``), an election without a target while a leader exists
is a step-down, refused unless another member is caught up to take over; a named
target is refused with the adapter's reason (unless it already leads).

The plan has one step: ``none``, ``transfer_leadership``, ``campaign`` or
``step_down``, naming the node in ``step.node``; ``run`` carries out exactly that step.
"""

from __future__ import annotations

import time

from ..core.context import OperationContext, ProgressFn
from ..core.errors import ManagerError, NodeRequestError
from ..core.models import ElectionResult, ElectRequest, Plan, PlanStep
from ..core.view import ClusterView

OPERATION = "elect_leader"
CAMPAIGN_RETRY_S = 0.25
METHODS = {
    "none": "none",
    "transfer_leadership": "transfer",
    "campaign": "campaign",
    "step_down": "step_down",
}
NO_CAMPAIGN = (
    "{kind} cannot be forced to elect a leader: its members have no campaign call; they "
    "start an election by themselves once they miss the leader's heartbeats for an "
    "election timeout, and one succeeds only when a quorum of voters is up and connected"
)


def plan(ctx: OperationContext, request: ElectRequest) -> Plan:
    view = ctx.view()
    target = request.target
    if target is None:
        steps, reasons = _elect_any(ctx, view)
    elif not view.is_voter(target) or not view.reachable(target):
        steps, reasons = [], [_not_eligible(view, target)]
    elif view.leader is None:
        steps, reasons = _campaign_for(ctx, view, target)
    elif target == view.leader.id:
        steps, reasons = [PlanStep(action="none", detail=f"{target} already leads")], []
    elif not ctx.adapter.supports_transfer_target:
        steps, reasons = [], [ctx.adapter.transfer_refusal()]
    else:
        steps, reasons = _transfer_to(view, target)
    return ctx.plan(OPERATION, request.arguments(), view, steps=steps, reasons=reasons)


def _elect_any(ctx: OperationContext, view: ClusterView) -> tuple[list[PlanStep], list[str]]:
    if view.leader is not None and ctx.adapter.supports_step_down:
        return _step_down(view)
    if view.leader is not None:
        detail = f"{view.leader.id} already leads; name a target to move it"
        return [PlanStep(action="none", detail=detail)], []
    reasons = [] if view.has_quorum() else [view.no_quorum_reason()]
    reasons += _campaign_supported(ctx)
    candidate = view.most_up_to_date([v for v in view.voters if view.reachable(v)])
    if candidate is None:
        reasons.append("no voter is reachable")
    step = PlanStep(
        action="campaign",
        node=candidate,
        detail=f"{candidate} (the most up-to-date reachable voter) starts an election",
    )
    return [step], reasons


def _step_down(view: ClusterView) -> tuple[list[PlanStep], list[str]]:
    leader = view.leader
    assert leader is not None
    others = [v for v in view.voters if v != leader.id]
    ready = [v for v in others if view.available(v) and view.caught_up(v)]
    reasons = []
    if not ready:
        behind = "; ".join(view.lag_reason(v) for v in others) or "it has no other member"
        reasons.append(f"no other member of the group is caught up to take over ({behind})")
    step = PlanStep(
        action="step_down",
        node=leader.id,
        detail=f"{leader.id} steps down; one of {', '.join(ready) or 'none'} takes over",
    )
    return [step], reasons


def _not_eligible(view: ClusterView, target: str) -> str:
    if view.is_learner(target):
        return f"{target} is a learner, not a voter: learners cannot lead; promote it first"
    if not view.is_voter(target):
        voters = ", ".join(view.voters) or "unknown"
        return f"{target} is not a voter of this cluster (voters: {voters})"
    st = view.statuses.get(target)
    why = (st.error if st else None) or "no status"
    return f"{target} is unreachable ({why}): it cannot take over leadership"


def _campaign_for(
    ctx: OperationContext, view: ClusterView, target: str
) -> tuple[list[PlanStep], list[str]]:
    reasons: list[str] = []
    best = view.most_up_to_date([v for v in view.voters if view.reachable(v)])
    t, b = view.statuses[target], view.statuses.get(best or "")
    behind = b is not None and (t.last_term or 0, t.last_index or 0) < (
        b.last_term or 0,
        b.last_index or 0,
    )
    if behind:
        reasons.append(
            f"{target}'s log (term {t.last_term}, index {t.last_index}) is behind {best}'s: "
            "it cannot win an election"
        )
    if not view.has_quorum():
        reasons.append(view.no_quorum_reason())
    reasons += _campaign_supported(ctx)
    step = PlanStep(action="campaign", node=target, detail=f"{target} starts an election")
    return [step], reasons


def _campaign_supported(ctx: OperationContext) -> list[str]:
    if ctx.adapter.supports_campaign:
        return []
    return [NO_CAMPAIGN.format(kind=ctx.adapter.kind)]


def _transfer_to(view: ClusterView, target: str) -> tuple[list[PlanStep], list[str]]:
    leader = view.leader
    assert leader is not None
    reasons = []
    if not view.available(target):
        st = view.statuses[target]
        reasons.append(
            f"{target} does not follow leader {leader.id} (its role {st.role}, term "
            f"{st.term}): it is cut off from the leader"
        )
    elif not view.caught_up(target):
        reasons.append(f"{target} is lagging: {view.lag_reason(target)}")
    step = PlanStep(
        action="transfer_leadership",
        node=target,
        detail=f"{leader.id} hands leadership to {target} (TimeoutNow)",
    )
    return [step], reasons


def run(
    ctx: OperationContext, plan: Plan, progress: ProgressFn, timeout_s: float = 15.0
) -> ElectionResult:
    t0 = time.monotonic()
    view = ctx.view()
    prev, prev_term = plan.leader or view.last_known_leader, plan.term
    step = plan.steps[0]
    candidate = step.node

    def result(v: ClusterView, detail: str, action: str = step.action) -> ElectionResult:
        return ElectionResult(
            cluster=ctx.name,
            method=METHODS[action],  # type: ignore[arg-type]
            target=plan.arguments.get("target"),
            previous_leader=prev,
            previous_term=prev_term,
            leader=v.leader.id if v.leader else None,
            term=v.term,
            seconds=round(time.monotonic() - t0, 3),
            detail=detail,
        )

    if step.action == "none" or candidate is None:
        return result(view, f"{prev} already leads in term {prev_term}; nothing to do")
    if step.action == "step_down":
        progress(0, None, f"{candidate} steps down")
        ctx.adapter.step_down()
        ok, v = ctx.wait_for(
            lambda v: v.leader is not None and v.leader.id != candidate and len(v.leaders) == 1,
            timeout_s,
            progress,
            "waiting for a new leader",
        )
        if not ok:
            raise ManagerError(
                f"no new leader within {timeout_s:.0f}s after {candidate} stepped down "
                f"(leader now: {v.leader.id if v.leader else 'none'})",
                "check `raft-manager status`",
            )
        return result(v, f"{candidate} stepped down; {v.leader.id} leads")  # type: ignore[union-attr]
    if step.action == "transfer_leadership":
        progress(0, None, f"transferring leadership {prev} -> {candidate}")
        v = ctx.transfer_and_wait(candidate, progress)
        return result(v, f"leadership moved {prev} -> {candidate} in term {v.term}")
    if step.action == "campaign" and view.leader is not None and len(view.leaders) == 1:
        # The cluster elected a leader by itself between the plan and now (followers
        # campaign within a few ticks of seeing the old leader's connection close): a
        # campaign now would only disturb it. Who led before is not known any more.
        prev = plan.leader
        lead = view.leader.id
        return result(view, f"{lead} was elected before the campaign; nothing to do", "none")
    progress(0, None, f"{candidate} starts an election")
    v = _campaign_until_elected(ctx, candidate, progress, timeout_s)
    return result(v, f"{v.leader.id} elected in term {v.term}")  # type: ignore[union-attr]


def _campaign_until_elected(
    ctx: OperationContext, candidate: str, progress: ProgressFn, timeout_s: float
) -> ClusterView:
    last = [0.0]

    def campaign() -> None:
        # Pre-vote: voters that heard from the old leader within an election timeout
        # refuse at first, so the candidate asks again until they stop waiting.
        last[0] = time.monotonic()
        try:
            ctx.adapter.campaign(candidate)
        except NodeRequestError as e:
            if e.status != 409:  # 409: already the leader / no longer a voter
                raise

    def elected(v: ClusterView) -> bool:
        if v.leader is not None and len(v.leaders) == 1:
            return True
        if time.monotonic() - last[0] > CAMPAIGN_RETRY_S and v.reachable(candidate):
            campaign()
        return False

    campaign()
    ok, v = ctx.wait_for(elected, timeout_s, progress, "waiting for an election")
    if not ok:
        raise ManagerError(
            f"no leader elected within {timeout_s:.0f}s",
            "check that a quorum of voters is up and can reach each other",
        )
    return v
