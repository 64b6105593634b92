"""elect_leader: plan a leadership move (or an election), then carry it out.

With a target: transfer leadership to it, refusing a target that is not a reachable,
caught-up voter following the leader; in a leaderless cluster the target campaigns
if its log is the most up to date. Without one: nothing to do when a leader exists,
else the most up-to-date reachable voter campaigns (asked again while pre-vote holds
it back) until a leader is elected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ManagerError, NodeRequestError
from .models import ElectionResult, PlanStep
from .view import ClusterView

if TYPE_CHECKING:
    from .operations import Manager, ProgressFn

CAMPAIGN_RETRY_S = 0.25


@dataclass
class ElectionPlan:
    method: str = "none"  # none | transfer | campaign
    candidate: str | None = None
    steps: list[PlanStep] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


NO_CAMPAIGN = (
    "{kind} cannot be forced to elect a leader: its members have no campaign call; they "
    "start an election by themselves once they miss the leader's heartbeats for an "
    "election timeout, and one succeeds only when a quorum of voters is up and connected"
)


def plan_election(
    view: ClusterView, target: str | None, *, can_campaign: bool = True, kind: str = "raft_core"
) -> ElectionPlan:
    """``can_campaign`` is false for etcd: a leaderless cluster is refused with the why."""
    p = ElectionPlan()
    leader = view.leader
    reachable_voters = [v for v in view.voters if view.reachable(v)]
    if target is None:
        if leader is not None:
            p.steps.append(
                PlanStep(
                    action="none", detail=f"{leader.id} already leads; name a target to move it"
                )
            )
            return p
        if not view.has_quorum():
            p.reasons.append(view.no_quorum_reason())
        if not can_campaign:
            p.reasons.append(NO_CAMPAIGN.format(kind=kind))
        p.method, p.candidate = "campaign", view.most_up_to_date(reachable_voters)
        if p.candidate is None:
            p.reasons.append("no voter is reachable")
        p.steps.append(
            PlanStep(
                action="campaign",
                detail=f"{p.candidate} (the most up-to-date reachable voter) starts an election",
            )
        )
        return p
    if not view.is_voter(target):
        if view.is_learner(target):
            p.reasons.append(
                f"{target} is a learner, not a voter: learners cannot lead; promote it first"
            )
        else:
            p.reasons.append(
                f"{target} is not a voter of this cluster (voters: "
                f"{', '.join(view.voters) or 'unknown'})"
            )
    elif not view.reachable(target):
        st = view.statuses.get(target)
        p.reasons.append(
            f"{target} is unreachable ({(st.error if st else None) or 'no status'}): it cannot "
            "take over leadership"
        )
    elif leader is None:
        best = view.most_up_to_date(reachable_voters)
        t, b = view.statuses[target], view.statuses.get(best or "")
        if b is not None and (t.last_term or 0, t.last_index or 0) < (
            b.last_term or 0,
            b.last_index or 0,
        ):
            p.reasons.append(
                f"{target}'s log (term {t.last_term}, index {t.last_index}) is behind {best}'s: "
                "it cannot win an election"
            )
        if not view.has_quorum():
            p.reasons.append(view.no_quorum_reason())
        if not can_campaign:
            p.reasons.append(NO_CAMPAIGN.format(kind=kind))
        p.method, p.candidate = "campaign", target
        p.steps.append(PlanStep(action="campaign", detail=f"{target} starts an election"))
    elif target == leader.id:
        p.steps.append(PlanStep(action="none", detail=f"{target} already leads"))
    else:
        if not view.available(target):
            st = view.statuses[target]
            p.reasons.append(
                f"{target} does not follow leader {leader.id} (its role {st.role}, term "
                f"{st.term}): it is cut off from the leader"
            )
        elif not view.caught_up(target):
            p.reasons.append(f"{target} is lagging: {view.lag_reason(target)}")
        p.method, p.candidate = "transfer", target
        p.steps.append(
            PlanStep(
                action="transfer_leadership",
                detail=f"{leader.id} hands leadership to {target} (TimeoutNow)",
            )
        )
    return p


def run_election(
    mgr: Manager,
    view: ClusterView,
    plan: ElectionPlan,
    target: str | None,
    progress: ProgressFn,
    timeout_s: float,
) -> ElectionResult:
    t0 = time.monotonic()
    prev, prev_term = view.last_known_leader, view.term
    candidate = plan.candidate

    def result(v: ClusterView, detail: str) -> ElectionResult:
        return ElectionResult(
            cluster=mgr.name,
            method=plan.method,  # type: ignore[arg-type]
            target=target,
            previous_leader=prev,
            previous_term=prev_term,
            leader=v.leader.id if v.leader else None,
            term=v.term,
            seconds=round(time.monotonic() - t0, 3),
            detail=detail,
        )

    if plan.method == "none" or candidate is None:
        return result(view, f"{prev} already leads in term {prev_term}; nothing to do")
    if plan.method == "transfer":
        progress(0, None, f"transferring leadership {prev} -> {candidate}")
        try:
            mgr.adapter.transfer_leadership(candidate)
        except ManagerError as e:
            raise ManagerError(
                f"leadership transfer to {candidate} failed: {e.reason}",
                "check that the target is reachable from the leader and caught up; the old "
                "leader keeps leading when a transfer aborts",
            ) from None
        ok, v = mgr.wait_for(
            lambda v: v.leader is not None and v.leader.id == candidate,
            5.0,
            progress,
            f"waiting for {candidate} to lead",
        )
        if not ok:
            raise ManagerError(
                f"{candidate} did not become the leader (leader now: "
                f"{v.leader.id if v.leader else 'none'})",
                "check `raft-manager status`",
            )
        return result(v, f"leadership moved {prev} -> {candidate} in term {v.term}")

    progress(0, None, f"{candidate} starts an election")
    last = [0.0]

    def campaign() -> None:
        # Pre-vote: voters that heard from the old leader within an election timeout
        # refuse at first, so the candidate asks again until they stop waiting.
        last[0] = time.monotonic()
        try:
            mgr.adapter.campaign(candidate)
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
    ok, v = mgr.wait_for(elected, timeout_s, progress, "waiting for an election")
    if not ok:
        raise ManagerError(
            f"no leader elected within {timeout_s:.0f}s",
            "check that a quorum of voters is up and can reach each other",
        )
    return result(v, f"{v.leader.id} elected in term {v.term}")  # type: ignore[union-attr]
