"""``raft-manager approve PLAN_ID``: a human's out-of-band approval of one plan.

It shows the plan's steps, reasons and risks, asks at the terminal, and records the
answer (``core/approvals.py``). It refuses without a terminal on stdin and when it runs
under the MCP server, so an agent cannot approve its own plan; each approved or
declined answer, and each approval found expired, gets an audit line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from rich.text import Text

from ..core import InputError, Plan, Refused
from ..core.approvals import ApprovalStore, record, via_mcp
from ..core.audit import current_user
from ..core.config import state_dir
from ..core.plans import PlanStore
from . import render
from .launcher import audit_for
from .ui import EXIT_OK, UI, config_of


def cmd_approve(args: argparse.Namespace, ui: UI) -> int:
    pid = args.plan_id
    if via_mcp():
        raise Refused(
            "approve refused: this process runs under the MCP server, and an approval "
            "must come from a human, not from the agent",
            f"a human runs `raft-manager approve {pid}` in their own terminal",
            operation="approve",
        )
    if not sys.stdin.isatty():
        raise Refused(
            "approve needs a terminal: it asks a human to confirm, and stdin is not a tty",
            f"run `raft-manager approve {pid}` yourself in a terminal",
            operation="approve",
        )
    plans = PlanStore(state_dir() / "plans")
    approvals = ApprovalStore(plans.dir / "approvals")
    audit = audit_for(args)
    mode_of = _mode_lookup(args)

    def rec(plan_id: str, cluster: str, operation: str, outcome: str, reason: str | None) -> None:
        record(
            audit,
            cluster=cluster,
            mode=mode_of(cluster),
            plan_id=plan_id,
            operation=operation,
            outcome=outcome,
            reason=reason,
        )

    for a in approvals.sweep():
        rec(a.plan_id, a.cluster, a.operation, "expired", f"the plan expired at {a.expires_at}")
    plan = plans.get(pid, "approve")
    if not plan.safe:
        raise Refused(
            f"plan {plan.plan_id} is not safe: {plan.reasons[0]}",
            "an unsafe plan is never applied; fix the cause and make a new plan",
            operation="approve",
            reasons=plan.reasons,
        )
    if not _ask(ui, plan):
        rec(plan.plan_id, plan.cluster, plan.operation, "declined", "declined at the terminal")
        raise Refused(
            f"plan {plan.plan_id} was not approved",
            "nothing was changed; the agent must not apply this plan",
            operation="approve",
        )
    approval = approvals.grant(plan, current_user())
    rec(plan.plan_id, plan.cluster, plan.operation, "approved", None)
    ui.emit(
        approval,
        lambda a: Text(
            f"approved {a.plan_id} ({a.operation} on {a.cluster}) until {a.expires_at}; "
            "it can be applied once",
            style="green",
        ),
    )
    return EXIT_OK


def _ask(ui: UI, plan: Plan) -> bool:
    """Show the plan and ask; True only for an explicit yes."""
    # This is the approval the plan asks for: show it without that request.
    ui.err.print(render.plan_view(plan.model_copy(update={"requires_approval": False})))
    ui.err.print(
        Text(
            f"Approve {plan.operation} on cluster {plan.cluster!r} as planned "
            f"(term {plan.term}, leader {plan.leader}, expires {plan.expires_at})? [y/N] ",
            style="bold",
        ),
        end="",
    )
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _mode_lookup(args: argparse.Namespace) -> Callable[[str], str]:
    """A cluster's mode by name, for the audit line (sandbox when not configured here)."""
    try:
        clusters = config_of(args).clusters
    except InputError:
        clusters = {}
    return lambda name: clusters[name].mode if name in clusters else "sandbox"
