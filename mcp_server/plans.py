"""Plan ids bound to cluster state, and the store that lets ``--plan-id`` work later.

A plan id is a hash of the cluster, the operation, its arguments and the state the plan
was made in (term, leader, voters, learners). Applying a plan recomputes it against the
cluster as it is now: a different id means the cluster changed since, and the plan is
refused. Plans are kept as JSON files under ``STATE_DIR/plans``, expire after a while
(15 minutes by default) and are used at most once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import Refused
from .models import MembershipChange, Plan


def plan_id(
    cluster: str,
    operation: str,
    arguments: dict[str, Any],
    *,
    term: int | None,
    leader: str | None,
    voters: list[str],
    learners: list[str],
) -> str:
    doc = {
        "cluster": cluster,
        "operation": operation,
        "arguments": arguments,
        "term": term,
        "leader": leader,
        "voters": sorted(voters),
        "learners": sorted(learners),
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return f"p-{digest[:16]}"


def timestamps(ttl_s: int) -> tuple[str, str]:
    now = dt.datetime.now(dt.UTC)
    fmt = lambda t: t.isoformat(timespec="seconds").replace("+00:00", "Z")  # noqa: E731
    return fmt(now), fmt(now + dt.timedelta(seconds=ttl_s))


def _expired(plan: Plan) -> bool:
    exp = dt.datetime.fromisoformat(plan.expires_at.replace("Z", "+00:00"))
    return dt.datetime.now(dt.UTC) >= exp


def describe_change(old: Plan, new: Plan) -> list[str]:
    """What differs between the state a plan was made in and the state now."""
    out = []
    if old.term != new.term:
        out.append(f"term {old.term} -> {new.term}")
    if old.leader != new.leader:
        out.append(f"leader {old.leader} -> {new.leader}")
    if sorted(old.voters) != sorted(new.voters):
        out.append(f"voters {','.join(old.voters)} -> {','.join(new.voters)}")
    if sorted(old.learners) != sorted(new.learners):
        out.append(f"learners {','.join(old.learners) or '-'} -> {','.join(new.learners) or '-'}")
    return out or ["the cluster state"]


class PlanStore:
    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)

    def _path(self, pid: str) -> Path:
        if not pid.replace("-", "").isalnum() or len(pid) > 40:
            raise Refused(f"{pid!r} is not a plan id", "use the plan_id a dry run printed")
        return self.dir / f"{pid}.json"

    def save(self, plan: Plan) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._gc()
        kind = "membership" if isinstance(plan, MembershipChange) else "plan"
        doc = {"kind": kind, "plan": plan.model_dump(mode="json")}
        tmp = self._path(plan.plan_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self._path(plan.plan_id))

    def get(self, pid: str, operation: str | None = None) -> Plan:
        """The stored plan ``pid``, whatever it is for; refused when unknown or expired."""
        path = self._path(pid)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            raise Refused(
                f"unknown plan id {pid} (never made here, already applied, or expired)",
                "make a new plan with a dry run and apply its plan_id",
                operation=operation,
            ) from None
        model = MembershipChange if doc.get("kind") == "membership" else Plan
        plan = model.model_validate(doc["plan"])
        if _expired(plan):
            self.discard(pid)
            raise Refused(
                f"plan {pid} expired at {plan.expires_at}",
                "make a new plan with a dry run; plans are short-lived on purpose",
                operation=operation,
            )
        return plan

    def load(self, pid: str, cluster: str, operation: str) -> Plan:
        plan = self.get(pid, operation)
        if plan.cluster != cluster or plan.operation != operation:
            raise Refused(
                f"plan {pid} is for {plan.operation} on cluster {plan.cluster!r}, "
                f"not {operation} on {cluster!r}",
                "apply a plan made for this operation and cluster",
                operation=operation,
            )
        return plan

    def discard(self, pid: str) -> None:
        with contextlib.suppress(OSError):
            self._path(pid).unlink()

    def _gc(self) -> None:
        cutoff = time.time() - 24 * 3600
        for p in self.dir.glob("p-*.json"):
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()
