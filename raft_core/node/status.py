"""The node's status: one typed model, the schema of GET /v1/status both ways.

The node serializes it once (``to_json``) and the manager's raft-node adapter parses
the answer back with ``from_json``, so the node and the manager read one schema (see
docs/design.md, "The node HTTP API") and no layer reshapes string-keyed dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..status import NodeRole, ProgressStatus, RaftStatus
from ..types import NodeId


@dataclass(frozen=True, slots=True)
class MemberAddress:
    peer: str
    api: str | None


@dataclass(frozen=True, slots=True)
class NodeStatus:
    engine: RaftStatus  # the consensus state, from RawNode.status()
    leader_api: str | None
    fsync: str
    members: dict[NodeId, MemberAddress]
    uptime_s: float
    faults: dict[str, Any]
    healthy: bool
    peer_auth: str  # how peers prove who they are: "tls", "secret" or "none"
    # How late the loop ran the node's timer: the latest and the largest since start.
    loop_lag_ms: tuple[float, float] = (0.0, 0.0)
    state_store: str = "custom"  # "lmdb", "memory" or "custom" (a library's machine)

    def to_json(self) -> dict[str, Any]:
        """The JSON document of the node API contract (GET /v1/status): the engine's
        fields at the top level, then the node's own."""
        r = self.engine
        doc: dict[str, Any] = {}
        for f in fields(RaftStatus):
            value = getattr(r, f.name)
            if f.name == "role":
                value = value.value
            elif f.name in _ENGINE_LISTS:
                value = list(value)
            elif f.name == "progress":
                if value is None:  # only a leader has it
                    continue
                value = {n: {k: getattr(p, k) for k in _PROGRESS} for n, p in value.items()}
            doc[f.name] = value
        doc["leader_api"] = self.leader_api
        doc["fsync"] = self.fsync
        doc["members"] = {
            n: {"peer_address": a.peer, "api_address": a.api}
            for n, a in sorted(self.members.items())
        }
        doc["uptime_s"] = self.uptime_s
        doc["faults"] = self.faults
        doc["healthy"] = self.healthy
        doc["peer_auth"] = self.peer_auth
        doc["loop_lag_ms"] = {"last": self.loop_lag_ms[0], "max": self.loop_lag_ms[1]}
        doc["state_store"] = self.state_store
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> NodeStatus:
        """The status a node served; ``StatusFormatError`` naming the first field that
        is missing or of the wrong type (a node of another version, or not a node)."""
        if not isinstance(doc, dict):
            raise StatusFormatError("the status is not a JSON object")
        progress = _opt(doc, "progress", dict)
        engine = RaftStatus(
            **{f: _field(doc, f, _ENGINE_SCALARS[f]) for f in _ENGINE_SCALARS},
            role=_role(doc),
            **{f: tuple(_ids(doc, f)) for f in _ENGINE_LISTS},
            progress=None
            if progress is None
            else {str(n): _progress(n, p) for n, p in progress.items()},
        )
        members = {}
        for n, a in _field(doc, "members", dict).items():
            if not isinstance(a, dict):
                raise StatusFormatError(f"members.{n} is not an object")
            members[str(n)] = MemberAddress(
                _field(a, "peer_address", str, f"members.{n}."),
                _opt(a, "api_address", str, f"members.{n}."),
            )
        return cls(
            engine=engine,
            leader_api=_opt(doc, "leader_api", str),
            fsync=_field(doc, "fsync", str),
            members=members,
            uptime_s=float(_field(doc, "uptime_s", (int, float))),
            faults=_field(doc, "faults", dict),
            healthy=_field(doc, "healthy", bool),
            peer_auth=_field(doc, "peer_auth", str),
            loop_lag_ms=_loop_lag(doc),
            state_store=_opt(doc, "state_store", str) or "custom",
        )


def _loop_lag(doc: dict) -> tuple[float, float]:
    """``loop_lag_ms`` (absent from nodes older than the loop-lag probe: zeros)."""
    lag = _opt(doc, "loop_lag_ms", dict) or {}
    last, top = lag.get("last", 0.0), lag.get("max", 0.0)
    if not all(isinstance(v, int | float) for v in (last, top)):
        raise StatusFormatError("loop_lag_ms.last and loop_lag_ms.max must be numbers")
    return float(last), float(top)


class StatusFormatError(ValueError):
    """A status document that does not follow the schema."""


# The engine's fields as served: name -> the JSON type(s) it must have (None allowed
# where the engine's own field is optional). With the role, the three id lists and the
# progress, these are every field of RaftStatus (and _PROGRESS of ProgressStatus):
# tests/test_node_api.py checks that the two stay in step.
_ENGINE_SCALARS: dict[str, Any] = {
    "id": str,
    "term": int,
    "vote": (str, type(None)),
    "leader": (str, type(None)),
    "commit_index": int,
    "applied_index": int,
    "last_index": int,
    "last_term": int,
    "first_index": int,
    "snapshot_index": int,
    "joint": bool,
    "transferring_to": (str, type(None)),
    "pending_conf_index": int,
}
_ENGINE_LISTS = ("voters", "voters_outgoing", "learners")
_PROGRESS: dict[str, Any] = {
    "match": int,
    "next": int,
    "state": str,
    "learner": bool,
    "recent_active": bool,
    "ticks_since_heard": (int, type(None)),
    "inflight": int,
    "snapshot_bytes_acked": (int, type(None)),
}


def _field(doc: dict, name: str, kind: Any, where: str = "") -> Any:
    if name not in doc:
        raise StatusFormatError(f"{where}{name} is missing")
    value = doc[name]
    # bool is an int in Python; an int field must not accept true/false.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise StatusFormatError(f"{where}{name} has the wrong type ({type(value).__name__})")
    return value


def _opt(doc: dict, name: str, kind: Any, where: str = "") -> Any:
    return None if doc.get(name) is None else _field(doc, name, kind, where)


def _role(doc: dict) -> NodeRole:
    role = _field(doc, "role", str)
    try:
        return NodeRole(role)
    except ValueError:
        raise StatusFormatError(f"role {role!r} is not a role") from None


def _ids(doc: dict, name: str) -> list[str]:
    ids = _field(doc, name, list)
    if not all(isinstance(i, str) for i in ids):
        raise StatusFormatError(f"{name} holds a non-string id")
    return ids


def _progress(node: str, p: Any) -> ProgressStatus:
    if not isinstance(p, dict):
        raise StatusFormatError(f"progress.{node} is not an object")
    return ProgressStatus(
        **{f: _field(p, f, kind, f"progress.{node}.") for f, kind in _PROGRESS.items()}
    )
