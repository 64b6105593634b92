"""Values the Raft state machine exchanges with its driver and its peers.

Everything here is plain data: the engine (``raft.py``) never touches sockets, files
or clocks, so what it consumes and produces must be describable as values that the
simulator can copy, reorder and drop, and that the node server can encode with
``codec.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

NodeId = str

# What an entry costs beyond its payload in every byte budget (message size caps,
# uncommitted bytes), so that empty entries still count.
ENTRY_OVERHEAD = 16


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(slots=True)
class Entry:
    """One log entry. An empty NORMAL entry is the leader's no-op."""

    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        return len(self.data) + ENTRY_OVERHEAD


@dataclass(slots=True)
class HardState:
    """What must be on disk before any message that depends on it leaves the node."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass(slots=True, frozen=True)
class ConfState:
    """A configuration: voters (incoming), outgoing voters while joint, learners.

    ``voters_outgoing`` is non-empty exactly while a joint configuration is in force.
    ``auto_leave`` makes the leader propose the transition out of the joint
    configuration as soon as it has applied it.
    """

    voters: frozenset[NodeId] = frozenset()
    voters_outgoing: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()
    auto_leave: bool = False

    @property
    def joint(self) -> bool:
        return bool(self.voters_outgoing)

    def all_voters(self) -> frozenset[NodeId]:
        return self.voters | self.voters_outgoing

    def members(self) -> frozenset[NodeId]:
        return self.voters | self.voters_outgoing | self.learners

    def to_dict(self) -> dict:
        return {
            "voters": sorted(self.voters),
            "voters_outgoing": sorted(self.voters_outgoing),
            "learners": sorted(self.learners),
            "auto_leave": self.auto_leave,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ConfState:
        return cls(
            voters=frozenset(d.get("voters", ())),
            voters_outgoing=frozenset(d.get("voters_outgoing", ())),
            learners=frozenset(d.get("learners", ())),
            auto_leave=bool(d.get("auto_leave", False)),
        )


@dataclass(slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf: ConfState = field(default_factory=ConfState)


@dataclass(slots=True)
class Snapshot:
    """A state machine image as of ``meta.index``; ``data`` is opaque to the engine.

    Empty ``data`` makes it a checkpoint: a state machine that keeps its own durable
    copy (raft-node's on-disk store) only records that the copy holds everything
    through ``meta.index``, so compacting the log costs no image. A checkpoint cannot
    be sent: a leader that needs to send it asks its host for an image instead (event
    ``snapshot_wanted``). Every image the project writes is non-empty.
    """

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    def supersedes(self, other: Snapshot | None) -> bool:
        """Whether this snapshot replaces ``other`` as a node's latest: it is newer,
        or it is the image of the same index where ``other`` is a checkpoint."""
        if other is None or self.meta.index > other.meta.index:
            return True
        return self.meta.index == other.meta.index and bool(len(self.data)) and not len(other.data)


class MessageType(IntEnum):
    # Local inputs: never sent over the network.
    HUP = 0
    BEAT = 1
    CHECK_QUORUM = 2
    # Peer messages.
    APP = 10
    APP_RESP = 11
    VOTE = 12
    VOTE_RESP = 13
    PRE_VOTE = 14
    PRE_VOTE_RESP = 15
    HEARTBEAT = 16
    HEARTBEAT_RESP = 17
    SNAP = 18
    SNAP_RESP = 19
    TIMEOUT_NOW = 20
    # ReadIndex on behalf of a follower or learner (dissertation 6.4): the follower
    # asks its leader, the leader answers once a quorum confirmed its leadership.
    READ_INDEX = 21
    READ_INDEX_RESP = 22


LOCAL_MESSAGES = frozenset({MessageType.HUP, MessageType.BEAT, MessageType.CHECK_QUORUM})


@dataclass(slots=True)
class SnapshotChunk:
    """One piece of an InstallSnapshot transfer.

    ``offset`` is where ``data`` starts in the whole image and ``total`` its full
    length; the follower assembles chunks in order and acknowledges the next offset it
    wants, so a lost chunk is simply asked for again.
    """

    meta: SnapshotMeta
    offset: int
    total: int
    data: bytes
    done: bool


@dataclass(slots=True)
class Message:
    """A single message type with optional fields, in the style of etcd's raftpb.

    Field use by type:
      APP: index/log_term = previous entry, entries, commit.
      APP_RESP: index = last index now matching (or rejected index), reject,
                reject_hint/log_term = conflict hint for fast backtracking.
      VOTE/PRE_VOTE: index/log_term = candidate's last entry; context = b"transfer"
                when forced by a leadership transfer.
      HEARTBEAT(_RESP): commit, context = read-index confirmation tag.
      SNAP: chunk. SNAP_RESP: index = snapshot index, reject, reject_hint = next
                offset wanted.
      READ_INDEX: context = the follower's read tag (non-empty).
      READ_INDEX_RESP: context = that tag, index = the confirmed read index;
                reject = the recipient cannot serve it (not the leader, or the
                asker is not a member).
    """

    type: MessageType
    to: NodeId
    frm: NodeId
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    chunk: SnapshotChunk | None = None


TRANSFER_CONTEXT = b"transfer"


@dataclass(slots=True, frozen=True)
class ReadState:
    """A confirmed read: serve it once the applied index reaches ``index``."""

    index: int
    context: bytes


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state the driver may want to react to (not persisted)."""

    leader: NodeId | None
    role: Role


class DropCode(Enum):
    """Why the engine refused a request: what a caller decides on (``reason`` is prose
    for operators and may change)."""

    NOT_LEADER = "not_leader"  # ask ``leader`` instead
    REMOVED = "removed"  # this leader was removed and is handing over
    TRANSFERRING = "transferring"  # leadership is moving; retry shortly
    OVERLOADED = "overloaded"  # too many uncommitted bytes; retry later
    CONF_CHANGE_IN_FLIGHT = "conf_change_in_flight"  # one membership change at a time
    INVALID_CONF_CHANGE = "invalid_conf_change"  # the change itself is refused
    NOT_A_VOTER = "not_a_voter"  # a transfer target that cannot lead


class ProposalDropped(Exception):
    """The engine refused a proposal; ``code`` says why, ``reason`` is for operators."""

    def __init__(self, code: DropCode, reason: str, leader: NodeId | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.leader = leader
