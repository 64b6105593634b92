"""replicate: commit key/value entries through the leader.

Each entry is written under this manager's client session, and an entry whose outcome
is unknown (a lost answer, an election) is retried under the same sequence number, so
the node applies it at most once.
"""

from __future__ import annotations

import time

from ..core.context import OperationContext, ProgressFn
from ..core.errors import ManagerError, NodeRequestError
from ..core.models import KVEntry, Plan, PlanStep, ReplicateRequest, ReplicateResult, WrittenEntry
from ..core.port import WriteResult

OPERATION = "replicate"
MAX_LISTED_STEPS = 20
RETRY_PAUSE_S = 0.2


def plan(ctx: OperationContext, request: ReplicateRequest) -> Plan:
    view = ctx.view()
    reasons = [] if view.has_quorum() else [view.no_quorum_reason()]
    risks = []
    if view.leader is None and not reasons:
        risks.append("no leader right now: the writes wait for an election")
    steps = [
        PlanStep(action=_verb(e), detail=f"{_verb(e)} {e.key}")
        for e in request.entries[:MAX_LISTED_STEPS]
    ]
    if len(request.entries) > MAX_LISTED_STEPS:
        more = len(request.entries) - MAX_LISTED_STEPS
        steps.append(PlanStep(action="put", detail=f"... and {more} more"))
    return ctx.plan(OPERATION, request.arguments(), view, steps=steps, reasons=reasons, risks=risks)


def run(ctx: OperationContext, plan: Plan, progress: ProgressFn) -> ReplicateResult:
    entries = ReplicateRequest.model_validate(plan.arguments).entries
    t0 = time.monotonic()
    written: list[WrittenEntry] = []
    leader = None
    for i, e in enumerate(entries):
        progress(i, len(entries), f"{_verb(e)} {e.key}")
        try:
            w = _write_once(ctx, e)
        except ManagerError as err:
            raise ManagerError(
                f"wrote {len(written)} of {len(entries)} entries; {e.key} failed: {err.reason}",
                err.next_step or "check `raft-manager status` and retry",
            ) from None
        leader = w.node
        written.append(WrittenEntry(key=e.key, index=w.index, term=w.term, deleted=w.deleted))
    return ReplicateResult(
        cluster=ctx.name, leader=leader, entries=written, seconds=round(time.monotonic() - t0, 3)
    )


def _verb(e: KVEntry) -> str:
    return "put" if e.value is not None else "delete"


def _write_once(ctx: OperationContext, e: KVEntry, attempts: int = 2) -> WriteResult:
    """One entry, retried under the same session sequence number when the outcome is
    unknown (a lost answer, an election): the node applies it at most once."""
    seq = ctx.next_seq()
    for attempt in range(attempts):
        try:
            if e.value is None:
                return ctx.adapter.delete(e.key, client_id=ctx.client_id, seq=seq)
            return ctx.adapter.put(e.key, e.value, client_id=ctx.client_id, seq=seq)
        except NodeRequestError as err:
            if not err.indeterminate or attempt + 1 == attempts:
                raise
        time.sleep(RETRY_PAUSE_S)
    raise AssertionError("unreachable")  # pragma: no cover
