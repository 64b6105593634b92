"""One simulated Raft node: the real RawNode and Replica, a fake disk, no clock.

The node runs the same ``Driver`` as the node server (``raft_core/driver.py``); only
what it plugs in differs: "persist" copies into an in-memory disk after a seeded
latency, "send" hands messages to the simulated network. A crash throws away
everything that was not persisted: the engine, the state machine, the driver with the
requests it was holding, and any Ready still waiting for the disk.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ..confchange import ConfChange
from ..driver import Driver, DriverHooks, Failure
from ..kv import KVStore
from ..raft import RaftConfig
from ..rawnode import RawNode, Ready
from ..statemachine import ApplyResult, Replica
from ..types import ConfState, Entry, Message, NodeId, Snapshot, SnapshotMeta
from .disk import Disk
from .invariants import InvariantViolation
from .store import SimStore, StoredReplica

Outcome = Callable[[tuple[Any, Any] | Failure], None]


class SimHooks(DriverHooks[Any]):
    """What the cluster does around a node's Ready loop (see ``SimCluster``).

    Clients' requests carry a ``ClientRequest`` token, answered through the node's
    callbacks. A configuration change or leadership transfer (given to ``driver``
    directly by a scenario or the campaign) carries a callable instead, called with
    its outcome: ``(index, conf)`` or ``(leader, term)``, or the ``Failure``.
    """

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def sent_early(self, rd: Ready) -> None:
        self.node.on_sent_early(self.node, rd)

    def persisted(self, rd: Ready) -> None:
        node = self.node
        node.on_ready_persisted(node, rd, node._prev_term)

    def applied(self, entry: Entry, result: ApplyResult) -> None:
        self.node.on_apply(self.node, entry, result)

    def advanced(self, rd: Ready, confs: list[ConfState]) -> None:
        if rd.committed_entries:
            self.node.replica.commit()
        self.node._maybe_snapshot()

    def storage_failed(self, error: BaseException) -> None:
        raise error  # the simulated disk fails only on purpose, never silently

    def write_done(self, token: Any, index: int, term: int, result: ApplyResult) -> None:
        self.node.on_write_done(self.node, token, result)

    def write_failed(self, token: Any, failure: Failure) -> None:
        self.node.on_request_failed(self.node, token, failure)

    def read_ready(self, token: Any, applied_index: int) -> None:
        self.node.on_read(self.node, token, applied_index)

    def read_failed(self, token: Any, failure: Failure) -> None:
        self.node.on_request_failed(self.node, token, failure)

    def conf_change_done(self, token: Outcome, index: int, conf: ConfState) -> None:
        token((index, conf))

    def conf_change_failed(self, token: Outcome, failure: Failure) -> None:
        token(failure)

    def transfer_done(self, token: Outcome, leader: NodeId, term: int) -> None:
        token((leader, term))

    def transfer_failed(self, token: Outcome, failure: Failure) -> None:
        token(failure)


class SimNode:
    """One process: a fresh RawNode, Replica and Driver per incarnation."""

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
        on_write_done: Callable[[SimNode, Any, ApplyResult], None],
        on_read: Callable[[SimNode, Any, int], None],
        on_request_failed: Callable[[SimNode, Any, Failure], None],
        disk_latency_ms: tuple[float, float] = (0.0, 0.0),
        snapshot_every: int = 0,
        store: SimStore | None = None,
        keep_entries: int = 10,
    ) -> None:
        self.id = node_id
        self.config = config
        self.disk = disk
        self.rng = rng
        self.schedule = schedule
        self._net_send = send
        self.on_apply = on_apply
        self.on_ready_persisted = on_ready_persisted
        self.on_write_done = on_write_done
        self.on_sent_early = on_sent_early
        self.on_read = on_read
        self.on_request_failed = on_request_failed
        self.disk_latency_ms = disk_latency_ms
        self.snapshot_every = snapshot_every
        self.store = store  # the state on disk (raft-node's store), or in memory
        self.keep_entries = keep_entries
        self.up = False
        # A slow disk (another process flushing gigabytes): the next write takes at
        # least this long. Nothing waits for a write but the Ready loop.
        self.disk_stall_ms = 0.0
        # A paused process (SIGSTOP): no clock, and what arrives waits in ``inbox``
        # until it resumes. Unlike a crash it keeps all its state, an old term included.
        self.paused = False
        self.inbox: list[Any] = []
        self.incarnation = 0
        self.raw: RawNode
        self.replica: Replica
        self.kv: KVStore
        self.driver: Driver[Any]
        self._prev_term: int | None = None
        self.writing: Ready | None = None  # a write on its way to the disk
        self.snapshots_taken = 0
        self.start()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        state = self.disk.recovered()
        self.raw = RawNode(self.config, state, random.Random(self.rng.getrandbits(64)))
        self.replica = Replica(KVStore()) if self.store is None else self.store.open()
        self.kv = self.replica.sm  # type: ignore[assignment]
        snap = state.snapshot
        if snap is not None and self.replica.applied_index < snap.meta.index:
            if not snap.data:
                raise InvariantViolation(
                    f"{self.id}: the store holds {self.replica.applied_index}, behind its "
                    f"checkpoint at {snap.meta.index} (the log before it is gone)"
                )
            self.replica.restore(snap.data)
        self.up = True
        self.incarnation += 1
        self.writing = None
        self.driver = Driver(
            self.raw,
            storage=self,
            transport=self,
            state=self.replica,
            call_soon=None,  # virtual time stands still between events: "soon" is now
            hooks=SimHooks(self),
            incarnation=str(self.incarnation),
        )

    def crash(self) -> None:
        self.up = False
        self.paused = False
        self.inbox = []
        self.incarnation += 1  # invalidates scheduled disk completions
        self.driver.stop()
        if self.store is not None:
            self.store.crash()
        if self.writing is not None:
            self.disk.crash_during(self.writing, self.rng)
            self.writing = None

    # -- what the driver plugs into ------------------------------------------

    def write(self, rd: Ready, done: Callable[[BaseException | None], None]) -> None:
        """The simulated disk: durable after a seeded latency, lost in a crash."""
        # The term of the entry before the batch, as of now (for log-matching checks).
        first = rd.entries[0].index if rd.entries else None
        prev_term = self.raw.log_term(first - 1) if first is not None else None
        incarnation = self.incarnation

        def complete() -> None:
            if incarnation != self.incarnation or not self.up:
                return  # crashed while the write was in flight: it never happened
            self.writing = None
            self.disk.persist(rd)
            self._prev_term = prev_term
            done(None)

        delay = 0.0
        if rd.must_sync and self.disk_latency_ms[1] > 0:
            delay = self.rng.uniform(*self.disk_latency_ms)
        stall, self.disk_stall_ms = self.disk_stall_ms, 0.0
        if delay or stall:
            self.writing = rd
            self.schedule(max(delay, stall), complete)
        else:
            complete()

    def send(self, messages: list[Message]) -> None:
        for m in messages:
            self._net_send(m)

    # -- inputs --------------------------------------------------------------

    def tick(self) -> None:
        if self.up and not self.paused:
            self.raw.tick()
            self.driver.kick()

    def receive(self, msg: Any) -> None:
        if self.up:
            self.raw.step(msg)
            self.driver.kick()

    def process(self) -> None:
        """Run the Ready loop after an input given to ``raw`` directly."""
        if self.up:
            self.driver.kick()

    def _maybe_snapshot(self) -> None:
        if not self.snapshot_every:
            return
        base = self.disk.snapshot.meta.index if self.disk.snapshot else 0
        if self.replica.applied_index - base >= self.snapshot_every:
            self.take_snapshot()

    def take_snapshot(self, image: bool | None = None) -> Snapshot | None:
        """Snapshot at the applied index and compact the log. With a store (as
        raft-node's) the snapshot is a checkpoint unless ``image``: the store is
        synced, and an image is made only when the leader needs one to send."""
        index = self.replica.applied_index
        if index == 0 or self.raw.applied_index < index:  # (a store ahead of the replay)
            return None
        meta = SnapshotMeta(index, self.replica.applied_term, self.raw.conf)
        stored = isinstance(self.replica, StoredReplica)
        with_image = image or not stored
        if not Snapshot(meta, b"x" if with_image else b"").supersedes(self.disk.snapshot):
            return None
        if stored:
            self.replica.sync()  # as DiskReplica does before a checkpoint or an image
        snap = Snapshot(meta, self.replica.snapshot() if with_image else b"")
        self.disk.save_snapshot(snap)
        self.raw.compact(snap, self.keep_entries)
        self.snapshots_taken += 1
        return snap

    # -- conveniences for tests ---------------------------------------------

    @property
    def role(self) -> str:
        return self.raw.status().role.value

    @property
    def term(self) -> int:
        return self.raw.term

    @property
    def conf(self) -> ConfState:
        return self.raw.conf

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        out = self.raw.propose_conf_change(cc)
        self.process()
        return out
