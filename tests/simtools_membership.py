"""Helpers for the membership and snapshot scenario tests.

``SimCluster`` already reports engine events into its trace; the scenarios need them
as data (who, what, when, in which role), and need to see individual messages (to
count SNAP chunks, drop some, or check who voted for whom). This module adds exactly
that, plus the small waits and checks the stories repeat, so each test reads as the
story it tells.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raft_core.checker import check_history
from raft_core.confchange import ChangeOp, ConfChange
from raft_core.kv import KVStore
from raft_core.progress import ProgressState
from raft_core.sim.clients import SimClient
from raft_core.sim.cluster import SimCluster, SimConfig
from raft_core.sim.node import SimNode
from raft_core.statemachine import ApplyResult, Replica, decode_command, encode_command
from raft_core.status import ProgressStatus
from raft_core.types import (
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    Role,
    Snapshot,
    SnapshotChunk,
)

MT = MessageType


@dataclass(slots=True)
class Event:
    at: float
    node: str
    name: str
    fields: dict
    role: Role
    term: int


@dataclass(slots=True)
class Sent:
    at: float
    src: str
    dst: str
    msg: Any
    dropped: bool


class ScenarioCluster(SimCluster):
    """A SimCluster that records engine events and peer messages as data.

    ``drop`` (optional) decides per message whether the network loses it. Every
    message a node sends is recorded, including those dropped or blocked by a
    partition (``dropped=True``), so a test can see what the sender tried.
    """

    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        self.events: list[Event] = []
        self.sent: list[Sent] = []
        self.drop: Callable[[str, str, Any], bool] | None = None
        self.shadow = ShadowReplica()
        super().__init__(seed, config)
        self.net.filter = self._filter
        self._net_send = self.net.send
        self.net.send = self._send  # type: ignore[method-assign]

    def _on_apply(self, node: SimNode, e: Entry, result: ApplyResult) -> None:
        self.shadow.saw_applied(e)
        super()._on_apply(node, e, result)

    def _hook_events(self, node: SimNode) -> None:
        super()._hook_events(node)
        inner = node.raw.raft_for_tests.on_event

        def on_event(name: str, fields: dict, node: SimNode = node) -> None:
            r = node.raw.raft_for_tests
            self.events.append(Event(self.now, node.id, name, dict(fields), r.role, r.term))
            if inner is not None:
                inner(name, fields)

        node.raw.raft_for_tests.on_event = on_event

    def _send(self, src: str, dst: str, msg: Any, kind: str) -> None:
        # Record every peer message the engine emits, even one a partition blocks.
        if isinstance(msg, Message):
            blocked = not self.net.reachable(src, dst)
            self.sent.append(Sent(self.now, src, dst, msg, blocked))
        self._net_send(src, dst, msg, kind)

    def _filter(self, src: str, dst: str, msg: Any) -> bool:
        drop = self.drop is not None and self.drop(src, dst, msg)
        if drop and isinstance(msg, Message) and self.sent and self.sent[-1].msg is msg:
            self.sent[-1].dropped = True
        return not drop

    # -- queries -------------------------------------------------------------

    def events_named(self, name: str, node: str | None = None, since: float = -1) -> list[Event]:
        return [
            e
            for e in self.events
            if e.name == name and (node is None or e.node == node) and e.at >= since
        ]

    def messages(
        self,
        kind: MessageType,
        *,
        src: str | None = None,
        dst: str | None = None,
        since: float = -1,
    ) -> list[Sent]:
        return [
            s
            for s in self.sent
            if s.msg.type is kind
            and (src is None or s.src == src)
            and (dst is None or s.dst == dst)
            and s.at >= since
        ]


# -- building and driving clusters ---------------------------------------------


def make_cluster(seed: int, **cfg: Any) -> ScenarioCluster:
    """A cluster on a clean, mildly reordering network, with its first leader."""
    c = ScenarioCluster(seed, SimConfig(**cfg))
    leader_ready(c)
    return c


def leader_ready(c: SimCluster, timeout_ms: float = 10_000) -> SimNode:
    """Wait for a leader that has applied its no-op (so it accepts changes)."""

    def ok() -> bool:
        ld = c.leader()
        if ld is None:
            return False
        r = ld.raw.raft_for_tests
        return r.log.applied >= r.pending_conf_index and r.log.term(r.log.applied) == r.term

    assert c.run_until(ok, timeout_ms), f"no ready leader\n{c.dump()}"
    ld = c.leader()
    assert ld is not None
    return ld


def put_cmd(key: str, value: str) -> bytes:
    return encode_command(["put", key, value])


def propose_puts(c: SimCluster, n: int, prefix: str = "k", value_size: int = 8) -> int:
    """Propose ``n`` puts at the current leader; returns the index of the last one."""
    last = 0
    for i in range(n):
        last, _ = c.propose(put_cmd(f"{prefix}{i}", f"{i:0{value_size}d}"))
    return last


def applied(c: SimCluster, nid: str) -> int:
    return c.nodes[nid].replica.applied_index


def wait_applied(c: SimCluster, index: int, nodes: list[str], timeout_ms: float = 5_000) -> None:
    ok = c.run_until(lambda: all(applied(c, n) >= index for n in nodes), timeout_ms)
    assert ok, f"{nodes} did not apply {index} within {timeout_ms} ms\n{c.dump()}"


def wait_stable_conf(c: SimCluster, pred: Callable[[SimNode], bool], timeout_ms=5_000) -> SimNode:
    """Wait for a leader whose (non-joint) configuration satisfies ``pred`` and holds
    it as a voter (not a removed leader that is still handing over)."""

    def ok() -> bool:
        ld = c.leader()
        return ld is not None and not ld.conf.joint and ld.id in ld.conf.voters and pred(ld)

    assert c.run_until(ok, timeout_ms), f"configuration not reached\n{c.dump()}"
    ld = c.leader()
    assert ld is not None
    return ld


def add_learner(c: SimCluster, nid: str) -> SimNode:
    """Start a fresh process for ``nid`` and add it as a learner; wait until applied."""
    c.add_node(nid)
    c.change((ChangeOp.ADD_LEARNER, nid))
    wait_stable_conf(c, lambda ld: nid in ld.conf.learners)
    return c.nodes[nid]


def progress_of(leader: SimNode, nid: str) -> ProgressStatus:
    pr = leader.raw.progress(nid)
    assert pr is not None, f"{leader.id} has no progress for {nid}"
    return pr


def caught_up(c: SimCluster, nid: str, slack: int = 2) -> bool:
    ld = c.leader()
    if ld is None:
        return False
    pr = ld.raw.raft_for_tests.prs.get(nid)
    return (
        pr is not None
        and pr.state is ProgressState.REPLICATE
        and pr.match >= ld.raw.raft_for_tests.log.last_index() - slack
    )


def try_change(node: SimNode, *changes: tuple[ChangeOp, str]) -> ProposalDropped | None:
    """Propose a change at ``node``; returns the refusal, or None if it was accepted."""
    try:
        node.propose_conf_change(ConfChange(list(changes)))
    except ProposalDropped as e:
        return e
    return None


def member_terms(c: SimCluster, ids: list[str]) -> dict[str, int]:
    return {n: c.nodes[n].term for n in ids}


# -- clients -------------------------------------------------------------------


def start_clients(c: SimCluster, n: int, seed: int, keys: int = 3, **kw: Any) -> list[SimClient]:
    rng = random.Random(seed)
    names = [f"k{i}" for i in range(keys)]
    clients = [
        SimClient(c, f"c{i}", random.Random(rng.getrandbits(64)), keys=names, **kw)
        for i in range(n)
    ]
    for cl in clients:
        cl.start()
    return clients


def stop_clients_and_check(c: SimCluster, clients: list[SimClient], settle_ms=5_000) -> list:
    """Stop the clients, let in-flight operations finish, and check linearizability.

    Returns the history. Fails if the history is not linearizable or if the check
    could not decide (a scenario must be small enough to decide).
    """
    for cl in clients:
        cl.stop()
    c.run_until(lambda: all(cl.idle for cl in clients), settle_ms)
    for cl in clients:
        cl.finish()
    history = [op for cl in clients for op in cl.history]
    res = check_history(history, max_steps_per_key=300_000)
    assert res.status == "ok", f"history is {res.status}: {res.message}"
    return history


def acknowledged_writes(history: list) -> int:
    return sum(1 for op in history if op.kind != "get" and op.ret is not None)


# -- replica comparison ----------------------------------------------------------


def converge(c: SimCluster, ids: list[str], timeout_ms: float = 5_000) -> int:
    """Wait until every node in ``ids`` applied the leader's whole log; return that index."""

    def ok() -> bool:
        ld = c.leader()
        if ld is None:
            return False
        lg = ld.raw.raft_for_tests.log
        if lg.committed != lg.last_index():
            return False
        return all(c.nodes[n].up and applied(c, n) >= lg.committed for n in ids)

    assert c.run_until(ok, timeout_ms), f"{ids} did not converge\n{c.dump()}"
    ld = c.leader()
    assert ld is not None
    return ld.raw.raft_for_tests.log.committed


def assert_same_state(c: SimCluster, ids: list[str]) -> dict:
    """Every node in ``ids`` has the same applied index, digest chain and state hash."""
    digests = {n: c.nodes[n].replica.digest() for n in ids}
    first = digests[ids[0]]
    for n, d in digests.items():
        assert d == first, f"{n} differs from {ids[0]}: {d} vs {first}"
    return first


class ShadowReplica:
    """A replica that never crashes: it applies every committed entry exactly once, in
    order, as the cluster applies it anywhere. Its chain is the reference a recovered
    node's chain must equal at the same index."""

    def __init__(self) -> None:
        self.replica = Replica(KVStore())
        self._pending: dict[int, Entry] = {}
        # (index, command, client id, sequence number) of every applied client command
        self.commands: list[tuple[int, Any, str | None, int | None]] = []

    def saw_applied(self, e: Entry) -> None:
        if e.index <= self.replica.applied_index:
            return
        self._pending[e.index] = Entry(e.index, e.term, e.type, e.data)
        while self.replica.applied_index + 1 in self._pending:
            entry = self._pending.pop(self.replica.applied_index + 1)
            self.replica.apply(entry)
            if entry.type is EntryType.NORMAL and entry.data:
                cmd, cid, seq, _ = decode_command(entry.data)
                self.commands.append((entry.index, cmd, cid, seq))

    def applied_writes(self) -> set[tuple[str, str | None]]:
        """(key, value) of every applied put and cas (its new value)."""
        out: set[tuple[str, str | None]] = set()
        for _, cmd, _, _ in self.commands:
            if cmd[0] == "put":
                out.add((cmd[1], cmd[2]))
            elif cmd[0] == "cas":
                out.add((cmd[1], cmd[3]))
        return out

    def chain_at(self, index: int) -> bytes | None:
        return self.replica.chain_at(index)


def is_joint_entry(e: Entry) -> bool:
    return (
        e.type is EntryType.CONF_CHANGE and e.index > 1 and bool(ConfChange.decode(e.data).changes)
    )


def is_leave_entry(e: Entry) -> bool:
    return e.type is EntryType.CONF_CHANGE and ConfChange.decode(e.data).is_leave_joint


@dataclass
class OnceHook:
    """Run ``action`` the first time ``pred(node, entry)`` holds for an applied entry."""

    pred: Callable[[str, Entry], bool]
    action: Callable[[], None]
    fired_at: float | None = None
    fired: bool = field(default=False)

    def install(self, c: SimCluster) -> OnceHook:
        def hook(nid: str, e: Entry, result: ApplyResult) -> None:
            if not self.fired and self.pred(nid, e):
                self.fired = True
                self.fired_at = c.now
                self.action()

        c.apply_hooks.append(hook)
        return self


def snapshot_message(leader: SimNode, to: str, snap: Snapshot) -> Message:
    """The whole of ``snap`` as one InstallSnapshot chunk from ``leader`` to ``to``."""
    chunk = SnapshotChunk(meta=snap.meta, offset=0, total=len(snap.data), data=snap.data, done=True)
    return Message(MT.SNAP, to, leader.id, term=leader.term, chunk=chunk)
