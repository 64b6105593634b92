"""What the leader knows about each follower's log, and the flow control around it.

A follower is in one of three states (dissertation 10.2.2, etcd's tracker):

* PROBE: the leader does not know where the follower's log matches its own. It sends
  one AppendEntries per heartbeat interval and waits for the answer.
* REPLICATE: the match point is known; AppendEntries are pipelined optimistically,
  bounded by an inflight window (messages and bytes).
* SNAPSHOT: the follower needs entries the leader has compacted away; the leader
  streams a snapshot in chunks and sends no appends until it is installed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from .types import Snapshot


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """A window of AppendEntries in flight, each remembered by its last index."""

    __slots__ = ("_bytes", "_queue", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._queue: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, last_index: int, size: int) -> None:
        self._queue.append((last_index, size))
        self._bytes += size

    def free_le(self, index: int) -> None:
        """Forget every message whose last index is <= ``index`` (acknowledged)."""
        q = self._queue
        while q and q[0][0] <= index:
            self._bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        if self._queue:
            self._bytes -= self._queue.popleft()[1]

    def reset(self) -> None:
        self._queue.clear()
        self._bytes = 0

    def full(self) -> bool:
        return len(self._queue) >= self.max_count or (
            self.max_bytes > 0 and self._bytes >= self.max_bytes
        )

    def __len__(self) -> int:
        return len(self._queue)


@dataclass(slots=True)
class SnapshotTransfer:
    """An InstallSnapshot stream to one follower."""

    snapshot: Snapshot
    acked: int = 0  # bytes the follower confirmed it holds
    sent: int = 0  # bytes sent so far (may run ahead of acked by a window)
    stalled_rounds: int = 0  # heartbeat rounds without progress


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    recent_active: bool = False
    is_learner: bool = False
    last_heard_tick: int = -1
    # The highest commit index a message has told this follower about (see
    # RaftConfig.broadcast_commit).
    sent_commit: int = 0
    inflights: Inflights = field(default_factory=lambda: Inflights(256, 0))
    transfer: SnapshotTransfer | None = None

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.transfer = None
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        # Leaving SNAPSHOT, resume right after the snapshot that was (probably) installed.
        if self.state is ProgressState.SNAPSHOT and self.transfer is not None:
            pending = self.transfer.snapshot.meta.index
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.transfer = SnapshotTransfer(snapshot)

    def maybe_update(self, index: int) -> bool:
        """Record an acknowledgement up to ``index``; False if it was stale.

        ``match`` never moves backwards, so a reordered older success is harmless.
        """
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, next_hint: int) -> bool:
        """Handle a rejected append for ``rejected``; False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, next_hint), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_entries(self, last_index: int, size: int, has_entries: bool = True) -> None:
        """Account for an AppendEntries carrying entries up to ``last_index``.

        Only a message with entries takes an inflight slot: an empty one (it carries
        the commit index) is acknowledged at ``match``, which frees nothing, so its
        slot would stay taken until some later acknowledgement.
        """
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            if has_entries:
                self.inflights.add(last_index, size)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True
