"""recover_node: bring a crashed or lagging member back and wait until it has caught up.

Local clusters: start the process if it is not running, then wait. Other clusters:
wait if the member answers; otherwise run the cluster's ``recover_command`` for it
(clusters.yaml, e.g. ``ssh {host} systemctl restart raft-node@{id}``; see
``remote``), or, without one, return what the operator must do (the adapter words the
steps for its kind). The plan's steps say which: ``start_process``, ``run_command`` or
``manual``, then ``wait_caught_up``.
"""

from __future__ import annotations

import shlex
import time

from ..core.context import OperationContext, ProgressFn
from ..core.errors import ManagerError
from ..core.models import Plan, PlanStep, RecoverRequest, RecoverResult
from ..core.view import ClusterView
from . import remote

OPERATION = "recover_node"


def plan(ctx: OperationContext, request: RecoverRequest) -> Plan:
    view = ctx.view()
    node = request.node_id
    reasons, steps = [], []
    if not (view.is_voter(node) or view.is_learner(node)):
        reasons.append(f"{node} is not a member of this cluster")
    adapter = ctx.adapter
    if adapter.can_control_processes and adapter.running(node) is False:
        steps.append(PlanStep(action="start_process", node=node, detail=f"start {node}'s process"))
    elif not adapter.can_control_processes and not view.reachable(node):
        if ctx.cluster.recover_command is None:
            detail = f"the operator restarts {node} on its host"
            steps.append(PlanStep(action="manual", node=node, detail=detail))
        else:
            try:
                argv = _restart_argv(ctx, view, node)
                steps.append(
                    PlanStep(action="run_command", node=node, detail=f"run {shlex.join(argv)}")
                )
            except ManagerError as e:
                reasons.append(e.reason)
    steps.append(
        PlanStep(action="wait_caught_up", node=node, detail=f"wait until {node} has caught up")
    )
    return ctx.plan(OPERATION, request.arguments(), view, steps=steps, reasons=reasons)


def run(
    ctx: OperationContext, plan: Plan, progress: ProgressFn, timeout_s: float = 60.0
) -> RecoverResult:
    t0 = time.monotonic()
    node = plan.arguments["node_id"]
    actions = {s.action for s in plan.steps}
    if "manual" in actions:
        return _manual(ctx, ctx.view(), node, t0)
    action = "waited"
    if "start_process" in actions:
        progress(0, None, f"starting {node}")
        ctx.adapter.start(node)
        action = "restarted"
    if "run_command" in actions:
        argv = _restart_argv(ctx, ctx.view(), node)
        progress(0, None, f"running {shlex.join(argv)}")
        remote.run(argv, f"restarting {node}")
        action = "restarted"
    applied, target = _wait_caught_up(ctx, node, progress, timeout_s)
    progress(1, 1, f"{node} caught up")
    return RecoverResult(
        cluster=ctx.name,
        node_id=node,
        action=action,  # type: ignore[arg-type]
        caught_up=True,
        applied_index=applied,
        target_index=target,
        seconds=round(time.monotonic() - t0, 3),
    )


def _restart_argv(ctx: OperationContext, view: ClusterView, node: str) -> list[str]:
    """The cluster's ``recover_command`` for ``node``."""
    template = str(ctx.cluster.recover_command)
    return remote.node_command(template, node, remote.host_of(ctx, view, node))


def _manual(ctx: OperationContext, view: ClusterView, node: str, t0: float) -> RecoverResult:
    st = view.statuses.get(node)
    where = (st.api_address if st else None) or "address unknown"
    steps = ctx.adapter.restart_instructions(node, where)
    steps.append(
        f"or let raft-manager run it: set recover_command for cluster {ctx.name!r} in "
        f'clusters.yaml, e.g. recover_command: "ssh {{host}} systemctl restart '
        f'{ctx.adapter.service}@{{id}}"'
    )
    return RecoverResult(
        cluster=ctx.name,
        node_id=node,
        action="manual",
        caught_up=False,
        applied_index=None,
        target_index=view.leader.commit_index if view.leader else None,
        seconds=round(time.monotonic() - t0, 3),
        instructions=steps,
    )


def _wait_caught_up(
    ctx: OperationContext, node: str, progress: ProgressFn, timeout_s: float
) -> tuple[int | None, int | None]:
    """Wait until ``node`` applied the leader's commit index (as of when it answered)."""
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

    ok, v = ctx.wait_for(caught, timeout_s, progress, message, interval=0.1)
    st = v.statuses.get(node)
    applied = st.applied_index if st and st.reachable else None
    if not ok:
        log = f" ({ctx.cluster.dir}/{node}.log)" if ctx.cluster.dir else ""
        raise ManagerError(
            f"{node} did not catch up within {timeout_s:.0f}s (applied {applied}, target "
            f"{target.get('index')})",
            f"check {node}'s log{log}",
        )
    return applied, target.get("index")
