"""Scenarios for protocol bugs that once slipped through the whole suite.

Each test here failed with the bug it names put back (see the docstrings); each was
added because planting that bug left every other test and 1,000 campaign seeds green.
"""

from __future__ import annotations

import copy
import random

import pytest
from simtools import Client, MessageCounter, election_timeout_ms
from simtools_membership import make_cluster

from raft_core.driver import Livelock
from raft_core.node.wal import StorageCorruption
from raft_core.raft import RaftConfig
from raft_core.rawnode import PersistedState, RawNode, Ready
from raft_core.sim.disk import Disk
from raft_core.types import Entry, HardState, Message, MessageType

MT = MessageType


# -- a follower commits only what the leader's append vouched for -----------------


def test_a_follower_never_commits_stale_entries_that_follow_what_the_append_vouched_for():
    """n3 holds entries 2..4 of term 1 from an old leader; only 2 is committed. The
    new leader (term 2) has 1, 2 and its own 3 (term 2), committed. Its append to n3
    carries entry 2 only (a one-entry size cap, or an older append delivered late) and
    commit index 3. That append vouches for n3's log up to index 2, nothing beyond:
    n3 must commit 2, not min(3, its last index) = 3, which would commit its stale
    entry 3 of term 1 while the cluster committed a different entry 3.
    """
    boot = PersistedState.bootstrap(["n1", "n2", "n3"])
    stale = [Entry(2, 1, data=b"a"), Entry(3, 1, data=b"stale-3"), Entry(4, 1, data=b"stale-4")]
    state = PersistedState(HardState(1, "n1", 1), None, [*boot.entries, *stale])
    f = RawNode(RaftConfig("n3"), state, random.Random(1))
    f.advance(f.ready())

    f.step(Message(MT.APP, "n3", "n2", term=2, index=1, log_term=1, entries=[stale[0]], commit=3))
    rd = f.ready()
    assert f.commit_index == 2, "committed beyond the last entry the append vouched for"
    assert [(e.index, e.term) for e in rd.committed_entries] == [(2, 1)]
    [resp] = [m for m in rd.messages if m.type is MT.APP_RESP]
    assert resp.index == 2 and not resp.reject
    f.advance(rd)

    # The next append replaces the stale tail; only then does 3 commit, as term 2's.
    mine = Entry(3, 2, data=b"new-3")
    f.step(Message(MT.APP, "n3", "n2", term=2, index=2, log_term=1, entries=[mine], commit=3))
    rd = f.ready()
    assert f.commit_index == 3 and f.last_index() == 3
    assert [(e.index, e.term, e.data) for e in rd.committed_entries] == [(3, 2, b"new-3")]


# -- a late duplicate snapshot ------------------------------------------------------


def test_a_late_duplicate_snapshot_older_than_the_commit_index_is_acknowledged_not_restored():
    """A follower installs a snapshot; the leader's transfer is duplicated by the
    network, and the copy arrives after the follower has applied much more and
    compacted its own log past the snapshot. The copy must be acknowledged (so the
    leader moves on) and NOT restored: restoring it would move the follower's state
    machine back in time (applied index and state hash going backwards).
    """
    c = make_cluster(131, snapshot_every=10, keep_entries=0, snapshot_chunk_bytes=1 << 16)
    ld = c.leader()
    assert ld is not None
    f = next(n for n in sorted(c.nodes) if n != ld.id)
    fol = c.nodes[f]
    client = Client(c, "cl")

    # The follower misses enough that the leader compacts past it: it needs a snapshot.
    c.isolate(f)
    for i in range(30):
        client.write("put", f"k{i}", f"v{i}")
    captured: list[Message] = []

    def keep_copy(src: str, dst: str, msg: object) -> bool:
        if isinstance(msg, Message) and msg.type is MT.SNAP and dst == f:
            captured.append(copy.deepcopy(msg))
        return False

    seen = MessageCounter(c, keep_copy)
    c.heal()
    assert c.run_until(lambda: bool(captured) and fol.replica.applied_index >= 30, 5_000)
    snap_index = captured[0].chunk.meta.index  # type: ignore[union-attr]

    # Much later: more writes applied, and the follower compacted its own log.
    for i in range(30, 60):
        client.write("put", f"k{i}", f"v{i}")
    assert c.run_until(lambda: fol.replica.applied_index >= 60, 5_000)
    fol.take_snapshot()
    assert fol.raw.first_index() > snap_index + 1, "the follower compacted past it"

    applied: list[int] = []
    c.apply_hooks.append(lambda nid, e, r: applied.append(e.index) if nid == f else None)
    before = fol.replica.digest()
    installs: list[dict] = []
    hook = fol.raw.event_hook

    def on_event(name: str, fields: dict) -> None:
        if name == "snapshot_installed":
            installs.append(fields)
        if hook is not None:
            hook(name, fields)

    fol.raw.set_event_hook(on_event)
    try:
        for m in captured:  # the late duplicates
            fol.receive(copy.deepcopy(m))
        c.run_for(election_timeout_ms(c))
    except Livelock as e:  # what a restore below the commit index leads to
        raise AssertionError(
            f"{e}; snapshots restored: {installs}, applied index now "
            f"{fol.replica.applied_index} (was {before['applied_index']})"
        ) from e

    assert installs == [], "a snapshot older than the commit index was restored"
    after = fol.replica.digest()
    assert after["applied_index"] >= before["applied_index"]
    assert fol.replica.chain_at(before["applied_index"]) == bytes.fromhex(before["chain"])
    assert applied == sorted(applied), "the applied index moved backwards"
    assert fol.raw.commit_index >= 60
    acks = [m for _, src, _, m in seen.passed if src == f and m.type is MT.APP_RESP]
    assert acks and acks[-1].index >= 60, "the duplicate was not acknowledged"


# -- the simulated disk tears and rots like a real one ------------------------------


class _Always:
    """An rng whose every draw lands in the "it happens" branch."""

    def random(self) -> float:
        return 0.0

    def randrange(self, n: int) -> int:
        return n // 2


def _disk_with_three_batches() -> Disk:
    boot = PersistedState.bootstrap(["n1", "n2", "n3"])
    disk = Disk(boot.hard_state, None, list(boot.entries))
    for i in (2, 3, 4):
        disk.persist(Ready(hard_state=HardState(2, "n1", i - 1), entries=[Entry(i, 2, data=b"x")]))
    return disk


def test_a_write_torn_by_a_crash_is_dropped_at_recovery():
    """A crash in the middle of a write leaves part of its record at the tail of the
    WAL. Recovery drops it (it was never acknowledged) and starts from the rest."""
    disk = _disk_with_three_batches()
    before = disk.recovered()
    in_flight = Ready(hard_state=HardState(2, "n1", 3), entries=[Entry(5, 2, data=b"y")])
    disk.crash_during(in_flight, _Always())  # type: ignore[arg-type]
    after = disk.recovered()
    assert disk.torn_tails_dropped == 1
    assert (after.hard_state, after.entries) == (before.hard_state, before.entries)


def test_damage_to_acknowledged_records_makes_recovery_refuse():
    """A flipped byte inside a record that has valid records after it cannot be a torn
    write: the node must refuse to start rather than serve without that record."""
    disk = _disk_with_three_batches()
    assert disk.corrupt(random.Random(3))
    with pytest.raises(StorageCorruption, match="not a torn write"):
        disk.recovered()
    disk.repair()
    assert [e.index for e in disk.recovered().entries] == [1, 2, 3, 4]


def test_a_node_with_a_damaged_wal_refuses_to_start_until_repaired():
    c = make_cluster(132)
    ld = c.leader()
    assert ld is not None
    client = Client(c, "cl")
    for i in range(5):
        client.write("put", f"k{i}", f"v{i}")
    f = next(n for n in sorted(c.nodes) if n != ld.id)
    c.crash(f)
    assert c.nodes[f].disk.corrupt(random.Random(1))
    c.restart(f)  # refuses (counted), is repaired, starts
    assert c.stats["corruptions_refused"] == 1 and c.nodes[f].up
    assert c.run_until(lambda: c.nodes[f].replica.applied_index >= ld.replica.applied_index)
