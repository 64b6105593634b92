"""Human approvals of destructive plans, given out of band.

A plan id from a dry run is a two-step, but a model can take both steps itself, and an
answer given inside the MCP session (an elicitation) is no proof that a person agreed.
So on a cluster with ``require_approval`` (the default in production) a destructive
plan (``policy.DESTRUCTIVE``) is applied only after someone ran
``raft-manager approve PLAN_ID`` at a terminal.

An approval is a JSON file next to the plans (``STATE_DIR/plans/approvals``), so the
CLI process that grants it and the MCP server process that applies the plan see the
same one. It is bound to the exact stored plan (a fingerprint of the plan document,
which carries the term, leader and configuration the plan id was computed from),
expires with the plan, and is used at most once.

``approve`` refuses when stdin is not a terminal, and when it runs under the MCP
server: the server sets ``RAFT_MANAGER_VIA_MCP=1`` in its own environment at start, so
any process it (or a tool it hosts) spawns inherits the mark.

``ApprovalGate`` is the rule as ``Manager.mutate`` applies it, between checking a
saved plan and refusing an unsafe one. Requested, approved, declined and expired
approvals each get an audit line (operation ``approve``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from . import policy
from .audit import AuditLog
from .config import ClusterConfig
from .errors import Refused
from .models import Plan

ENV_VIA_MCP = "RAFT_MANAGER_VIA_MCP"


class Approval(BaseModel):
    """A human's yes to one stored plan."""

    model_config = ConfigDict(extra="forbid")

    plan_id: str
    cluster: str
    operation: str
    fingerprint: str = Field(description="sha256 of the stored plan document approved")
    approved_by: str
    approved_at: str
    expires_at: str = Field(description="the plan's own expiry")


def fingerprint(plan: Plan) -> str:
    doc = json.dumps(plan.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def via_mcp() -> bool:
    """True in the MCP server's process and every process it spawned."""
    return os.environ.get(ENV_VIA_MCP) == "1"


def record(
    audit: AuditLog,
    *,
    cluster: str,
    mode: str,
    plan_id: str,
    operation: str,
    outcome: str,
    reason: str | None = None,
) -> None:
    """The audit line of one approval event: requested, approved, declined, expired."""
    audit.record(
        cluster=cluster,
        mode=mode,
        operation="approve",
        arguments={"operation": operation},
        outcome=outcome,
        plan_id=plan_id,
        reason=reason,
    )


class ApprovalStore:
    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)

    def _path(self, pid: str) -> Path:
        # Plan ids were checked by the plan store; keep the file name safe regardless.
        safe = "".join(c for c in pid if c.isalnum() or c == "-")[:40]
        return self.dir / f"{safe}.json"

    def grant(self, plan: Plan, user: str) -> Approval:
        approval = Approval(
            plan_id=plan.plan_id,
            cluster=plan.cluster,
            operation=plan.operation,
            fingerprint=fingerprint(plan),
            approved_by=user,
            approved_at=_now().isoformat(timespec="seconds").replace("+00:00", "Z"),
            expires_at=plan.expires_at,
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(plan.plan_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(approval.model_dump_json())
        os.replace(tmp, path)
        return approval

    def get(self, pid: str) -> Approval | None:
        try:
            return Approval.model_validate_json(self._path(pid).read_text())
        except (OSError, ValueError):
            return None

    def valid_for(self, plan: Plan) -> Approval | None:
        """The approval of exactly this stored plan, if one exists and has not expired."""
        a = self.get(plan.plan_id)
        if a is None or a.fingerprint != fingerprint(plan) or _parse(a.expires_at) <= _now():
            return None
        return a

    def consume(self, pid: str) -> None:
        with contextlib.suppress(OSError):
            self._path(pid).unlink()

    def sweep(self, cluster: str | None = None) -> list[Approval]:
        """Remove approvals (of ``cluster``, or all) whose plan has expired; return them
        for the audit log."""
        gone: list[Approval] = []
        if not self.dir.is_dir():
            return gone
        now = _now()
        for p in self.dir.glob("p-*.json"):
            try:
                a = Approval.model_validate_json(p.read_text())
            except (OSError, ValueError):
                continue
            if (cluster is None or a.cluster == cluster) and _parse(a.expires_at) <= now:
                with contextlib.suppress(OSError):
                    p.unlink()
                    gone.append(a)
        return gone


class ApprovalGate:
    """The approval rule for one cluster: what ``Manager.mutate`` asks before applying."""

    def __init__(self, cluster: ClusterConfig, store: ApprovalStore, audit: AuditLog) -> None:
        self.cluster = cluster
        self.store = store
        self.audit = audit

    def required(self, operation: str) -> bool:
        """A destructive operation on a ``require_approval`` cluster."""
        return operation in policy.DESTRUCTIVE and self.cluster.approval_required

    def expire(self) -> None:
        """Drop this cluster's approvals whose plan expired unused, one audit line each."""
        for a in self.store.sweep(self.cluster.name):
            self._record(
                a.plan_id,
                a.operation,
                "expired",
                f"the plan expired at {a.expires_at} before it was applied",
            )

    def check(self, operation: str, stored: Plan | None) -> None:
        """Refuse unless a human approved ``stored`` (the saved plan being applied; None
        when the call brought no plan id)."""
        name = self.cluster.name
        if stored is None:
            raise Refused(
                f"cluster {name!r} requires a human's approval for {operation}",
                "make a plan with dry_run=true (--dry-run), ask a human to run "
                "`raft-manager approve PLAN_ID` at a terminal, then apply that plan_id",
                operation=operation,
            )
        if self.store.valid_for(stored) is None:
            self._record(stored.plan_id, operation, "requested", None)
            raise Refused(
                f"plan {stored.plan_id} needs a human's approval before it is applied "
                f"(cluster {name!r} has require_approval)",
                f"ask a human to run `raft-manager approve {stored.plan_id}` at a terminal "
                "(it cannot be approved through MCP), then apply the same plan_id again",
                operation=operation,
            )

    def _record(self, plan_id: str, operation: str, outcome: str, reason: str | None) -> None:
        record(
            self.audit,
            cluster=self.cluster.name,
            mode=self.cluster.mode,
            plan_id=plan_id,
            operation=operation,
            outcome=outcome,
            reason=reason,
        )
