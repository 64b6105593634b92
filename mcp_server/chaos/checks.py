"""Judge a chaos history: linearizability and lost acknowledged writes.

Both checks are pure functions of the recorded operations, so a saved history can be
re-judged (and a planted anomaly tested) without a cluster.

* :func:`check_linearizable` runs the in-repo checker (``raft_core.checker``) over the
  whole history; it splits by key itself. Failed ops are left out (they were never
  applied); indeterminate ones go in with an unknown return (maybe applied, any time
  after their call).
* :func:`lost_writes` needs the final linearizable read of every key (taken after
  healing): an acknowledged write ``w`` is lost when that read does not return ``w``'s
  value although no other write of the key could have taken effect after ``w`` (every
  other write returned before ``w`` was called). It is a special case the
  linearizability check also catches, named separately because it is the one an
  operator fears most.
"""

from __future__ import annotations

import re
from collections import defaultdict

from raft_core.checker import check_history

from .models import Anomaly
from .workload import Op

CHECK_DEADLINE_S = 300.0
_WHEN = re.compile(r"\[call=([0-9.]+), ret=([0-9.]+|None)\]")


def check_linearizable(
    ops: list[Op], deadline_s: float = CHECK_DEADLINE_S
) -> tuple[str, list[Anomaly]]:
    """The checker's status ("ok", "violation", "unknown") and the anomalies it implies."""
    history = [c for op in ops if (c := op.to_checker()) is not None]
    res = check_history(history, deadline_seconds=deadline_s)
    if res.status == "ok":
        return "ok", []
    if res.status == "unknown":
        return "unknown", [Anomaly(kind="check-incomplete", message=res.message, key=res.key)]
    return "violation", [
        Anomaly(
            kind="nonlinearizable",
            message=res.message,
            key=res.key,
            time=_stuck_time(res.message),
            op_ids=_stuck_ops(res.message, ops, res.key),
        )
    ]


def _stuck_time(message: str) -> float | None:
    """When the operation that could not be linearized returned (from the message)."""
    tail = message.split("could not be linearized next", 1)[-1]
    m = _WHEN.search(tail)
    if not m:
        return None
    return float(m.group(2)) if m.group(2) != "None" else float(m.group(1))


def _stuck_ops(message: str, ops: list[Op], key: str | None) -> list[int]:
    tail = message.split("could not be linearized next", 1)[-1]
    m = _WHEN.search(tail)
    if not m:
        return []
    call = float(m.group(1))
    return [op.id for op in ops if op.key == key and op.call == call]


def lost_writes(ops: list[Op], final_reads: dict[str, Op]) -> list[Anomaly]:
    """Acknowledged writes missing from the final state (see the module docstring)."""
    writes: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if (op.kind == "put" and op.status != "fail") or (
            op.kind == "cas"
            and (op.status == "info" or (op.status == "ok" and (op.output or {}).get("ok")))
        ):
            writes[op.key].append(op)
    anomalies: list[Anomaly] = []
    for key, ws in sorted(writes.items()):
        final = final_reads.get(key)
        if final is None or final.status != "ok":
            continue
        value = (final.output or {}).get("value")
        for w in ws:
            if w.status != "ok" or w.value == value:
                continue
            later = [
                x
                for x in ws
                if x is not w and (x.ret is None or x.status != "ok" or x.ret > w.call)
            ]
            if not later:
                anomalies.append(
                    Anomaly(
                        kind="lost-write",
                        key=key,
                        time=w.ret,
                        op_ids=[w.id, final.id],
                        message=(
                            f"acknowledged write of {w.value!r} to {key!r} (op {w.id}, "
                            f"acknowledged at {w.ret}s) is missing: the final read returned "
                            f"{value!r} and no other write could have come after it"
                        ),
                    )
                )
    return anomalies
