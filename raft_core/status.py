"""Typed views of the engine's state for drivers, operators and tests.

``RawNode.status()`` builds one ``RaftStatus``; the node server wraps it in its own
status model and serializes that once, so no layer reshapes string-keyed dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .types import NodeId


class NodeRole(StrEnum):
    """The role an operator sees: the engine's role, with non-voting followers shown
    as learners."""

    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    PRE_CANDIDATE = "pre_candidate"
    LEARNER = "learner"


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    """What a leader knows about one member's replication."""

    match: int
    next: int
    state: str  # probe | replicate | snapshot
    learner: bool
    recent_active: bool
    ticks_since_heard: int | None
    inflight: int
    snapshot_bytes_acked: int | None


@dataclass(frozen=True, slots=True)
class RaftStatus:
    id: NodeId
    role: NodeRole
    term: int
    vote: NodeId | None
    leader: NodeId | None
    commit_index: int
    applied_index: int
    last_index: int
    last_term: int
    first_index: int
    snapshot_index: int
    voters: tuple[NodeId, ...]
    voters_outgoing: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    joint: bool
    transferring_to: NodeId | None
    pending_conf_index: int
    # Only on a leader: every member's replication progress.
    progress: dict[NodeId, ProgressStatus] | None = None
