"""The fault set of a node (``POST /v1/admin/faults``): what a request may say, checked.

A request names only what it changes; keys it leaves out keep their current value.
``clear: true`` resets everything first, so ``{"clear": true, "drop_out": ["n2"]}``
replaces the whole set in one step. The keys:

* ``drop``: peers whose traffic is discarded both ways (a symmetric partition);
* ``drop_out``: peers this node's messages to are discarded (they still reach us);
* ``drop_in``: peers whose messages to this node are discarded on receipt;
* ``delay_ms``: every peer message in and out is held this long (0..60000);
* ``disk_delay_ms``: every WAL sync takes this much longer (0..10000): a slow disk.

Parsing is pure (:func:`parse_fault_request`); which ids are members is the node's
knowledge, checked by :func:`check_peer_ids` against the ids it passes in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from raft_core.codec import MAX_NODE_ID_LEN
from raft_core.types import NodeId

from .errors import BadRequest

PEER_KEYS = ("drop", "drop_out", "drop_in")
KEYS = (*PEER_KEYS, "delay_ms", "disk_delay_ms", "clear")
MAX_DELAY_MS = 60_000
MAX_DISK_DELAY_MS = 10_000


@dataclass(frozen=True)
class FaultRequest:
    """One validated request; ``None`` means "keep the current value"."""

    clear: bool = False
    peers: dict[str, frozenset[NodeId]] = field(default_factory=dict)  # key -> ids
    delay_ms: int | None = None
    disk_delay_ms: int | None = None


def _ids(key: str, value: Any) -> frozenset[NodeId]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and 0 < len(v) <= MAX_NODE_ID_LEN for v in value
    ):
        raise BadRequest(f"{key} must be a list of node ids (non-empty strings)")
    return frozenset(value)


def _ms(key: str, value: Any, limit: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise BadRequest(f"{key} must be an integer in 0..{limit}")
    return value


def parse_fault_request(body: Any) -> FaultRequest:
    """Check a request body's shape; :class:`BadRequest` names what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - set(KEYS))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; known: {', '.join(KEYS)}")
    clear = body.get("clear", False)
    if not isinstance(clear, bool):
        raise BadRequest("clear must be true or false")
    peers = {k: _ids(k, body[k]) for k in PEER_KEYS if body.get(k) is not None}
    return FaultRequest(
        clear=clear,
        peers=peers,
        delay_ms=_ms("delay_ms", body.get("delay_ms"), MAX_DELAY_MS),
        disk_delay_ms=_ms("disk_delay_ms", body.get("disk_delay_ms"), MAX_DISK_DELAY_MS),
    )


def check_peer_ids(req: FaultRequest, me: NodeId, members: Collection[NodeId]) -> None:
    """Every id a request drops must be another member this node knows of."""
    for key, ids in req.peers.items():
        if me in ids:
            raise BadRequest(f"{key}: {me} is this node; name its peers")
        unknown = sorted(ids - set(members))
        if unknown:
            known = ", ".join(sorted(set(members) - {me})) or "none"
            raise BadRequest(f"{key}: unknown node id(s) {', '.join(unknown)}; peers: {known}")


@dataclass(frozen=True)
class FaultSet:
    """A node's whole fault set after a request."""

    drop: frozenset[NodeId]
    drop_out: frozenset[NodeId]
    drop_in: frozenset[NodeId]
    delay_ms: int
    disk_delay_ms: int


def merge(req: FaultRequest, current: Mapping[str, Any]) -> FaultSet:
    """The fault set after ``req``: what it names, else nothing on ``clear``, else the
    ``current`` value (a fault-set document as the API answers it)."""

    def keep(key: str, empty: Any) -> Any:
        return empty if req.clear else current.get(key, empty)

    peers = {k: req.peers.get(k, frozenset(keep(k, ()))) for k in PEER_KEYS}
    delay = req.delay_ms if req.delay_ms is not None else keep("delay_ms", 0)
    disk = req.disk_delay_ms if req.disk_delay_ms is not None else keep("disk_delay_ms", 0)
    return FaultSet(**peers, delay_ms=delay, disk_delay_ms=disk)
