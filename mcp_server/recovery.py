"""recover_node: bring a crashed or lagging member back and wait until it has caught up.

Local clusters: start the process if it is not running, then wait. Other clusters:
wait if the member answers; otherwise return what the operator must do (raft-manager
does not run its process).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ManagerError
from .models import PlanStep, RecoverResult
from .view import ClusterView

if TYPE_CHECKING:
    from .operations import Manager, ProgressFn


@dataclass
class RecoveryPlan:
    start: bool = False  # start the local process first
    manual: bool = False  # not ours and not answering: the operator must act
    steps: list[PlanStep] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def plan_recovery(mgr: Manager, view: ClusterView, node: str) -> RecoveryPlan:
    p = RecoveryPlan()
    if not (view.is_voter(node) or view.is_learner(node)):
        p.reasons.append(f"{node} is not a member of this cluster")
    local = mgr.adapter.can_control_processes
    if local and mgr.adapter.running(node) is False:
        p.start = True
        p.steps.append(PlanStep(action="start_process", detail=f"start {node}'s process"))
    elif not local and not view.reachable(node):
        p.manual = True
        p.steps.append(
            PlanStep(action="manual", detail=f"the operator restarts {node} on its host")
        )
    p.steps.append(PlanStep(action="wait_caught_up", detail=f"wait until {node} has caught up"))
    return p


def run_recovery(
    mgr: Manager,
    view: ClusterView,
    node: str,
    plan: RecoveryPlan,
    progress: ProgressFn,
    timeout_s: float,
) -> RecoverResult:
    t0 = time.monotonic()
    if plan.manual:
        st = view.statuses.get(node)
        where = (st.api_address if st else None) or "address unknown"
        return RecoverResult(
            cluster=mgr.name,
            node=node,
            action="manual",
            caught_up=False,
            applied_index=None,
            target_index=view.leader.commit_index if view.leader else None,
            seconds=round(time.monotonic() - t0, 3),
            instructions=mgr.adapter.restart_instructions(node, where),
        )
    action = "waited"
    if plan.start:
        progress(0, None, f"starting {node}")
        mgr.adapter.start(node)
        action = "restarted"
    target: dict[str, int] = {}

    def caught(v: ClusterView) -> bool:
        st = v.statuses.get(node)
        if v.leader is None or st is None or not st.reachable:
            return False
        if "index" not in target:  # the leader's commit index once the node answers
            target["index"] = v.leader.commit_index or 0
        return (st.applied_index or 0) >= target["index"] and bool(v.caught_up(node))

    def message(v: ClusterView) -> str:
        st = v.statuses.get(node)
        applied = st.applied_index if st and st.reachable else None
        return f"{node} catching up: applied {applied} of {target.get('index', '?')}"

    ok, v = mgr.wait_for(caught, timeout_s, progress, message, interval=0.1)
    st = v.statuses.get(node)
    applied = st.applied_index if st and st.reachable else None
    if not ok:
        log = f" ({mgr.cluster.dir}/{node}.log)" if mgr.cluster.dir else ""
        raise ManagerError(
            f"{node} did not catch up within {timeout_s:.0f}s (applied {applied}, target "
            f"{target.get('index')})",
            f"check {node}'s log{log}",
        )
    progress(1, 1, f"{node} caught up")
    return RecoverResult(
        cluster=mgr.name,
        node=node,
        action=action,  # type: ignore[arg-type]
        caught_up=True,
        applied_index=applied,
        target_index=target.get("index"),
        seconds=round(time.monotonic() - t0, 3),
    )
