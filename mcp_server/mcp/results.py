"""Tool results and tool definitions sized for a model (docs/design.md, section 6).

A result's text content opens with one summary line a model can act on without parsing
("leader n3, term 2; 3/3 voters up; commit 2; no warnings"), then the document as
compact JSON; ``structuredContent`` is the same document. Fields that do not apply to
the cluster (etcd's member fields on a raft_core cluster, a local process on a remote
one) are left out rather than sent as null: every such field is optional in the model,
so the answer still validates against the output schema.

Tool definitions are compacted the same way (``tools/list`` went from 37,303 to under
20,000 characters): pydantic's per-property ``title``, a null ``default``, and an
output schema's defaults, field descriptions and ``additionalProperties`` say nothing
a model needs to call the tool; ``anyOf [T, null]`` is the shorter ``type: [T,
"null"]``; an optional output field is typed without null, as it is sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mcp.types import CallToolResult, TextContent, Tool
from pydantic import BaseModel

from ..chaos.models import ChaosVerdict
from ..core import (
    ClusterList,
    ClusterStatus,
    ElectionAnswer,
    FaultResult,
    HealthReport,
    MembershipChange,
    ReadResult,
    RecoverResult,
    ReplicateResult,
    SnapshotResult,
    VerifyReport,
)
from ..core.view import group_line

SUMMARY_VALUE_CHARS = 60


def document(model: BaseModel) -> dict[str, Any]:
    """``model`` as JSON, without the optional fields that are null (they do not apply)."""
    return model.model_dump(mode="json", exclude=_inapplicable(model) or None)


def _inapplicable(model: BaseModel) -> dict[str, Any]:
    """pydantic's ``exclude`` spec for the null optional fields, nested models included."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and not field.is_required():
            out[name] = True
        elif isinstance(value, BaseModel):
            if sub := _inapplicable(value):
                out[name] = sub
        elif isinstance(value, list):
            subs = {
                i: sub
                for i, item in enumerate(value)
                if isinstance(item, BaseModel) and (sub := _inapplicable(item))
            }
            if subs:
                out[name] = subs
    return out


def result(model: BaseModel) -> CallToolResult:
    """The tool's answer: the summary line and compact JSON, and the structured document."""
    doc = document(model)
    text = f"{summary(model)}\n{json.dumps(doc, separators=(',', ':'))}"
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=doc)


# -- summary lines -----------------------------------------------------------------------------


def _ids(ids: list[str]) -> str:
    return ",".join(ids) or "none"


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return "no warnings"
    more = f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""
    return f"warning: {warnings[0]}{more}"


def _reasons(reasons: list[str]) -> str:
    return reasons[0] + (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "")


def _status(s: ClusterStatus) -> str:
    up = sum(1 for m in s.members if m.voter and m.reachable)
    lead = f"leader {s.leader}, term {s.term}" if s.leader else f"NO LEADER (term {s.term})"
    parts = [lead, f"{up}/{len(s.voters)} voters up"]
    if s.learners:
        parts.append(f"learners {_ids(s.learners)}")
    if s.commit_index is not None:
        parts.append(f"commit {s.commit_index}")
    if s.change_in_flight:
        parts.append("a configuration change is in flight")
    parts.append(_warnings(s.warnings))
    if s.groups_total > 1:  # several Raft groups (NATS): a line's worth each, one page
        more = f", next page at group_offset {s.next_group_offset}" if s.next_group_offset else ""
        lines = " | ".join(group_line(g) for g in s.groups)
        parts.append(f"{len(s.groups)} of {s.groups_total} raft groups{more}: {lines}")
    return "; ".join(parts)


def _clusters(c: ClusterList) -> str:
    default = next((x.name for x in c.clusters if x.default), None)
    names = ", ".join(f"{x.name} ({x.kind}, {x.mode})" for x in c.clusters)
    return (
        f"config {c.config or 'none (the embedded local cluster)'}; "
        f"default cluster {default or 'none (name one)'}; state dir {c.state_dir}; "
        f"{len(c.clusters)} cluster(s): {names}"
    )


def _health(h: HealthReport) -> str:
    what = f"{h.operation} is " if h.operation else ""
    head = f"{'healthy' if h.healthy else 'NOT healthy'}; {what}{'safe' if h.safe else 'NOT safe'}"
    tail = f": {_reasons(h.reasons)}" if h.reasons else ""
    return f"{head}{tail}; leader {h.leader}, term {h.term}"


def _plan_line(op: str, plan_id: str, safe: bool, reasons: list[str], approval: bool) -> str:
    verdict = "safe" if safe else f"NOT safe: {_reasons(reasons)}"
    then = "a human must `raft-manager approve` it, then " if approval else ""
    return f"planned {op}, {verdict}; {then}apply with plan_id {plan_id}"


def _election(e: ElectionAnswer) -> str:
    if e.outcome == "planned":
        op = f"leadership move to {e.target}" if e.target else "an election"
        return _plan_line(op, e.plan_id, e.safe, e.reasons, bool(e.requires_approval))
    return (
        f"leader {e.leader}, term {e.term} (was {e.previous_leader}, term {e.previous_term}; "
        f"{e.method}, {e.seconds:.2f}s)"
    )


def _membership(m: MembershipChange) -> str:
    after = f"voters {_ids(m.voters_after)}, learners {_ids(m.learners_after)}"
    if not m.applied:
        line = _plan_line(
            f"{m.action} {m.node_id}", m.plan_id, m.safe, m.reasons, m.requires_approval
        )
        return f"{line}; after: {after}"
    failed = [r.action for r in m.results if not r.ok]
    done = f"failed at {failed[0]}" if failed else "done"
    return f"applied {m.action} {m.node_id}: {done}; now {after}"


def _verify(v: VerifyReport) -> str:
    members = f"{len(v.checked)} member(s)"
    if v.consistent is True:
        return f"consistent at index {v.common_index} across {members}"
    if v.consistent is False:
        return f"INCONSISTENT: {len(v.divergences)} divergence(s) across {members}"
    return f"could not verify: {_reasons(v.reasons) if v.reasons else 'no reason given'}"


def _read(r: ReadResult) -> str:
    if r.value is None:
        value = "absent"
    else:
        cut = r.value[:SUMMARY_VALUE_CHARS]
        value = json.dumps(cut) + ("..." if len(r.value) > len(cut) else "")
    return f"{r.key} = {value} ({r.consistency}, served by {r.served_by})"


def _replicate(r: ReplicateResult) -> str:
    last = r.entries[-1] if r.entries else None
    at = f", last index {last.index} term {last.term}" if last else ""
    return (
        f"{len(r.entries)} entr{'y' if len(r.entries) == 1 else 'ies'} committed by {r.leader}{at}"
    )


def _snapshot(s: SnapshotResult) -> str:
    return "; ".join(
        f"{n.node} at {n.snapshot_index}" if n.ok else f"{n.node} FAILED: {n.error}"
        for n in s.snapshots
    )


def _recover(r: RecoverResult) -> str:
    state = "caught up" if r.caught_up else "NOT caught up"
    return f"{r.node_id} {r.action}, {state} (applied {r.applied_index} of {r.target_index})"


def _fault(f: FaultResult) -> str:
    return f"{f.kind} {_ids(f.nodes)}: affected {_ids(f.affected)}"


def _chaos(v: ChaosVerdict) -> str:
    head = "ok" if v.ok else f"NOT ok: {len(v.anomalies)} anomaly(ies)"
    return (
        f"{head}; linearizable {str(v.linearizable).lower()}; {v.counts.operations} ops, "
        f"{sum(v.faults.values())} faults; seed {v.seed}"
    )


SUMMARIES: dict[type[BaseModel], Callable[[Any], str]] = {
    ClusterList: _clusters,
    ClusterStatus: _status,
    HealthReport: _health,
    VerifyReport: _verify,
    ReadResult: _read,
    ReplicateResult: _replicate,
    ElectionAnswer: _election,
    MembershipChange: _membership,
    SnapshotResult: _snapshot,
    RecoverResult: _recover,
    FaultResult: _fault,
    ChaosVerdict: _chaos,
}


def summary(model: BaseModel) -> str:
    """One line that says what happened, the first line of every tool's text (a model
    without a summary of its own, or of a base class, is named by its type)."""
    line = next((SUMMARIES[c] for c in type(model).__mro__ if c in SUMMARIES), None)
    return line(model) if line else type(model).__name__


# -- tool definitions ----------------------------------------------------------------------


_SCHEMA_MAPS = ("properties", "$defs", "patternProperties")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def compact_schema(schema: dict[str, Any], *, output: bool) -> dict[str, Any]:
    """``schema`` without titles or null defaults, string enums without their type;
    nullable scalars as type lists. An
    output schema also loses defaults, descriptions (the tool's description names the
    fields that matter) and boolean ``additionalProperties``, and its optional fields
    are not nullable: ``document`` leaves them out rather than null. Walks schema
    positions only, so a property named ``title`` stays."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or (output and key in ("default", "description")):
            continue
        if key == "default" and value is None:  # an absent argument is null anyway
            continue
        if output and key == "additionalProperties" and isinstance(value, bool):
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {k: compact_schema(v, output=output) for k, v in value.items()}
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            out[key] = compact_schema(value, output=output)
        elif key in _SCHEMA_LISTS:
            out[key] = [compact_schema(v, output=output) for v in value]
        else:
            out[key] = value
    if out.get("type") == "string" and all(isinstance(v, str) for v in out.get("enum", [1])):
        del out["type"]  # an enum of strings says it
    if output and "properties" in out:
        required = set(out.get("required", ()))
        for name, prop in out["properties"].items():
            if name not in required:
                out["properties"][name] = _not_null(prop)
    return _nullable(out)


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its null alternative."""
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind:
        rest = [k for k in kind if k != "null"]
        return {**schema, "type": rest[0] if len(rest) == 1 else rest}
    branches = schema.get("anyOf")
    if branches and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        if len(rest) == 1:
            return {**{k: v for k, v in schema.items() if k != "anyOf"}, **rest[0]}
        return {**schema, "anyOf": rest}
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [{type: T, ...}, {type: null}]`` as ``type: [T, "null"]``, when the
    other branch is a plain typed schema (a ``$ref`` or an enum keeps its anyOf)."""
    branches = schema.get("anyOf")
    if not branches or len(branches) != 2 or {"type": "null"} not in branches:
        return schema
    other = next(b for b in branches if b != {"type": "null"})
    if not isinstance(other.get("type"), str) or "enum" in other or "const" in other:
        return schema
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    merged.update({**other, "type": [other["type"], "null"]})
    return merged


def compact_tool(tool: Tool) -> Tool:
    """The definition ``tools/list`` sends: compacted input and output schemas."""
    update: dict[str, Any] = {"input_schema": compact_schema(tool.input_schema, output=False)}
    if tool.output_schema is not None:
        update["output_schema"] = compact_schema(tool.output_schema, output=True)
    return tool.model_copy(update=update)
