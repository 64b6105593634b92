"""The Ready/advance contract between the engine and its drivers."""

from __future__ import annotations

import random

from raft_core.confchange import ChangeOp, ConfChange
from raft_core.raft import RaftConfig
from raft_core.rawnode import PersistedState, RawNode, sendable_before_persist
from raft_core.sim.campaign import run_one
from raft_core.types import Entry, EntryType, Message, MessageType, Role

MT = MessageType


def _follower() -> RawNode:
    node = RawNode(RaftConfig("n2"), PersistedState.bootstrap(["n1", "n2", "n3"]), random.Random(1))
    node.advance(node.ready())  # apply the founding configuration
    return node


def _append(node: RawNode, prev: int, entries: list[Entry], commit: int) -> None:
    node.step(
        Message(MT.APP, "n2", "n1", term=2, index=prev, log_term=1 if prev == 1 else 2,
                entries=entries, commit=commit)
    )  # fmt: skip


def test_entries_are_written_with_the_commit_index_current_when_they_arrived():
    """A commit-only batch may skip the disk; the next write must carry the commit.

    Otherwise a node can hold configuration changes in its log while its persisted
    commit index lags behind several of them, and after a restart campaign under a
    configuration two steps old (seed 3251 of the campaign found exactly that).
    """
    n = _follower()
    _append(n, 1, [Entry(2, 2), Entry(3, 2)], commit=1)
    rd = n.ready()
    assert rd.needs_write() and rd.hard_state is not None
    n.advance(rd)

    n.step(Message(MT.HEARTBEAT, "n2", "n1", term=2, commit=3))  # commit moves alone
    rd = n.ready()
    assert rd.hard_state is not None and rd.hard_state.commit == 3
    assert not rd.must_sync and not rd.needs_write(), "a commit alone is not written"
    n.advance(rd)

    _append(n, 3, [Entry(4, 2)], commit=3)  # same commit index, new entries
    rd = n.ready()
    assert rd.entries and rd.needs_write()
    assert rd.hard_state is not None and rd.hard_state.commit == 3, (
        "entries went to disk without the commit index the node already knew"
    )


def test_a_term_or_vote_change_must_be_synced_before_the_vote_leaves():
    n = _follower()
    n.step(Message(MT.VOTE, "n2", "n3", term=5, index=1, log_term=1))
    rd = n.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == "n3" and rd.must_sync
    assert [m.type for m in rd.messages] == [MT.VOTE_RESP]
    assert not any(sendable_before_persist(m) for m in rd.messages)


def test_only_what_asserts_nothing_unwritten_may_leave_before_the_write():
    """A leader's messages (its term is durable before it leads) and a heartbeat's
    answer (it echoes the leader's term and grants nothing) may leave early; votes and
    acknowledgements of entries may not."""
    for t in (MT.APP, MT.HEARTBEAT, MT.SNAP, MT.TIMEOUT_NOW, MT.HEARTBEAT_RESP):
        assert sendable_before_persist(Message(t, "a", "b"))
    for t in (MT.APP_RESP, MT.VOTE, MT.VOTE_RESP, MT.PRE_VOTE, MT.PRE_VOTE_RESP,
              MT.SNAP_RESP):  # fmt: skip
        assert not sendable_before_persist(Message(t, "a", "b"))


def test_a_heartbeat_is_answered_while_a_write_is_in_flight():
    """A follower whose disk is slow still answers its leader's heartbeats (they
    leave through take_early_messages, not the next Ready), while its acknowledgement
    of new entries waits for their write."""
    n = _follower()
    _append(n, 1, [Entry(2, 2)], commit=1)
    rd = n.ready()  # the write of entry 2 is in flight
    assert [m.type for m in rd.messages] == [MT.APP_RESP]
    n.step(Message(MT.HEARTBEAT, "n2", "n1", term=2, commit=1))
    _append(n, 2, [Entry(3, 2)], commit=1)
    early = n.take_early_messages()
    assert [m.type for m in early] == [MT.HEARTBEAT_RESP]
    assert n.take_early_messages() == []
    n.advance(rd)
    assert [m.type for m in n.ready().messages] == [MT.APP_RESP], "the ack waits"


def test_campaign_seed_3251_stays_fixed():
    """Three removed nodes with stale commit indexes once elected one of them leader
    of an obsolete configuration (leader completeness violated)."""
    assert run_one(3251).ok


def test_a_configuration_change_ends_an_election_in_progress():
    """A candidate that applies a change mid-election must not count old votes.

    n3 campaigns with a stale commit index; n1's refusal tells it that entries 3-4
    (which remove n1 and n3) are committed; it applies them while still a candidate.
    n2's vote would then be a majority of the new configuration {n2}: n3 must not
    become leader of a configuration it is not in (campaign seed 360).
    """
    cfg = RaftConfig("n3", pre_vote=False)
    state = PersistedState.bootstrap(["n1", "n2", "n3"])
    remove = ConfChange([(ChangeOp.REMOVE, "n3"), (ChangeOp.REMOVE, "n1")]).encode()
    state.entries += [
        Entry(2, 2),
        Entry(3, 2, EntryType.CONF_CHANGE, remove),
        Entry(4, 2, EntryType.CONF_CHANGE, ConfChange().encode()),
    ]
    state.hard_state.term = 2
    n = RawNode(cfg, state, random.Random(3))
    n.advance(n.ready())
    n.campaign()
    rd = n.ready()
    assert n.raft_for_tests.role is Role.CANDIDATE and {m.to for m in rd.messages} == {"n1", "n2"}
    n.advance(rd)
    term = n.raft_for_tests.term
    n.step(Message(MT.VOTE_RESP, "n3", "n1", term=term, reject=True, index=4, log_term=2))
    rd = n.ready()
    assert [e.index for e in rd.committed_entries] == [2, 3, 4]
    n.advance(rd)
    assert n.raft_for_tests.conf.voters == frozenset({"n2"})
    n.step(Message(MT.VOTE_RESP, "n3", "n2", term=term))
    assert n.raft_for_tests.role is not Role.LEADER
