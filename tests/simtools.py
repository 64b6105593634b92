"""Helpers for scenario tests: scripted clients on a SimCluster, and a hand-driven
network of RawNodes (in the style of etcd-io/raft's ``raft_test.go`` ``network``).

Nothing here sleeps or reads a clock: SimCluster runs on virtual time, and the hand
network only moves when a test tells it to (``tick``, ``deliver``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raft_core.kv import KVStore
from raft_core.raft import RaftConfig
from raft_core.rawnode import PersistedState, RawNode
from raft_core.sim.cluster import ClientRequest, ClientResponse, SimCluster
from raft_core.sim.node import Disk, SimNode
from raft_core.statemachine import decode_command
from raft_core.types import (
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Role,
)

MT = MessageType

# -- SimCluster helpers ---------------------------------------------------------


def election_timeout_ms(c: SimCluster) -> float:
    """The minimum election timeout of the cluster, in virtual milliseconds."""
    return c.cfg.election_tick * c.cfg.tick_ms


def heartbeat_ms(c: SimCluster) -> float:
    return c.cfg.heartbeat_tick * c.cfg.tick_ms


def settle(c: SimCluster, timeout_ms: float = 5_000) -> SimNode:
    """Wait for a leader whose log is committed and applied on every live node."""

    def done() -> bool:
        ld = c.leader()
        if ld is None:
            return False
        lg = ld.raw.raft_for_tests.log
        if lg.committed != lg.last_index() or lg.term(lg.committed) != ld.term:
            return False
        return all(
            n.replica.applied_index == lg.committed and n.raw.raft_for_tests.lead == ld.id
            for n in c.live()
        )

    assert c.run_until(done, timeout_ms), "cluster did not settle\n" + c.dump()
    ld = c.leader()
    assert ld is not None
    return ld


def log_of(node: SimNode) -> list[Entry]:
    lg = node.raw.raft_for_tests.log
    return [lg.entry(i) for i in range(lg.first_index(), lg.last_index() + 1)]


def record_applied(c: SimCluster) -> dict[NodeId, list[Entry]]:
    """Every entry each node applies from now on (across restarts), in order."""
    out: dict[NodeId, list[Entry]] = {nid: [] for nid in c.nodes}
    c.apply_hooks.append(lambda nid, e, _res: out.setdefault(nid, []).append(e))
    return out


def command_of(e: Entry) -> tuple[Any, str | None, int | None] | None:
    if e.type is not EntryType.NORMAL or not e.data:
        return None
    payload, cid, seq, _ts = decode_command(e.data)
    return payload, cid, seq


class MessageCounter:
    """Counts Raft messages that pass the network, optionally dropping some.

    Installs itself as ``cluster.net.filter``; ``drop(src, dst, msg)`` returning True
    drops the message (it is then not counted as passed).
    """

    def __init__(
        self, c: SimCluster, drop: Callable[[str, str, object], bool] | None = None
    ) -> None:
        self.c = c
        self.drop = drop
        self.passed: list[tuple[float, str, str, Message]] = []
        self.dropped: list[tuple[float, str, str, object]] = []
        c.net.filter = self._filter

    def _filter(self, src: str, dst: str, msg: object) -> bool:
        if self.drop is not None and self.drop(src, dst, msg):
            self.dropped.append((self.c.now, src, dst, msg))
            return False
        if isinstance(msg, Message):
            self.passed.append((self.c.now, src, dst, msg))
        return True

    def count(
        self,
        kind: MessageType,
        *,
        src: str | None = None,
        dst: str | None = None,
        reject: bool | None = None,
        since: float = -1.0,
    ) -> int:
        return sum(
            1
            for t, s, d, m in self.passed
            if m.type is kind
            and t >= since
            and (src is None or s == src)
            and (dst is None or d == dst)
            and (reject is None or m.reject == reject)
        )

    def remove(self) -> None:
        if self.c.net.filter == self._filter:
            self.c.net.filter = None


class Client:
    """A scripted client endpoint on the simulated network.

    ``send`` is one attempt at one node (nothing retried); ``call`` sends and runs the
    cluster until that attempt is answered; ``write`` is what a careful client does:
    one session sequence number, retried (at the leader it is told about) until a
    node answers with a result.
    """

    def __init__(self, c: SimCluster, name: str) -> None:
        self.c = c
        self.name = name
        self.responses: dict[int, ClientResponse] = {}
        self.seq = 0
        self._req = 0
        c.net.attach(name, self._receive)

    def _receive(self, msg: object) -> None:
        if isinstance(msg, ClientResponse):
            self.responses.setdefault(msg.req_id, msg)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(
        self,
        node: NodeId,
        kind: str,
        key: str,
        value: str | None = None,
        expected: str | None = None,
        *,
        seq: int | None = None,
    ) -> int:
        self._req += 1
        session = (self.name, seq) if seq is not None else None
        req = ClientRequest(self.name, self._req, kind, key, value, expected, session)
        self.c.net.send(self.name, node, req, "client_request")
        return self._req

    def wait(self, req_id: int, timeout_ms: float) -> ClientResponse | None:
        self.c.run_until(lambda: req_id in self.responses, timeout_ms)
        return self.responses.get(req_id)

    def call(
        self,
        node: NodeId,
        kind: str,
        key: str,
        value: str | None = None,
        expected: str | None = None,
        *,
        seq: int | None = None,
        timeout_ms: float = 500,
    ) -> ClientResponse | None:
        return self.wait(self.send(node, kind, key, value, expected, seq=seq), timeout_ms)

    def write(
        self,
        kind: str,
        key: str,
        value: str | None = None,
        expected: str | None = None,
        *,
        seq: int | None = None,
        attempt_ms: float = 300,
        attempts: int = 30,
    ) -> ClientResponse:
        """A session write, retried with the same sequence number until answered."""
        seq = self.next_seq() if seq is None else seq
        target: NodeId | None = None
        for _ in range(attempts):
            if target is None or target not in self.c.nodes:
                ld = self.c.leader()
                target = ld.id if ld is not None else sorted(self.c.nodes)[0]
            resp = self.call(target, kind, key, value, expected, seq=seq, timeout_ms=attempt_ms)
            if resp is not None and resp.ok:
                return resp
            if resp is None:
                target = None
            elif resp.error == "not_leader":
                target = resp.leader
                if target is None:
                    self.c.run_for(20)
            elif resp.error in ("dropped", "lost"):
                target = None
                self.c.run_for(20)
            else:
                raise AssertionError(f"write {kind} {key}={value} failed: {resp}")
        raise AssertionError(f"write {kind} {key}={value} never answered\n{self.c.dump()}")

    def read(self, key: str, *, attempt_ms: float = 300, attempts: int = 30) -> str | None:
        """A linearizable read (ReadIndex at the leader), retried until answered."""
        for _ in range(attempts):
            ld = self.c.leader()
            if ld is None:
                self.c.run_for(20)
                continue
            resp = self.call(ld.id, "get", key, timeout_ms=attempt_ms)
            if resp is not None and resp.ok:
                assert resp.output is not None
                return resp.output["value"]
            self.c.run_for(20)
        raise AssertionError(f"read {key} never answered\n{self.c.dump()}")


@dataclass
class ScriptedOp:
    kind: str
    key: str
    value: str | None = None
    expected: str | None = None
    seq: int = 0
    attempts: int = 0
    response: ClientResponse | None = None


class ClosedLoopWriter:
    """An event-driven client: issues its ops one after the other, each with its own
    session sequence number, retrying on timeouts and errors; runs concurrently with
    other writers on the cluster's event queue."""

    def __init__(
        self, c: SimCluster, name: str, ops: list[ScriptedOp], *, timeout_ms: float = 150
    ) -> None:
        self.c = c
        self.name = name
        self.ops = ops
        self.timeout_ms = timeout_ms
        self.pos = 0
        self.target: NodeId | None = None
        self._req = 0
        self._current: int | None = None
        self.rng = random.Random(name)
        c.net.attach(name, self._receive)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.ops)

    def start(self) -> None:
        self.c.schedule(self.rng.uniform(0, 5), self._attempt)

    def _attempt(self) -> None:
        if self.done:
            return
        op = self.ops[self.pos]
        if op.seq == 0:
            op.seq = self.pos + 1
        op.attempts += 1
        if self.target is None or self.target not in self.c.nodes:
            self.target = self.rng.choice(sorted(self.c.nodes))
        self._req += 1
        req_id = self._req
        self._current = req_id
        req = ClientRequest(
            self.name, req_id, op.kind, op.key, op.value, op.expected, (self.name, op.seq)
        )
        self.c.net.send(self.name, self.target, req, "client_request")
        self.c.schedule(self.timeout_ms, lambda: self._timeout(req_id))

    def _timeout(self, req_id: int) -> None:
        if self._current == req_id:
            self._current = None
            self.target = None
            self.c.schedule(self.rng.uniform(1, 10), self._attempt)

    def _receive(self, msg: object) -> None:
        if not isinstance(msg, ClientResponse) or msg.req_id != self._current:
            return
        self._current = None
        if msg.ok:
            self.ops[self.pos].response = msg
            self.pos += 1
            self.c.schedule(self.rng.uniform(0, 3), self._attempt)
            return
        if msg.error == "not_leader" and msg.leader is not None:
            self.target = msg.leader
        else:
            self.target = None
        self.c.schedule(self.rng.uniform(1, 10), self._attempt)


class RecordingKV(KVStore):
    """A KV store that remembers every command it actually executed."""

    def __init__(self) -> None:
        super().__init__()
        self.executed: list[Any] = []

    def apply(self, command: Any) -> Any:
        self.executed.append(list(command))
        return super().apply(command)


def install_recording_kv(node: SimNode) -> RecordingKV:
    """Swap a fresh node's state machine for a RecordingKV (before any command ran:
    at most the founding configuration entry has been applied)."""
    assert node.replica.applied_index <= 1 and not node.kv.data, "install it earlier"
    kv = RecordingKV()
    node.kv = kv
    node.replica.sm = kv
    return kv


# -- a hand-driven network of RawNodes -----------------------------------------


def founding_entry(ids: list[NodeId], learners: list[NodeId] | None = None) -> Entry:
    return PersistedState.bootstrap(ids, learners or []).entries[0]


def fake_entries(first: int, term: int, count: int, tag: str = "") -> list[Entry]:
    return [
        Entry(i, term, EntryType.NORMAL, f"{tag}{i}@{term}".encode())
        for i in range(first, first + count)
    ]


@dataclass
class HandNode:
    id: NodeId
    config: RaftConfig
    disk: Disk
    seed: int
    raw: RawNode = field(init=False)
    applied: list[Entry] = field(default_factory=list)
    ever_applied: list[Entry] = field(default_factory=list)
    # What its Ready batches said about reads: confirmed, dropped, expired.
    read_states: list[ReadState] = field(default_factory=list)
    dropped_reads: list[bytes] = field(default_factory=list)
    expired_reads: list[bytes] = field(default_factory=list)
    up: bool = True
    restarts: int = 0

    def __post_init__(self) -> None:
        self.boot()

    def boot(self) -> None:
        rng = random.Random(self.seed * 1000 + self.restarts)
        self.raw = RawNode(self.config, self.disk.recovered(), rng)
        # What was applied before a crash is applied again from the log.
        self.applied = []

    @property
    def raft(self):
        return self.raw.raft_for_tests

    def log(self) -> list[tuple[int, int]]:
        lg = self.raft.log
        return [(i, lg.term(i)) for i in range(lg.first_index(), lg.last_index() + 1)]

    def entry(self, index: int) -> Entry:
        return self.raft.log.entry(index)


class HandNet:
    """RawNodes connected by a FIFO message queue that a test drives by hand.

    ``drop(m)`` returning True drops a message; ``hold(m)`` returning True keeps it
    aside in ``held`` (for reordering/duplicating later). Every delivered message is
    appended to ``delivered``.
    """

    def __init__(
        self,
        ids: list[NodeId],
        *,
        learners: list[NodeId] | None = None,
        logs: dict[NodeId, tuple[HardState, list[Entry]]] | None = None,
        seed: int = 1,
        **config: Any,
    ) -> None:
        """``ids`` are the founding voters; ``learners`` founding learners besides them."""
        self.ids = [*ids, *(learners or [])]
        founding = founding_entry(list(ids), learners)
        self.nodes: dict[NodeId, HandNode] = {}
        for k, nid in enumerate(self.ids):
            hs, extra = (logs or {}).get(nid, (HardState(1, None, 1), []))
            disk = Disk(HardState(hs.term, hs.vote, max(hs.commit, 1)), None, [founding, *extra])
            cfg = RaftConfig(id=nid, **config)
            self.nodes[nid] = HandNode(nid, cfg, disk, seed * 100 + k)
        self.queue: list[Message] = []
        self.held: list[Message] = []
        self.delivered: list[Message] = []
        self.dropped: list[Message] = []
        self.drop: Callable[[Message], bool] | None = None
        self.hold: Callable[[Message], bool] | None = None
        for nid in self.ids:
            self.process(nid)

    def __getitem__(self, nid: NodeId) -> HandNode:
        return self.nodes[nid]

    # -- the driver loop (persist, send, apply, advance) -------------------

    def process(self, nid: NodeId) -> None:
        n = self.nodes[nid]
        if not n.up:
            return
        while n.raw.has_ready():
            rd = n.raw.ready()
            n.disk.persist(rd)
            self.queue.extend(rd.messages)
            n.applied.extend(rd.committed_entries)
            n.ever_applied.extend(rd.committed_entries)
            n.read_states.extend(rd.read_states)
            n.dropped_reads.extend(rd.dropped_reads)
            n.expired_reads.extend(rd.expired_reads)
            n.raw.advance(rd)

    def step(self, m: Message) -> None:
        """Give one message to its recipient right now (no filters)."""
        n = self.nodes[m.to]
        if n.up:
            n.raw.step(m)
            self.process(m.to)

    def deliver(self, max_messages: int = 100_000) -> int:
        """Deliver queued messages (and those they cause) until the queue is empty."""
        count = 0
        while self.queue:
            count += 1
            assert count <= max_messages, "message storm"
            m = self.queue.pop(0)
            if not self.nodes[m.frm].up or not self.nodes[m.to].up:
                self.dropped.append(m)
                continue
            if self.drop is not None and self.drop(m):
                self.dropped.append(m)
                continue
            if self.hold is not None and self.hold(m):
                self.held.append(m)
                continue
            self.delivered.append(m)
            self.step(m)
        return count

    def take(self, pred: Callable[[Message], bool]) -> list[Message]:
        """Remove and return the queued messages matching ``pred``."""
        out = [m for m in self.queue if pred(m)]
        self.queue = [m for m in self.queue if not pred(m)]
        return out

    # -- time and faults ------------------------------------------------------

    def tick(self, nid: NodeId, n: int = 1) -> None:
        for _ in range(n):
            node = self.nodes[nid]
            if node.up:
                node.raw.tick()
                self.process(nid)

    def campaign(self, nid: NodeId) -> None:
        self.nodes[nid].raw.campaign()
        self.process(nid)
        self.deliver()

    def propose(self, nid: NodeId, data: bytes) -> tuple[int, int]:
        out = self.nodes[nid].raw.propose(data)
        self.process(nid)
        return out

    def crash(self, nid: NodeId) -> None:
        self.nodes[nid].up = False
        self.queue = [m for m in self.queue if m.frm != nid and m.to != nid]

    def restart(self, nid: NodeId) -> None:
        n = self.nodes[nid]
        n.up = True
        n.restarts += 1
        n.boot()
        self.process(nid)

    def leaders(self) -> list[HandNode]:
        return [n for n in self.nodes.values() if n.up and n.raft.role is Role.LEADER]
