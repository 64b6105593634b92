"""inject_fault (sandbox clusters only): partition, heal, kill, restart, stop, continue.

partition cuts ``nodes`` off from every other member in both directions (each node's
``/v1/admin/faults`` drop list; the nodes must run with ``--allow-fault-injection``);
heal clears the faults on ``nodes`` (default: every member); kill (SIGKILL) and
restart need a local cluster, whose processes raft-manager runs; so do stop (SIGSTOP:
the member freezes, its connections stay open) and continue (SIGCONT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .models import FaultResult, PlanStep
from .view import ClusterView

if TYPE_CHECKING:
    from .operations import Manager

KINDS = ("partition", "heal", "kill", "restart", "stop", "continue")


def plan_fault(
    mgr: Manager, view: ClusterView, kind: str, nodes: list[str]
) -> tuple[list[PlanStep], list[str], list[str]]:
    everyone = view.members()
    reasons: list[str] = []
    risks: list[str] = []
    unknown = [n for n in nodes if n not in everyone]
    if unknown:
        reasons.append(f"unknown node(s): {', '.join(unknown)}")
    if kind in ("partition", "kill", "restart") and not nodes:
        reasons.append(f"{kind} needs at least one node")
    if kind == "partition" and nodes and not [m for m in everyone if m not in nodes]:
        reasons.append("a partition needs members on both sides")
    if kind in ("kill", "restart", "stop", "continue") and not mgr.adapter.can_control_processes:
        reasons.append(f"{kind} needs a local cluster (raft-manager does not run these processes)")
    if kind in ("stop", "continue") and not nodes:
        reasons.append(f"{kind} needs at least one node")
    if kind in ("partition", "heal") and not mgr.adapter.supports_faults:
        reasons.append(
            f"{mgr.adapter.kind} members cannot be partitioned from here (no fault API); "
            "use kill, stop or restart on a local cluster"
        )
    if kind in ("partition", "kill", "stop"):
        left = [v for v in view.available_voters() if v not in nodes]
        if view.voters and len(left) < view.quorum():
            risks.append(
                f"{kind} leaves {len(left)} of {len(view.voters)} voters on the majority side: "
                "the cluster stops committing"
            )
    steps = [PlanStep(action=kind, detail=f"{kind} {', '.join(nodes) or 'all members'}")]
    return steps, reasons, risks


def run_fault(mgr: Manager, view: ClusterView, kind: str, nodes: list[str]) -> FaultResult:
    adapter = mgr.adapter
    everyone = view.members()
    faults: dict[str, dict[str, Any]] = {}
    affected: list[str] = []
    if kind == "partition":
        rest = [m for m in everyone if m not in nodes]
        for side, other in ((nodes, rest), (rest, nodes)):
            for m in side:
                if view.reachable(m):
                    faults[m] = adapter.set_faults(m, drop=other)
                    affected.append(m)
        detail = f"{', '.join(nodes)} cut off from {', '.join(rest)}"
    elif kind == "heal":
        for m in nodes or everyone:
            if view.reachable(m):
                faults[m] = adapter.set_faults(m, clear=True)
                affected.append(m)
        detail = f"faults cleared on {', '.join(affected) or 'no member'}"
    elif kind == "kill":
        for m in nodes:
            adapter.kill(m)
            affected.append(m)
        detail = f"killed {', '.join(nodes)} (SIGKILL)"
    elif kind in ("stop", "continue"):
        for m in nodes:
            (adapter.pause if kind == "stop" else adapter.resume)(m)
            affected.append(m)
        detail = f"{'stopped (SIGSTOP)' if kind == 'stop' else 'continued'} {', '.join(nodes)}"
    else:
        for m in nodes:
            if adapter.running(m):
                adapter.kill(m)
            adapter.start(m)
            affected.append(m)
        detail = f"restarted {', '.join(nodes)}"
    return FaultResult(
        cluster=mgr.name,
        kind=kind,  # type: ignore[arg-type]
        nodes=nodes,
        affected=affected,
        faults=faults,
        detail=detail,
    )
