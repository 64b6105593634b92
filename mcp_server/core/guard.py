"""The one guard-and-audit path every operation from every face goes through.

``Guard.run`` checks policy (``policy.check``), applies the dry-run rule to mutations
(``plans.dry_run_rule``), runs the body, and appends one audit line for every
mutation, plan, refusal and failure. The manager's operations, the CLI's local
launcher (``cluster up|down|kill|start``) and ``raft-manager bench --existing`` all call
it, so a rule added here holds for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from . import policy
from .audit import AuditLog
from .config import ClusterConfig
from .errors import ManagerError, Refused
from .models import Outcome
from .plans import Decision, dry_run_rule

T = TypeVar("T")


class Guard:
    def __init__(self, cluster: ClusterConfig, audit: AuditLog) -> None:
        self.cluster = cluster
        self.audit = audit

    def run(
        self,
        operation: str,
        arguments: dict[str, Any],
        body: Callable[[Decision], T],
        *,
        plan_id: str | None = None,
        dry_run: bool = False,
    ) -> T:
        """Run ``body(decision)`` under policy and the dry-run rule, and audit it.

        ``decision`` is what the call means for a mutation (plan, apply a saved plan,
        apply now); reads get "apply_now".
        """
        mutation = policy.is_mutation(operation)
        try:
            policy.check(
                cluster=self.cluster.name,
                mode=self.cluster.mode,
                read_only=self.cluster.read_only,
                allowed_operations=self.cluster.allowed_operations,
                operation=operation,
                dry_run=dry_run,
            )
            decision: Decision = "apply_now"
            if mutation:
                decision = dry_run_rule(
                    cluster=self.cluster.name,
                    mode=self.cluster.mode,
                    operation=operation,
                    dry_run=dry_run,
                    plan_id=plan_id,
                )
            result = body(decision)
        except Refused as e:
            e.operation = e.operation or operation
            reason = "; ".join(dict.fromkeys([e.reason, *e.reasons]))
            self._record(operation, arguments, "refused", plan_id=plan_id, reason=reason)
            raise
        except ManagerError as e:
            e.operation = e.operation or operation
            if mutation:
                self._record(operation, arguments, "failed", plan_id=plan_id, reason=e.reason)
            raise
        except Exception as e:
            if mutation:
                reason = f"{type(e).__name__}: {e}"
                self._record(operation, arguments, "failed", plan_id=plan_id, reason=reason)
            raise
        if mutation:
            planned = isinstance(result, Outcome) and not result.applied
            if isinstance(result, Outcome):
                plan_id = plan_id or result.plan.plan_id
            self._record(
                operation,
                arguments,
                "planned" if planned else "ok",
                plan_id=plan_id,
                result=summary(result),
            )
        return result

    def _record(self, operation: str, arguments: dict[str, Any], outcome: str, **kw: Any) -> None:
        self.audit.record(
            cluster=self.cluster.name,
            mode=self.cluster.mode,
            operation=operation,
            arguments=arguments,
            outcome=outcome,
            **kw,
        )


def summary(result: Any) -> Any:
    """A short audit summary of a result model (bulky lists left out)."""
    if isinstance(result, Outcome):
        result = result.answer()
    if hasattr(result, "model_dump"):
        doc = result.model_dump(mode="json", exclude_none=True)
        for big in ("members", "checks", "steps", "nodes"):
            doc.pop(big, None)
        return doc
    return result
