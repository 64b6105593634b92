"""ReadIndex bookkeeping on the leader (dissertation 6.4).

A read is recorded with the commit index at the time it arrived and a context that
the leader puts on its next heartbeat. Once a quorum has answered a heartbeat carrying
that context, the leader knows it was still the leader when the read arrived, so the
read, and every read queued before it, may be served at its recorded index.

A follower (or learner) cannot confirm leadership itself: it forwards the read to the
leader it knows, which runs the same round for it and answers with the index
(``ForwardedReads`` keeps the follower's side). Contexts identify reads across the
cluster, so they must be unique per node and per process incarnation (the driver
prefixes them with both).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import NodeId


@dataclass(slots=True)
class PendingRead:
    index: int
    context: bytes
    origin: NodeId  # who asked: the leader itself, or the follower to answer
    acks: set[NodeId] = field(default_factory=set)


class ReadOnlyQueue:
    __slots__ = ("_by_context", "_queue")

    def __init__(self) -> None:
        self._by_context: dict[bytes, PendingRead] = {}
        self._queue: list[bytes] = []

    def add(self, index: int, context: bytes, self_id: NodeId, origin: NodeId) -> bool:
        """Queue a read; False if the context is already pending (a duplicate)."""
        if context in self._by_context:
            return False
        self._by_context[context] = PendingRead(index, context, origin, {self_id})
        self._queue.append(context)
        return True

    def ack(self, frm: NodeId, context: bytes) -> set[NodeId] | None:
        read = self._by_context.get(context)
        if read is None:
            return None
        read.acks.add(frm)
        return read.acks

    def release_through(self, context: bytes) -> list[PendingRead]:
        """Remove and return all reads queued up to and including ``context``."""
        if context not in self._by_context:
            return []
        n = self._queue.index(context) + 1
        released = [self._by_context.pop(c) for c in self._queue[:n]]
        del self._queue[:n]
        return released

    def last_context(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def drain(self) -> list[PendingRead]:
        """Forget every pending read (the leader stepped down) and return them."""
        reads = [self._by_context[c] for c in self._queue]
        self._queue.clear()
        self._by_context.clear()
        return reads

    def __len__(self) -> int:
        return len(self._queue)


@dataclass(slots=True)
class ForwardedRead:
    leader: NodeId  # the only node whose answer counts
    term: int  # the term it leads in; an answer from another term is ignored
    deadline: int  # the engine tick after which the read is given up


class ForwardedReads:
    """A follower's reads waiting for the leader's READ_INDEX_RESP.

    A read is bound to the leader and term it was sent to: only that leader's answer
    in that term may serve it (any other could be stale). It ends in exactly one of
    three ways: answered, dropped (the term changed, or the leader refused), or
    expired (no answer by its deadline, e.g. the leader died or is partitioned away);
    so no read waits forever.
    """

    __slots__ = ("_reads",)

    def __init__(self) -> None:
        self._reads: dict[bytes, ForwardedRead] = {}

    def add(self, context: bytes, leader: NodeId, term: int, deadline: int) -> None:
        self._reads[context] = ForwardedRead(leader, term, deadline)

    def take(self, context: bytes, frm: NodeId, term: int) -> bool:
        """Remove the read ``context`` if ``frm`` in ``term`` may answer it."""
        read = self._reads.get(context)
        if read is None or read.leader != frm or read.term != term:
            return False
        del self._reads[context]
        return True

    def expire(self, now: int) -> list[bytes]:
        """Remove and return the reads whose deadline has passed (the oldest first:
        deadlines grow in the order reads are added, so the scan stops early)."""
        late = []
        for c, r in self._reads.items():
            if r.deadline >= now:
                break
            late.append(c)
        for c in late:
            del self._reads[c]
        return late

    def drain(self) -> list[bytes]:
        contexts = list(self._reads)
        self._reads.clear()
        return contexts

    def __len__(self) -> int:
        return len(self._reads)
