"""inject_fault (sandbox clusters only): partition, heal, kill, restart, stop, continue.

partition cuts ``nodes`` off from every other member in both directions (each node's
``/v1/admin/faults`` drop list; the nodes must run with ``--allow-fault-injection``;
or, when clusters.yaml sets ``nft_command``, nftables rules on each member's host that
drop the packets: the nodes learn nothing, see ``remote``); heal clears the faults on
``nodes`` (default: every member); kill (SIGKILL) and
restart need a cluster whose processes raft-manager runs; so do stop (SIGSTOP: the
member freezes, its connections stay open) and continue (SIGCONT). Clusters without
a fault API (etcd) refuse partition and heal.
"""

from __future__ import annotations

from typing import Any, get_args

from ..core.context import OperationContext, ProgressFn
from ..core.models import FaultKind, FaultResult, InjectFaultRequest, Plan, PlanStep
from ..core.view import ClusterView, is_quorum
from . import remote

OPERATION = "inject_fault"
KINDS: tuple[str, ...] = get_args(FaultKind)
PROCESS_KINDS = ("kill", "restart", "stop", "continue")


def plan(ctx: OperationContext, request: InjectFaultRequest) -> Plan:
    view = ctx.view()
    kind, nodes = request.kind, request.nodes
    everyone = view.members()
    reasons: list[str] = []
    risks: list[str] = []
    unknown = [n for n in nodes if n not in everyone]
    if unknown:
        reasons.append(f"unknown node(s): {', '.join(unknown)}")
    if kind != "heal" and not nodes:
        reasons.append(f"{kind} needs at least one node")
    if kind == "partition" and nodes and not [m for m in everyone if m not in nodes]:
        reasons.append("a partition needs members on both sides")
    network = kind in ("partition", "heal") and ctx.cluster.nft_command is not None
    if kind in ("partition", "heal") and not network and not ctx.adapter.supports_faults:
        reasons.append(
            f"{ctx.adapter.kind} members cannot be partitioned from here (no fault API); "
            "use kill, stop or restart on a local cluster"
        )
    if kind in PROCESS_KINDS and not ctx.adapter.can_control_processes:
        reasons.append(f"{kind} needs a local cluster (raft-manager does not run these processes)")
    if kind in ("partition", "kill", "stop"):
        left = [v for v in view.available_voters() if v not in nodes]
        if view.voters and not is_quorum(view.voters, left, view.voters_outgoing):
            risks.append(
                f"{kind} leaves {len(left)} of {len(view.voters)} voters on the majority side: "
                "the cluster stops committing"
            )
    how = " (nftables rules on the hosts)" if network else ""
    steps = [PlanStep(action=kind, detail=f"{kind} {', '.join(nodes) or 'all members'}{how}")]
    return ctx.plan(OPERATION, request.arguments(), view, steps=steps, reasons=reasons, risks=risks)


def run(ctx: OperationContext, plan: Plan, progress: ProgressFn) -> FaultResult:
    request = InjectFaultRequest.model_validate(plan.arguments)
    view = ctx.view()
    kind, nodes = request.kind, request.nodes
    faults: dict[str, dict[str, Any]] = {}
    affected: list[str] = []
    if kind in ("partition", "heal") and ctx.cluster.nft_command is not None:
        detail = _network(ctx, view, kind, nodes, faults, affected)
    elif kind == "partition":
        detail = _partition(ctx, view, nodes, faults, affected)
    elif kind == "heal":
        for m in nodes or view.members():
            if view.reachable(m):
                faults[m] = ctx.adapter.set_faults(m, clear=True)
                affected.append(m)
        detail = f"faults cleared on {', '.join(affected) or 'no member'}"
    elif kind == "kill":
        for m in nodes:
            ctx.adapter.kill(m)
            affected.append(m)
        detail = f"killed {', '.join(nodes)} (SIGKILL)"
    elif kind in ("stop", "continue"):
        for m in nodes:
            (ctx.adapter.pause if kind == "stop" else ctx.adapter.resume)(m)
            affected.append(m)
        done = "stopped (SIGSTOP)" if kind == "stop" else "continued (SIGCONT)"
        detail = f"{done} {', '.join(nodes)}"
    else:
        for m in nodes:
            if ctx.adapter.running(m):
                ctx.adapter.kill(m)
            ctx.adapter.start(m)
            affected.append(m)
        detail = f"restarted {', '.join(nodes)}"
    return FaultResult(
        cluster=ctx.name, kind=kind, nodes=nodes, affected=affected, faults=faults, detail=detail
    )


def _partition(
    ctx: OperationContext,
    view: ClusterView,
    nodes: list[str],
    faults: dict[str, dict[str, Any]],
    affected: list[str],
) -> str:
    rest = [m for m in view.members() if m not in nodes]
    for side, other in ((nodes, rest), (rest, nodes)):
        for m in side:
            if view.reachable(m):
                faults[m] = ctx.adapter.set_faults(m, drop=other)
                affected.append(m)
    return f"{', '.join(nodes)} cut off from {', '.join(rest)}"


def _network(
    ctx: OperationContext,
    view: ClusterView,
    kind: str,
    nodes: list[str],
    faults: dict[str, dict[str, Any]],
    affected: list[str],
) -> str:
    """partition or heal as nftables rules on the members' hosts (``nft_command``)."""
    hosts = remote.nft_hosts(ctx, view)
    if kind == "heal":
        wanted: dict[str, dict[str, Any]] = {m: {} for m in nodes or view.members()}
    else:
        others = [m for m in view.members() if m not in nodes]
        wanted = {m: {"drop": others} for m in nodes} | {m: {"drop": list(nodes)} for m in others}
    remote.set_network_faults(ctx, hosts, wanted)
    faults.update(wanted)
    affected.extend(wanted)
    if kind == "heal":
        return f"nftables rules removed on {', '.join(wanted)}"
    rest = ", ".join(m for m in wanted if m not in nodes)
    return f"{', '.join(nodes)} cut off from {rest} by nftables rules on their hosts"
