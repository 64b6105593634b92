"""The node's status: one typed model, serialized once for GET /v1/status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..status import RaftStatus
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

    def __getattr__(self, name: str) -> Any:
        # The engine's fields read as the node's own: status.role, status.term, ...
        if name.startswith("__") or name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)

    def to_json(self) -> dict[str, Any]:
        """The JSON document of the node API contract (GET /v1/status)."""
        r = self.engine
        doc: dict[str, Any] = {
            "id": r.id,
            "role": r.role.value,
            "term": r.term,
            "vote": r.vote,
            "leader": r.leader,
            "commit_index": r.commit_index,
            "applied_index": r.applied_index,
            "last_index": r.last_index,
            "last_term": r.last_term,
            "first_index": r.first_index,
            "snapshot_index": r.snapshot_index,
            "voters": list(r.voters),
            "voters_outgoing": list(r.voters_outgoing),
            "learners": list(r.learners),
            "joint": r.joint,
            "transferring_to": r.transferring_to,
            "pending_conf_index": r.pending_conf_index,
        }
        if r.progress is not None:
            doc["progress"] = {
                n: {
                    "match": p.match,
                    "next": p.next,
                    "state": p.state,
                    "learner": p.learner,
                    "recent_active": p.recent_active,
                }
                for n, p in r.progress.items()
            }
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
