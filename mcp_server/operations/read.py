"""read: a key's value from the cluster, linearizable (served by the leader, or by any member
through ReadIndex on the leader) or stale."""

from __future__ import annotations

from ..core.context import OperationContext
from ..core.models import ReadRequest, ReadResult

OPERATION = "read"


def read(ctx: OperationContext, request: ReadRequest) -> ReadResult:
    out = ctx.adapter.get(request.key, request.consistency)
    return ReadResult(
        cluster=ctx.name,
        key=request.key,
        value=out.value,
        consistency=request.consistency,
        applied_index=out.applied_index,
        served_by=out.node,
    )
