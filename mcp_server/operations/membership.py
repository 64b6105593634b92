"""change_membership: plan a change (steps, quorum before and after, why it is unsafe),
then carry it out step by step, re-checking what each step depends on.

Rules:

- every change goes through a single stable leader with a quorum available, and only
  when no other change is in flight (no joint configuration, nothing pending);
- a voter is added as a learner first, and promoted only once caught up (the leader
  replicates to it in ``replicate`` state, at most ``CAUGHT_UP_LAG`` entries behind);
- a removal must leave at least a quorum of the *new* configuration available;
- removing the leader hands leadership to the most caught-up remaining voter first
  (or, where leaders only step down, asks it to step down);
- clusters with several Raft groups (NATS) refuse a removal that would break any
  group's quorum (``removal_blockers``); clusters without learners (NATS) refuse
  add_learner and promote, and add a voter by starting it (``joins_by_starting``).

Steps: start_process, add_learner (or add_learner then start_process, for clusters whose
members join only once added: etcd), wait_caught_up, promote (refused again if the
learner lags by then), transfer_leadership, remove, stop_process. A failed step stops
the plan; the error names the step and the steps already done.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from ..core.context import OperationContext, ProgressFn
from ..core.errors import ManagerError, Refused
from ..core.models import MembershipChange, MembershipRequest, PlanStep, StepResult
from ..core.plans import make_plan
from ..core.port import ClusterAdapter
from ..core.view import CAUGHT_UP_LAG, ClusterView, is_quorum, quorum_of

OPERATION = "change_membership"
LEADER_WAIT_S = 15.0
ACTIONS = ("add_learner", "add_voter", "promote", "remove")


# -- planning -----------------------------------------------------------------------------------


def plan(ctx: OperationContext, request: MembershipRequest) -> MembershipChange:
    view = ctx.view()
    local = ctx.adapter.planned_addresses(request.node_id)
    return plan_change(
        view,
        cluster=ctx.name,
        action=request.action,
        node_id=request.node_id,
        peer_address=request.peer_address,
        api_address=request.api_address,
        local_addresses=local,
        start_after_add=ctx.adapter.member_joins_after_add,
        ttl_s=ctx.plan_ttl_s,
        adapter=ctx.adapter,
    )


@dataclass
class _Draft:
    """A plan being worked out: what each rule adds to it."""

    view: ClusterView
    node_id: str
    peer: str | None
    api: str | None
    local: tuple[str, str] | None
    start_after_add: bool
    adapter: ClusterAdapter | None
    voters_after: list[str]
    learners_after: list[str]
    steps: list[PlanStep] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    risks: list[str] = field(default_factory=list)

    def step(self, action: str, detail: str) -> None:
        self.steps.append(PlanStep(action=action, node=self.node_id, detail=detail))


def plan_change(
    view: ClusterView,
    *,
    cluster: str,
    action: str,
    node_id: str,
    peer_address: str | None = None,
    api_address: str | None = None,
    local_addresses: tuple[str, str] | None = None,
    start_after_add: bool = False,
    ttl_s: int = 900,
    adapter: ClusterAdapter | None = None,
) -> MembershipChange:
    """The plan for ``action`` on ``node_id`` in the cluster as ``view`` saw it.

    ``local_addresses`` is where a local cluster would start the new node's process
    (used when no ``peer_address`` is given); None for clusters we do not run.
    ``start_after_add``: the process can only start once the cluster has added the
    member (etcd), so the start step follows the add instead of preceding it.
    ``adapter``: its capability flags (learners, joining by starting, targeted
    transfers) and the other groups' removal blockers; None: raft_core's.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    d = _Draft(
        view,
        node_id,
        peer_address,
        api_address,
        local_addresses,
        start_after_add,
        adapter,
        list(view.voters),
        list(view.learners),
    )
    d.reasons += _cluster_ready(view)
    if action in ("add_learner", "promote") and adapter and not adapter.supports_learners:
        d.reasons.append(f"{adapter.kind} has no learners: add a voter instead (add_voter)")
    if action == "add_voter" and adapter is not None and adapter.joins_by_starting:
        _plan_join(d)
    elif action in ("add_learner", "add_voter"):
        _plan_add(d, as_voter=action == "add_voter")
    elif action == "promote":
        _plan_promote(d)
    else:
        _plan_remove(d)
    _check_new_quorum(d, action)
    arguments = {
        "action": action,
        "node_id": node_id,
        "peer_address": peer_address,
        "api_address": api_address,
    }
    base = make_plan(
        cluster, OPERATION, arguments, view, steps=d.steps, reasons=d.reasons, risks=d.risks,
        ttl_s=ttl_s,
    )  # fmt: skip
    return MembershipChange(
        **base.model_dump(),
        action=action,
        node_id=node_id,
        peer_address=d.peer,
        api_address=d.api,
        quorum_before=quorum_of(view.voters),
        quorum_after=quorum_of(d.voters_after),
        voters_after=d.voters_after,
        learners_after=d.learners_after,
    )


def _cluster_ready(view: ClusterView) -> list[str]:
    """Why the cluster cannot take any change right now (empty when it can)."""
    reasons = []
    if len(view.leaders) > 1:
        reasons.append(
            "several members claim leadership ("
            + ", ".join(f"{s.id} term {s.term}" for s in view.leaders)
            + "); wait until only one leader remains"
        )
    if view.leader is None:
        reasons.append(
            "no leader: a membership change goes through the leader; wait for an election "
            "or run `raft-manager elect`"
        )
    if view.voters and not view.has_quorum():
        reasons.append(
            f"quorum lost: {len(view.available_voters())} of {len(view.voters)} voters "
            f"available, {view.quorum()} needed"
        )
    if view.joint:
        reasons.append(
            "another membership change is in flight: a joint configuration is in force (old "
            f"voters {','.join(view.voters_outgoing)}, new {','.join(view.voters)}); wait "
            "until it is left"
        )
    elif view.change_in_flight:
        reasons.append(
            "another membership change is in flight (proposed but not applied yet); wait "
            "for it to apply"
        )
    return reasons


def _plan_add(d: _Draft, *, as_voter: bool) -> None:
    node, view = d.node_id, d.view
    if node in view.voters:
        d.reasons.append(f"{node} is already a voter")
    elif node in view.learners:
        d.reasons.append(
            f"{node} is already a learner" + ("; promote it instead" if as_voter else "")
        )
    start = None
    if d.peer is None:
        if d.local is not None:
            d.peer, d.api = d.local
            start = f"start an empty member process {node} (peer {d.peer}, API {d.api})"
            if not d.start_after_add:
                d.step("start_process", start)
        else:
            d.reasons.append(
                f"{node} needs --peer-address (and --api-address): this cluster's "
                "processes are not run by raft-manager"
            )
    d.step("add_learner", f"add {node} as a learner (peer {d.peer})")
    if start is not None and d.start_after_add:
        d.step("start_process", start)
    d.step("wait_caught_up", f"wait until {node} is within {CAUGHT_UP_LAG} entries of the leader")
    if as_voter:
        d.step("promote", f"promote {node} to voter")
        d.voters_after = sorted([*view.voters, node])
    else:
        d.learners_after = sorted([*view.learners, node])


def _plan_join(d: _Draft) -> None:
    """Members that join by starting (NATS): start the process, wait until current."""
    node, view = d.node_id, d.view
    if node in view.voters:
        d.reasons.append(f"{node} is already a member")
    if d.local is None:
        d.reasons.append(
            f"raft-manager does not run this cluster's servers: start {node} on its host with "
            f"routes to the others, then `raft-manager recover {node}` waits until it is current"
        )
    else:
        d.peer, d.api = d.local
        d.step("start_process", f"start {node} with routes to the others (route {d.peer})")
    d.step("wait_caught_up", f"wait until {node} is a current member of the group")
    d.voters_after = sorted([*view.voters, node])


def _plan_promote(d: _Draft) -> None:
    node, view = d.node_id, d.view
    if node in view.voters:
        d.reasons.append(f"{node} is already a voter")
    elif node not in view.learners:
        d.reasons.append(f"{node} is not a learner; add it as a learner first")
    elif view.leader is not None and not view.caught_up(node):
        d.reasons.append(f"cannot promote a lagging learner: {view.lag_reason(node)}")
    d.voters_after = sorted([*view.voters, node])
    d.learners_after = [x for x in view.learners if x != node]
    d.step("promote", f"promote {node} to voter (via a joint config)")


def _plan_remove(d: _Draft) -> None:
    node, view = d.node_id, d.view
    if node not in view.voters and node not in view.learners:
        d.reasons.append(f"{node} is not a member of this cluster")
    elif node in view.learners:
        d.learners_after = [x for x in view.learners if x != node]
    else:
        d.voters_after = [x for x in view.voters if x != node]
        _removal_keeps_quorum(d)
        if d.adapter is not None:
            d.reasons += d.adapter.removal_blockers(node)
        _hand_over_first(d)
    d.step("remove", f"remove {node} from the configuration")
    if d.local is not None:
        d.step("stop_process", f"stop {node}'s process once the removal is committed")


def _removal_keeps_quorum(d: _Draft) -> None:
    after = d.voters_after
    q_after = quorum_of(after)
    avail_after = d.view.available_voters(after)
    if not after:
        d.reasons.append(f"cannot remove {d.node_id}: it is the last voter")
    elif not is_quorum(after, avail_after):
        d.reasons.append(
            f"removing {d.node_id} would leave {len(avail_after)} available voter(s) "
            f"({', '.join(avail_after) or 'none'}) of the new configuration "
            f"{','.join(after)}, fewer than its quorum of {q_after}"
        )
    elif len(avail_after) == q_after and len(after) > 1:
        d.risks.append(
            f"after removing {d.node_id}, exactly a quorum ({q_after}) of voters is "
            "available: losing one more stops the cluster"
        )


def _hand_over_first(d: _Draft) -> None:
    leader = d.view.leader
    if leader is None or d.node_id != leader.id or not d.voters_after:
        return
    target = d.view.most_caught_up(d.voters_after)
    if d.adapter is not None and not d.adapter.supports_transfer_target:
        if target is None:
            d.reasons.append(f"{d.node_id} is the leader and no other member is caught up")
        d.steps.append(
            PlanStep(
                action="step_down",
                node=d.node_id,
                detail=f"{d.node_id} is the leader: it steps down first",
            )
        )
        return
    if target is None:
        d.reasons.append(
            f"{d.node_id} is the leader and no remaining voter is caught up to take over"
        )
        return
    d.steps.append(
        PlanStep(
            action="transfer_leadership",
            node=target,
            detail=f"{d.node_id} is the leader: transfer leadership to {target} first",
        )
    )


def _check_new_quorum(d: _Draft, action: str) -> None:
    after = d.voters_after
    q_after = quorum_of(after)
    if action in ("add_voter", "promote", "remove") and after and len(after) % 2 == 0:
        d.risks.append(
            f"{len(after)} voters tolerate no more failures than {len(after) - 1} "
            f"(quorum {q_after})"
        )
    if action in ("add_voter", "promote") and not d.reasons:
        # The new member counts as available: it is caught up (or will be, once added).
        avail_after = [*d.view.available_voters(), d.node_id]
        if not is_quorum(after, avail_after):
            d.reasons.append(
                f"after adding {d.node_id}, {len(avail_after)} voters would be available, fewer "
                f"than the new quorum of {q_after}"
            )


# -- applying -----------------------------------------------------------------------------------


def run(
    ctx: OperationContext,
    plan: MembershipChange,
    progress: ProgressFn,
    catch_up_timeout_s: float = 30.0,
) -> MembershipChange:
    t0 = time.monotonic()
    addresses = {"peer": plan.peer_address, "api": plan.api_address}
    results: list[StepResult] = []
    total = len(plan.steps)
    for i, step in enumerate(plan.steps):
        progress(i, total, step.detail)
        ts = time.monotonic()
        try:
            detail = _step(ctx, plan, step, addresses, progress, catch_up_timeout_s)
        except ManagerError as e:
            seconds = round(time.monotonic() - ts, 3)
            results.append(
                StepResult(action=step.action, ok=False, detail=e.reason, seconds=seconds)
            )
            raise _step_failed(plan, i, step, e, results) from None
        seconds = round(time.monotonic() - ts, 3)
        results.append(StepResult(action=step.action, ok=True, detail=detail, seconds=seconds))
    progress(total, total, "done")
    final = ctx.view()
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


def _step_failed(
    plan: MembershipChange, i: int, step: PlanStep, e: ManagerError, results: list[StepResult]
) -> ManagerError:
    done = ", ".join(r.action for r in results if r.ok) or "nothing"
    # A copy keeps what the kind of error carries (a node's status, indeterminacy).
    failed = copy.copy(e)
    failed.reason = f"{plan.action} {plan.node_id}: step {i + 1} ({step.action}) failed: {e.reason}"
    failed.args = (failed.reason,)
    failed.next_step = f"steps completed: {done}. Check `raft-manager status` before retrying" + (
        f"; {e.next_step}" if e.next_step else ""
    )
    failed.operation = OPERATION
    failed.reasons = e.reasons if len(e.reasons) > 1 else [failed.reason]
    return failed


def _step(
    ctx: OperationContext,
    plan: MembershipChange,
    step: PlanStep,
    addresses: dict[str, str | None],
    progress: ProgressFn,
    catch_up_timeout_s: float,
) -> str:
    node, adapter = plan.node_id, ctx.adapter
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
        return _wait_caught_up(ctx, node, progress, catch_up_timeout_s)
    if step.action == "promote":
        v = ctx.view()
        if not v.caught_up(node):
            raise Refused(f"cannot promote a lagging learner: {v.lag_reason(node)}")
        r = adapter.promote(node)
        return f"{node} promoted; voters {','.join(r.voters)}"
    if step.action == "transfer_leadership":
        v = ctx.view()
        target = v.most_caught_up([x for x in plan.voters_after if x != node])
        if target is None:
            raise ManagerError("no caught-up voter to hand leadership to")
        ctx.transfer_and_wait(target, progress)
        return f"leadership moved {node} -> {target}"
    if step.action == "step_down":
        adapter.step_down()
        ok, v = ctx.wait_for(
            lambda v: v.leader is not None and v.leader.id != node,
            LEADER_WAIT_S,
            progress,
            f"waiting for a leader other than {node}",
        )
        if not ok:
            raise ManagerError(f"no leader other than {node} within {LEADER_WAIT_S:.0f}s")
        return f"{node} stepped down; {v.leader.id} leads"  # type: ignore[union-attr]
    if step.action == "remove":
        r = adapter.remove(node)
        learners = f", learners {','.join(r.learners)}" if r.learners else ""
        return f"{node} removed at index {r.index}; voters {','.join(r.voters)}{learners}"
    if step.action == "stop_process":
        adapter.retire_process(node)
        return f"stopped {node}'s process"
    raise ManagerError(f"unknown plan step {step.action}")  # pragma: no cover


def _wait_caught_up(
    ctx: OperationContext, node: str, progress: ProgressFn, timeout_s: float
) -> str:
    ok, v = ctx.wait_for(
        lambda v: bool(v.caught_up(node)),
        timeout_s,
        progress,
        lambda v: f"{node} catching up: {v.lag(node)} entries behind",
        interval=0.1,
    )
    if not ok:
        raise ManagerError(
            f"{node} did not catch up within {timeout_s:.0f}s: {v.lag_reason(node)}",
            f"check that {node} runs and can reach the leader",
        )
    return f"{node} caught up (match {v.match_index(node)})"
