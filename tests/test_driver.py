"""The shared Ready loop, driven by hand: the order of effects and what each request
is told. (The simulator and raft-node run this same driver under every other test.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from raft_core.confchange import ChangeOp, ConfChange
from raft_core.driver import Driver, DriverHooks, Failure, Livelock
from raft_core.kv import KVStore
from raft_core.raft import RaftConfig
from raft_core.rawnode import PersistedState, RawNode, Ready
from raft_core.statemachine import ApplyResult, Replica, encode_command
from raft_core.types import ConfState, DropCode, Entry, EntryType, Message, MessageType

MT = MessageType


class Recorder(DriverHooks[str]):
    def __init__(self) -> None:
        self.log: list[str] = []
        self.pending_writes: list[tuple[Ready, Callable[[BaseException | None], None]]] = []
        self.applied_entries: list[int] = []
        # Passes that ended: the host's chance to take a snapshot (raft-node and the
        # simulator take theirs here, at the applied index).
        self.advances = 0

    # storage and transport
    def write(self, rd: Ready, done: Callable[[BaseException | None], None]) -> None:
        self.log.append(f"write {[e.index for e in rd.entries]}")
        self.pending_writes.append((rd, done))

    def send(self, messages: list[Message]) -> None:
        self.log.append("send " + ",".join(f"{m.type.name}>{m.to}" for m in messages))

    def finish_writes(self) -> None:
        while self.pending_writes:
            _, done = self.pending_writes.pop(0)
            done(None)

    # hooks
    def applied(self, entry: Entry, result: ApplyResult) -> None:
        self.applied_entries.append(entry.index)

    def write_done(self, token: str, index: int, term: int, result: ApplyResult) -> None:
        self.log.append(f"done {token}@{index}")

    def write_failed(self, token: str, failure: Failure) -> None:
        self.log.append(f"failed {token} {failure.code.value} {failure.drop}")

    def read_ready(self, token: str, applied_index: int) -> None:
        self.log.append(f"read {token}@{applied_index}")

    def read_failed(self, token: str, failure: Failure) -> None:
        self.log.append(f"read failed {token} {failure.code.value}")

    def advanced(self, rd: Ready, confs: list[ConfState]) -> None:
        self.advances += 1
        self.log.extend(f"conf entry {i} {[n for _, n in cc.changes]}" for i, cc in rd.conf_changes)

    def conf_change_done(self, token: str, index: int, conf: ConfState) -> None:
        self.log.append(f"conf done {token}@{index} learners={sorted(conf.learners)}")

    def conf_change_failed(self, token: str, failure: Failure) -> None:
        self.log.append(f"conf failed {token} {failure.code.value} {failure.drop}")


class Soon:
    """A scheduler that runs what was scheduled only when told to."""

    def __init__(self) -> None:
        self.queue: list[Callable[[], None]] = []

    def __call__(self, fn: Callable[[], None]) -> None:
        self.queue.append(fn)

    def run(self) -> None:
        while self.queue:
            self.queue.pop(0)()


def _driver(node: str, state: Replica | None = None) -> tuple[RawNode, Driver[str], Recorder, Soon]:
    raw = RawNode(RaftConfig(node, pre_vote=False), PersistedState.bootstrap(["n1", "n2", "n3"]))
    rec, soon = Recorder(), Soon()
    drv: Driver[str] = Driver(
        raw,
        storage=rec,
        transport=rec,
        state=state or Replica(KVStore()),
        call_soon=soon,
        hooks=rec,
    )
    return raw, drv, rec, soon


def _settle(drv: Driver[str], rec: Recorder, soon: Soon) -> None:
    drv.kick()
    for _ in range(10):
        soon.run()
        rec.finish_writes()


def _ack(raw: RawNode, frm: str, index: int) -> None:
    raw.step(Message(MT.APP_RESP, raw.id, frm, term=raw.term, index=index))


def _leader() -> tuple[RawNode, Driver[str], Recorder, Soon]:
    """n1, leader of n1..n3, its no-op (index 2) committed, followers replicating."""
    raw, drv, rec, soon = _driver("n1")
    _settle(drv, rec, soon)
    raw.campaign()
    _settle(drv, rec, soon)
    raw.step(Message(MT.VOTE_RESP, "n1", "n2", term=raw.term))
    _settle(drv, rec, soon)
    assert raw.is_leader
    _ack(raw, "n2", 2)
    _ack(raw, "n3", 2)
    _settle(drv, rec, soon)
    assert raw.commit_index == 2
    rec.log.clear()
    return raw, drv, rec, soon


def test_a_leader_sends_appends_before_its_write_completes_and_answers_once_applied():
    raw, drv, rec, soon = _leader()
    drv.submit(encode_command(["put", "k", "v"]), "w1")
    drv.submit(encode_command(["put", "k", "w"]), "w2")
    soon.run()  # one pass: both proposals in one batch (group commit)
    assert rec.log == ["send APP>n2,APP>n3", "write [3, 4]"]
    _ack(raw, "n2", 4)
    drv.kick()
    soon.run()
    assert rec.log[-1] == "write [3, 4]", "nothing is applied before our own write is durable"
    rec.finish_writes()
    soon.run()
    rec.finish_writes()
    soon.run()
    assert rec.log[-2:] == ["done w1@3", "done w2@4"], rec.log


def test_a_follower_refuses_proposals_and_reads_saying_so():
    _, drv, rec, soon = _driver("n2")
    drv.submit(b"x", "w")
    drv.read("r")
    soon.run()
    assert rec.log[:2] == [f"failed w refused {DropCode.NOT_LEADER}", "read failed r refused"]


def test_a_replaced_entry_answers_lost_and_a_read_fails_when_leadership_is_lost():
    raw, drv, rec, soon = _leader()
    drv.submit(encode_command(["put", "k", "v"]), "w1")
    drv.read("r1")
    _settle(drv, rec, soon)
    assert raw.last_index() == 3 and raw.commit_index == 2
    # A new leader (n3, next term) replaces our uncommitted entry 3 with its own.
    term = raw.term + 1
    theirs = Entry(3, term, data=b"")
    raw.step(
        Message(MT.APP, "n1", "n3", term=term, index=2, log_term=raw.log_term(2) or 0,
                entries=[theirs], commit=3)
    )  # fmt: skip
    _settle(drv, rec, soon)
    assert "failed w1 replaced None" in rec.log, rec.log
    assert "read failed r1 leadership_lost" in rec.log, rec.log


def test_a_livelocked_engine_is_reported_not_spun(monkeypatch):
    raw, _, rec, _ = _leader()
    inline: Driver[str] = Driver(
        raw, storage=rec, transport=rec, state=Replica(KVStore()), call_soon=None, hooks=rec
    )
    monkeypatch.setattr(RawNode, "has_ready", lambda self: True)
    monkeypatch.setattr(Recorder, "write", lambda self, rd, done: done(None))
    with pytest.raises(Livelock, match="Ready batches in a row"):
        inline.kick()


def test_a_conf_change_is_decoded_once_and_answered_after_it_takes_effect():
    raw, drv, rec, soon = _leader()
    drv.submit_conf_change(ConfChange([(ChangeOp.ADD_LEARNER, "n4")]), "c1")
    _settle(drv, rec, soon)
    assert raw.entry_at(3).type is EntryType.CONF_CHANGE and "n4" not in raw.conf.learners
    _ack(raw, "n2", 3)
    _settle(drv, rec, soon)
    # The Ready handed the host the change decoded; the caller is answered once
    # advance() put it in force and the host has seen the batch.
    assert rec.log[-2:] == ["conf entry 3 ['n4']", "conf done c1@3 learners=['n4']"], rec.log


def test_a_replaced_conf_change_is_told_so_and_a_refused_one_at_once():
    raw, drv, rec, soon = _leader()
    drv.submit_conf_change(ConfChange([(ChangeOp.REMOVE, "n3")]), "c1")
    drv.submit_conf_change(ConfChange([(ChangeOp.REMOVE, "n2")]), "c2")
    assert rec.log == [f"conf failed c2 refused {DropCode.CONF_CHANGE_IN_FLIGHT}"]
    _settle(drv, rec, soon)
    term = raw.term + 1
    raw.step(
        Message(MT.APP, "n1", "n3", term=term, index=2, log_term=raw.log_term(2) or 0,
                entries=[Entry(3, term, data=b"")], commit=3)
    )  # fmt: skip
    _settle(drv, rec, soon)
    assert "conf failed c1 replaced None" in rec.log, rec.log
    assert raw.conf.voters == {"n1", "n2", "n3"}


# -- persist before apply (issue 23: a driver that applied first passed every test) --


def _follower_holding_a_write() -> tuple[Replica, KVStore, bytes, Recorder, Soon]:
    """n2 steps an append from n1 (term 2) carrying entries 2 and 3 and commit index
    3, and runs the pass it causes; the write of those entries is held. Also returns
    a snapshot of the state machine from before the append."""
    kv = KVStore()
    replica = Replica(kv)
    raw, drv, rec, soon = _driver("n2", replica)
    _settle(drv, rec, soon)
    before = replica.snapshot()
    rec.log.clear()
    rec.applied_entries.clear()
    rec.advances = 0
    entries = [
        Entry(2, 2, data=encode_command(["put", "k", "v"])),
        Entry(3, 2, data=encode_command(["put", "k", "w"])),
    ]
    raw.step(Message(MT.APP, "n2", "n1", term=2, index=1, log_term=1, entries=entries, commit=3))
    drv.kick()
    soon.run()
    assert [[e.index for e in rd.entries] for rd, _ in rec.pending_writes] == [[2, 3]]
    return replica, kv, before, rec, soon


def test_a_follower_applies_snapshots_and_acknowledges_nothing_until_its_write_completes():
    """The append commits what it carries, but until those entries are durable here
    the state machine must not move (a crash would leave it ahead of the log a
    restart recovers; a snapshot taken of it would claim entries the disk lacks), and
    the leader must not hear an acknowledgement (it counts toward commit)."""
    replica, kv, before, rec, soon = _follower_holding_a_write()
    assert rec.applied_entries == [] and replica.applied_index == 1, "applied before the write"
    assert replica.snapshot() == before
    assert rec.advances == 0, "the pass ended (the host may snapshot) before the write"
    assert not any("APP_RESP" in line for line in rec.log), rec.log
    soon.run()  # nothing else runs while the write is out
    assert rec.applied_entries == [] and not any("APP_RESP" in line for line in rec.log)

    rec.finish_writes()
    soon.run()
    assert rec.applied_entries == [2, 3] and replica.applied_index == 3
    assert kv.get("k") == "w"
    assert rec.log[-1] == "send APP_RESP>n1" and rec.advances == 1, rec.log


def test_a_planted_apply_before_persist_is_caught(monkeypatch):
    """The test above has teeth: with the bug of issue 23 planted (committed entries
    applied in the pass that produced them, before its write), it sees them applied."""
    from planted import plant_apply_before_persist

    plant_apply_before_persist(monkeypatch.setattr)
    replica, *_ = _follower_holding_a_write()
    assert replica.applied_index == 3


def test_a_leader_applies_and_answers_nothing_until_its_own_write_completes():
    """Both followers acknowledge the leader's new entries before its own write is
    done: that is a majority, and the entries commit. Still nothing is applied or
    answered (and no snapshot taken) until the leader's write of them completes."""
    raw, drv, rec, soon = _leader()
    replica = drv._state
    before = replica.applied_index
    drv.submit(encode_command(["put", "k", "v"]), "w1")
    soon.run()
    assert rec.log == ["send APP>n2,APP>n3", "write [3]"]
    rec.applied_entries.clear()
    rec.advances = 0
    _ack(raw, "n2", 3)
    _ack(raw, "n3", 3)
    drv.kick()
    soon.run()
    assert raw.commit_index == 3, "a majority of followers holds entry 3"
    assert rec.applied_entries == [] and replica.applied_index == before
    assert rec.advances == 0 and not any(line.startswith("done") for line in rec.log)

    rec.finish_writes()
    soon.run()
    rec.finish_writes()
    soon.run()
    assert rec.applied_entries == [3] and replica.applied_index == 3
    assert rec.log[-1] == "done w1@3", rec.log
