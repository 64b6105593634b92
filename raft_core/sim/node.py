"""One simulated Raft node: the real RawNode and Replica, a fake disk, no clock.

The node drives its RawNode exactly as the node server does (persist, then send,
then apply, then advance), except that "persist" copies into an in-memory disk after
a seeded latency. A crash throws away everything that was not persisted: the
engine, the state machine, and any Ready still waiting for the disk.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..confchange import ConfChange
from ..kv import KVStore
from ..raft import RaftConfig
from ..rawnode import PersistedState, RawNode, Ready, sendable_before_persist
from ..statemachine import ApplyResult, Replica
from ..types import ConfState, Entry, HardState, NodeId, Snapshot, SnapshotMeta


@dataclass
class Disk:
    """What survives a crash."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            # An installed snapshot replaces the log (RaftLog.restore).
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            base = self.snapshot.meta.index if self.snapshot else 0
            keep = first - base - 1
            if keep < 0:
                raise AssertionError(f"persisting entry {first} below snapshot {base}")
            del self.entries[keep:]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """A locally taken snapshot: the log before it is no longer needed on disk."""
        base = self.snapshot.meta.index if self.snapshot else 0
        if snapshot.meta.index <= base:
            return
        self.entries = self.entries[snapshot.meta.index - base :]
        self.snapshot = snapshot

    def recovered(self) -> PersistedState:
        return PersistedState(
            HardState(self.hard_state.term, self.hard_state.vote, self.hard_state.commit),
            self.snapshot,
            list(self.entries),
        )


class SimNode:
    def __init__(
        self,
        node_id: NodeId,
        config: RaftConfig,
        disk: Disk,
        rng: random.Random,
        *,
        schedule: Callable[[float, Callable[[], None]], None],
        send: Callable[[Any], None],
        on_apply: Callable[[SimNode, Entry, ApplyResult], None],
        on_ready_persisted: Callable[[SimNode, Ready, int | None], None],
        on_sent_early: Callable[[SimNode, Ready], None],
        on_read: Callable[[SimNode, bytes, int], None],
        on_read_dropped: Callable[[SimNode, bytes], None],
        disk_latency_ms: tuple[float, float] = (0.0, 0.0),
        snapshot_every: int = 0,
        keep_entries: int = 10,
    ) -> None:
        self.id = node_id
        self.config = config
        self.disk = disk
        self.rng = rng
        self.schedule = schedule
        self.send = send
        self.on_apply = on_apply
        self.on_ready_persisted = on_ready_persisted
        self.on_sent_early = on_sent_early
        self.on_read = on_read
        self.on_read_dropped = on_read_dropped
        self.disk_latency_ms = disk_latency_ms
        self.snapshot_every = snapshot_every
        self.keep_entries = keep_entries
        self.up = False
        self.incarnation = 0
        self.raw: RawNode
        self.replica: Replica
        self.kv: KVStore
        self._waiting_disk = False
        self._pending_reads: list[tuple[int, bytes]] = []
        self.snapshots_taken = 0
        self.start()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        state = self.disk.recovered()
        self.raw = RawNode(self.config, state, random.Random(self.rng.getrandbits(64)))
        self.kv = KVStore()
        self.replica = Replica(self.kv)
        if state.snapshot is not None:
            self.replica.restore(state.snapshot.data)
        self.up = True
        self.incarnation += 1
        self._waiting_disk = False
        self._pending_reads = []

    def crash(self) -> None:
        self.up = False
        self.incarnation += 1  # invalidates scheduled disk completions

    # -- inputs --------------------------------------------------------------

    def tick(self) -> None:
        if self.up:
            self.raw.tick()
            self.process()

    def receive(self, msg: Any) -> None:
        if self.up:
            self.raw.step(msg)
            self.process()

    # -- the Ready loop ------------------------------------------------------

    def process(self) -> None:
        if not self.up or self._waiting_disk or not self.raw.has_ready():
            return
        rd = self.raw.ready()
        # The term of the entry before the batch, as of now (for log-matching checks).
        prev_term = self.raw.raft.log.term(rd.entries[0].index - 1) if rd.entries else None
        # What a leader sends may leave before its own write completes [10.2.1].
        after_persist = []
        for m in rd.messages:
            if sendable_before_persist(m):
                self.send(m)
            else:
                after_persist.append(m)
        sent_early = len(after_persist) < len(rd.messages)
        rd.messages = after_persist
        if sent_early:
            self.on_sent_early(self, rd)
        if rd.must_sync and self.disk_latency_ms[1] > 0:
            self._waiting_disk = True
            incarnation = self.incarnation
            delay = self.rng.uniform(*self.disk_latency_ms)
            self.schedule(delay, lambda: self._persisted(rd, prev_term, incarnation))
        else:
            self._persisted(rd, prev_term, self.incarnation)

    def _persisted(self, rd: Ready, prev_term: int | None, incarnation: int) -> None:
        if incarnation != self.incarnation or not self.up:
            return  # crashed while the write was in flight: it never happened
        self._waiting_disk = False
        if rd.needs_write():  # as the node server does: a new commit index alone waits
            self.disk.persist(rd)
            self.on_ready_persisted(self, rd, prev_term)
        for m in rd.messages:
            self.send(m)
        if rd.snapshot is not None:
            self.replica.restore(rd.snapshot.data)
        for e in rd.committed_entries:
            result = self.replica.apply(e)
            self.on_apply(self, e, result)
        for rs in rd.read_states:
            self._pending_reads.append((rs.index, rs.context))
        for ctx in rd.dropped_reads:
            self.on_read_dropped(self, ctx)
        self.raw.advance(rd)
        self._serve_reads()
        self._maybe_snapshot()
        self.process()

    def _serve_reads(self) -> None:
        if not self._pending_reads:
            return
        applied = self.replica.applied_index
        still = []
        for index, ctx in self._pending_reads:
            if index <= applied:
                self.on_read(self, ctx, index)
            else:
                still.append((index, ctx))
        self._pending_reads = still

    def _maybe_snapshot(self) -> None:
        if not self.snapshot_every:
            return
        base = self.disk.snapshot.meta.index if self.disk.snapshot else 0
        if self.replica.applied_index - base >= self.snapshot_every:
            self.take_snapshot()

    def take_snapshot(self) -> Snapshot | None:
        r = self.raw.raft
        index = self.replica.applied_index
        if index == 0 or (self.disk.snapshot and self.disk.snapshot.meta.index >= index):
            return None
        meta = SnapshotMeta(index, self.replica.applied_term, r.conf)
        snap = Snapshot(meta, self.replica.snapshot())
        self.disk.save_snapshot(snap)
        self.raw.compact(snap, self.keep_entries)
        self.snapshots_taken += 1
        return snap

    # -- conveniences for tests ---------------------------------------------

    @property
    def role(self) -> str:
        return self.raw.status()["role"]

    @property
    def term(self) -> int:
        return self.raw.raft.term

    @property
    def conf(self) -> ConfState:
        return self.raw.raft.conf

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        out = self.raw.propose_conf_change(cc)
        self.process()
        return out
