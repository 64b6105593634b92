"""Plans: the dry-run rule, plan ids bound to cluster state, and the plan store.

The dry-run rule, written once (``dry_run_rule``) for every mutation from every face:

- ``dry_run``: make the plan, save it, return it; nothing changes;
- ``plan_id``: apply the saved plan, only if it still matches the cluster;
- neither: a sandbox cluster plans and applies in one call (a safe plan only); a
  production cluster refuses, because it applies only a plan someone reviewed.


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
from typing import Any, Literal

from .errors import Refused
from .models import MembershipChange, Plan, PlanStep
from .view import ClusterView

Decision = Literal["plan", "apply_saved", "apply_now"]


def dry_run_rule(
    *, cluster: str, mode: str, operation: str, dry_run: bool, plan_id: str | None
) -> Decision:
    """What a mutation call means (see the module docstring); refuses what is not allowed."""
    if dry_run:
        return "plan"
    if plan_id:
        return "apply_saved"
    if mode == "production":
        raise Refused(
            f"cluster {cluster!r} is a production cluster: {operation} needs a plan id",
            "run it first as a dry run (--dry-run / dry_run=true), review the plan, then apply "
            "it with --plan-id / plan_id",
            operation=operation,
        )
    return "apply_now"


def make_plan(
    cluster: str,
    operation: str,
    arguments: dict[str, Any],
    view: ClusterView,
    *,
    steps: list[PlanStep],
    reasons: list[str],
    risks: list[str] | None = None,
    ttl_s: int = 900,
) -> Plan:
    """A plan for ``operation`` bound to the state ``view`` saw."""
    created, expires = timestamps(ttl_s)
    leader = view.leader.id if view.leader else None
    return Plan(
        plan_id=plan_id(
            cluster,
            operation,
            arguments,
            term=view.term,
            leader=leader,
            voters=view.voters,
            learners=view.learners,
        ),
        cluster=cluster,
        operation=operation,
        arguments=arguments,
        safe=not reasons,
        steps=steps,
        reasons=reasons,
        risks=risks or [],
        leader=leader,
        term=view.term,
        voters=view.voters,
        learners=view.learners,
        created_at=created,
        expires_at=expires,
    )


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


def check_saved(store: PlanStore, given_plan_id: str, plan: Plan) -> Plan:
    """Refuse to apply ``given_plan_id`` unless ``plan`` (made now) is the same plan;
    return the saved plan.

    The caller uses the saved plan up (``store.discard``) once every other check that
    should keep it for a later call (a human's approval) has passed: a plan applies at
    most once.
    """
    op = plan.operation
    stored = store.load(given_plan_id, plan.cluster, op)
    if _norm(stored.arguments) != _norm(plan.arguments):
        raise Refused(
            f"plan {given_plan_id} was made for {_args_text(stored.arguments)}, "
            f"not {_args_text(plan.arguments)}",
            "apply the plan with the arguments it was made for, or make a new plan",
            operation=op,
        )
    if stored.plan_id != plan.plan_id:
        raise Refused(
            f"plan {given_plan_id} no longer matches the cluster: "
            f"{', '.join(describe_change(stored, plan))} since it was made",
            "make a new plan with a dry run, review it, and apply its plan_id",
            operation=op,
        )
    return stored


def refuse_unsafe(plan: Plan) -> None:
    if not plan.safe:
        raise Refused(
            plan.reasons[0],
            "nothing was changed; fix the cause above (see `raft-manager health`) and retry",
            operation=plan.operation,
            reasons=plan.reasons,
        )


def _norm(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}


def _args_text(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in _norm(args).items()) or "no arguments"
