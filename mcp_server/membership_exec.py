"""Carry out a membership plan step by step, re-checking what each step depends on.

Steps: start_process, add_learner, wait_caught_up, promote (refused again if the
learner lags by then), transfer_leadership (to the most caught-up remaining voter),
remove, stop_process. A failed step stops the plan; the error names the step and the
steps already done.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .errors import ManagerError, Refused
from .models import MembershipChange, PlanStep, StepResult

if TYPE_CHECKING:
    from .operations import Manager, ProgressFn


def apply_change(
    mgr: Manager, plan: MembershipChange, progress: ProgressFn, catch_up_timeout_s: float
) -> MembershipChange:
    t0 = time.monotonic()
    addresses = {"peer": plan.peer_address, "api": plan.api_address}
    results: list[StepResult] = []
    total = len(plan.steps)
    for i, step in enumerate(plan.steps):
        progress(i, total, step.detail)
        ts = time.monotonic()
        try:
            detail = _step(mgr, plan, step, addresses, progress, catch_up_timeout_s)
        except ManagerError as e:
            results.append(
                StepResult(
                    action=step.action,
                    ok=False,
                    detail=e.reason,
                    seconds=round(time.monotonic() - ts, 3),
                )
            )
            done = ", ".join(r.action for r in results if r.ok) or "nothing"
            raise type(e)(
                f"{plan.action} {plan.node}: step {i + 1} ({step.action}) failed: {e.reason}",
                f"steps completed: {done}. Check `raft-manager status` before retrying"
                + (f"; {e.next_step}" if e.next_step else ""),
                operation="change_membership",
                reasons=e.reasons if len(e.reasons) > 1 else None,
            ) from None
        results.append(
            StepResult(
                action=step.action, ok=True, detail=detail, seconds=round(time.monotonic() - ts, 3)
            )
        )
    progress(total, total, "done")
    final = mgr.read_view()
    return plan.model_copy(
        update={
            "dry_run": False,
            "applied": True,
            "results": results,
            "peer_address": addresses["peer"],
            "api_address": addresses["api"],
            "voters_after": final.voters,
            "learners_after": final.learners,
            "seconds": round(time.monotonic() - t0, 3),
        }
    )


def _step(
    mgr: Manager,
    plan: MembershipChange,
    step: PlanStep,
    addresses: dict[str, str | None],
    progress: ProgressFn,
    catch_up_timeout_s: float,
) -> str:
    node, adapter = plan.node, mgr.adapter
    if step.action == "start_process":
        np = adapter.new_process(node)
        addresses.update(peer=np.peer_address, api=np.api_address)
        return f"started {node} (peer {np.peer_address}, API {np.api_address})"
    if step.action == "add_learner":
        peer = addresses["peer"]
        assert peer is not None
        r = adapter.add_learner(node, peer, addresses["api"])
        return f"{node} added as a learner at index {r.index}"
    if step.action == "wait_caught_up":
        ok, v = mgr.wait_for(
            lambda v: bool(v.caught_up(node)),
            catch_up_timeout_s,
            progress,
            lambda v: f"{node} catching up: {v.lag(node)} entries behind",
            interval=0.1,
        )
        if not ok:
            raise ManagerError(
                f"{node} did not catch up within {catch_up_timeout_s:.0f}s: {v.lag_reason(node)}",
                f"check that {node} runs and can reach the leader",
            )
        return f"{node} caught up (match {v.match_index(node)})"
    if step.action == "promote":
        v = mgr.read_view()
        if not v.caught_up(node):
            raise Refused(f"cannot promote a lagging learner: {v.lag_reason(node)}")
        r = adapter.promote(node)
        return f"{node} promoted; voters {','.join(r.voters)}"
    if step.action == "transfer_leadership":
        v = mgr.read_view()
        target = v.most_caught_up([x for x in plan.voters_after if x != node])
        if target is None:
            raise ManagerError("no caught-up voter to hand leadership to")
        adapter.transfer_leadership(target)
        ok, v = mgr.wait_for(
            lambda v: v.leader is not None and v.leader.id == target,
            5.0,
            progress,
            f"waiting for {target} to lead",
        )
        if not ok:
            raise ManagerError(f"leadership did not move to {target}")
        return f"leadership moved {node} -> {target}"
    if step.action == "remove":
        r = adapter.remove(node)
        learners = f", learners {','.join(r.learners)}" if r.learners else ""
        return f"{node} removed at index {r.index}; voters {','.join(r.voters)}{learners}"
    if step.action == "stop_process":
        adapter.retire_process(node)
        return f"stopped {node}'s process"
    raise ManagerError(f"unknown plan step {step.action}")  # pragma: no cover
