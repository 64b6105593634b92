"""Scenarios found by replaying etcd-io/raft's datadriven cases against our engine.

Each test drives RawNodes by the Ready/advance contract through ``HandNet`` and
failed before its fix.
"""

from __future__ import annotations

import contextlib

import pytest
from simtools import HandNet, fake_entries

from raft_core.progress import ProgressState
from raft_core.rawnode import sendable_before_persist
from raft_core.sim.campaign import plan_run, run_one
from raft_core.types import (
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    Role,
    Snapshot,
    SnapshotMeta,
)

MT = MessageType


def _at_index_10(ids: list[str]) -> dict[str, tuple[HardState, list]]:
    """Every node holds entries 2..10 of term 1, committed (entry 1 is the founding one)."""
    return {n: (HardState(1, None, 10), fake_entries(2, 1, 9)) for n in ids}


def _stabilize(net: HandNet, *ids: str) -> None:
    net.deliver()
    for n in ids or net.ids:
        net.process(n)
    net.deliver()


def _heartbeat_round(net: HandNet, leader: str) -> None:
    net.tick(leader, net[leader].config.heartbeat_tick)
    net.deliver()


# -- issue 13: a single voter must not lead before its term is durable ------------


def test_a_single_voter_leads_only_once_its_new_term_is_durable():
    """The reproduction: one voter 1, one learner 2, both at index 10, term 1.

    1 campaigns and (before the fix) led term 2 at once, with nothing persisted; it
    proposed x, its appends (sendable before persist) reached 2, and it crashed before
    its Ready was written. Restarted at term 1, it won term 2 again and wrote y at the
    same index: two different committed entries at (12, term 2).
    """
    net = HandNet(["n1"], learners=["n2"], logs=_at_index_10(["n1", "n2"]))
    n1 = net["n1"]
    n1.raw.campaign()
    with contextlib.suppress(ProposalDropped):  # refused once leading waits for the disk
        n1.raw.propose(b"x")
    rd = n1.raw.ready()
    assert rd.must_sync and rd.hard_state is not None and rd.hard_state.term == 2
    for m in rd.messages:
        if sendable_before_persist(m):
            net.step(m)  # the early sends reach the learner ...
    net.crash("n1")  # ... and the node dies before its Ready is on disk
    net.deliver()

    net.restart("n1")
    assert n1.raft.term == 1
    net.campaign("n1")
    assert n1.raft.role is Role.LEADER and n1.raft.term == 2
    index, _ = net.propose("n1", b"y")
    net.deliver()
    _heartbeat_round(net, "n1")

    n2 = net["n2"]
    assert n2.raft.log.last_index() == n1.raft.log.last_index() == index
    for i in range(11, index + 1):
        a, b = n1.entry(i), n2.entry(i)
        assert (a.term, a.data) == (b.term, b.data), f"logs differ at {i}: {a} vs {b}"
    assert n2.raft.log.committed == index


def test_a_single_voter_becomes_leader_in_the_advance_that_persists_its_vote():
    net = HandNet(["n1"], logs=_at_index_10(["n1"]))
    raw = net["n1"].raw
    raw.campaign()
    rd = raw.ready()
    assert raw.raft_for_tests.role is Role.CANDIDATE and not rd.entries and not rd.messages
    net["n1"].disk.persist(rd)
    raw.advance(rd)
    assert raw.raft_for_tests.role is Role.LEADER
    rd = raw.ready()
    assert [(e.index, e.term, e.data) for e in rd.entries] == [(11, 2, b"")], "the no-op"


def test_a_vote_for_itself_from_an_older_term_is_ignored():
    """A candidate that moved to a higher term before its Ready was persisted must not
    count its old self-vote in the new term."""
    net = HandNet(["n1", "n2", "n3"], logs=_at_index_10(["n1", "n2", "n3"]), pre_vote=False)
    raw = net["n1"].raw
    raw.campaign()
    rd = raw.ready()
    raw.step(Message(MT.VOTE, "n1", "n2", term=5, index=10, log_term=1))
    net["n1"].disk.persist(rd)
    raw.advance(rd)
    assert raw.raft_for_tests.term == 5 and raw.raft_for_tests.role is Role.FOLLOWER


# -- a caught-up follower in probe leaves it on the next heartbeat -----------------


def test_a_caught_up_probing_follower_returns_to_replicate_after_one_heartbeat_round():
    ids = ["n1", "n2", "n3"]
    net = HandNet(ids, logs=_at_index_10(ids))
    net.campaign("n1")
    _stabilize(net)
    leader = net["n1"].raft
    assert leader.prs["n2"].match == leader.log.last_index()
    net["n1"].raw.report_unreachable("n2")
    assert leader.prs["n2"].state is ProgressState.PROBE
    _heartbeat_round(net, "n1")
    assert leader.prs["n2"].state is ProgressState.REPLICATE


# -- flow control (issue 11) -------------------------------------------------------


def test_a_commit_only_append_takes_no_inflight_slot():
    """With a window of one, the empty append that carries a new commit index must
    not keep the window full: the next proposal goes out at once, not a heartbeat
    round later."""
    ids = ["n1", "n2", "n3"]
    net = HandNet(ids, logs=_at_index_10(ids), max_inflight_msgs=1)
    net.campaign("n1")
    _stabilize(net)
    index, _ = net.propose("n1", b"p")
    sent = [m for m in net.queue if m.type is MT.APP and m.entries]
    assert {m.to for m in sent} == {"n2", "n3"}
    assert all(m.entries[-1].index == index for m in sent)


def test_a_follower_leaves_snapshot_state_once_appends_can_continue():
    """A delayed acknowledgement at 12 while the leader's first index is 13: the
    follower needs no snapshot any more; the leader replicates from 13 at once
    instead of sending the whole snapshot again two heartbeat rounds later."""
    ids = ["n1", "n2", "n3"]
    net = HandNet(ids, logs=_at_index_10(ids))
    net.campaign("n1")  # the no-op at 11
    _stabilize(net)
    net.hold = lambda m: m.type is MT.APP_RESP and m.frm == "n2"
    net.propose("n1", b"a")  # 12: n2 appends it, its acknowledgement is delayed
    net.deliver()
    net.hold = lambda m: m.to == "n2"
    for k in range(3):
        net.propose("n1", f"b{k}".encode())  # 13..15, committed by n1 and n3
    net.deliver()
    leader = net["n1"].raft
    assert leader.log.committed == 15
    ack_12 = next(m for m in net.held if m.type is MT.APP_RESP and m.index == 12)
    net.held.clear()
    net.hold = None
    conf = leader.conf
    net["n1"].raw.compact(Snapshot(SnapshotMeta(15, leader.term, conf), b"state"), keep=3)
    assert leader.log.first_index() == 13
    net["n1"].raw.report_unreachable("n2")  # probe from 12: needs entries before 13
    net.drop = lambda m: m.type is MT.SNAP  # the snapshot is on its way, slowly
    _heartbeat_round(net, "n1")
    net.drop = None
    assert leader.prs["n2"].state is ProgressState.SNAPSHOT

    net.step(ack_12)
    assert leader.prs["n2"].state is ProgressState.REPLICATE
    apps = [m for m in net.queue if m.type is MT.APP and m.to == "n2"]
    assert apps and apps[0].index == 12 and [e.index for e in apps[0].entries] == [13, 14, 15]


# -- how the commit index reaches followers (issue 11) ---------------------------


def _commit_riding_net() -> HandNet:
    ids = ["n1", "n2", "n3"]
    net = HandNet(ids, logs=_at_index_10(ids), broadcast_commit=False)
    net.campaign("n1")
    _stabilize(net)
    net.tick("n1", 1)  # any commit the election left untold goes out now
    net.deliver()
    return net


def test_without_broadcast_commit_a_write_costs_no_empty_appends():
    """One write, one append and one acknowledgement per follower: the new commit
    index is not broadcast in empty appends (and their acknowledgements)."""
    net = _commit_riding_net()
    net.delivered.clear()
    index, _ = net.propose("n1", b"w")
    net.deliver()
    assert net["n1"].raft.log.committed == index
    kinds = sorted((m.type.name, m.frm, m.to, bool(m.entries)) for m in net.delivered)
    assert kinds == [
        ("APP", "n1", "n2", True),
        ("APP", "n1", "n3", True),
        ("APP_RESP", "n2", "n1", False),
        ("APP_RESP", "n3", "n1", False),
    ]
    # The followers hold the entry but do not know yet that it committed.
    assert net["n2"].raft.log.committed < index


def test_without_broadcast_commit_the_next_append_carries_the_commit():
    net = _commit_riding_net()
    first, _ = net.propose("n1", b"a")
    net.deliver()
    net.propose("n1", b"b")
    net.deliver()
    for f in ("n2", "n3"):
        assert net[f].raft.log.committed >= first, "the second append carried the commit"


def test_without_broadcast_commit_followers_learn_the_commit_on_the_next_tick():
    """No further writes and the heartbeat not due: one tick of the leader sends the
    commit index to each follower that holds the committed entry, and only once."""
    net = _commit_riding_net()
    leader = net["n1"].raft
    leader.heartbeat_elapsed = 0
    index, _ = net.propose("n1", b"w")
    net.deliver()
    assert leader.heartbeat_elapsed + 1 < net["n1"].config.heartbeat_tick
    net.tick("n1", 1)
    told = [m for m in net.queue if m.type is MT.APP and not m.entries]
    assert sorted(m.to for m in told) == ["n2", "n3"]
    assert all(m.commit == index for m in told)
    net.deliver()
    assert all(net[f].raft.log.committed == index for f in ("n2", "n3"))
    net.tick("n1", 1)
    assert not [m for m in net.queue if m.type is MT.APP], "told twice"


def test_without_broadcast_commit_a_lagging_follower_is_told_only_what_it_holds():
    """A follower that misses the entry is not sent empty appends for a commit it
    cannot apply; it gets the entry (and the commit) when it answers again."""
    net = _commit_riding_net()
    net.drop = lambda m: m.to == "n3"
    net.propose("n1", b"w")
    net.deliver()
    net.drop = None
    net.tick("n1", 1)
    assert not [m for m in net.queue if m.to == "n3" and m.type is MT.APP and not m.entries]


# -- a closed leader connection shortens the wait (issue 11, failover) -----------------


def test_a_follower_that_lost_its_leaders_connection_campaigns_within_a_few_ticks():
    ids = ["n1", "n2", "n3"]
    net = HandNet(ids, logs=_at_index_10(ids), pre_vote=True, check_quorum=True)
    net.campaign("n1")
    _stabilize(net)
    net.crash("n1")
    for f in ("n2", "n3"):
        net[f].raw.report_leader_lost("n1")
    window = net["n2"].config.election_tick // 2
    for _ in range(window):
        for f in ("n2", "n3"):
            net.tick(f)
        net.deliver()
    leaders = [f for f in ("n2", "n3") if net[f].raft.role is Role.LEADER]
    campaigned = [f for f in ("n2", "n3") if net[f].raft.term > 2]
    assert campaigned, "neither follower campaigned within half an election timeout"
    assert len(leaders) <= 1
    # Both saw the close, so neither holds a lease on n1: a split is retried, and
    # within a normal timeout one of them leads.
    for _ in range(2 * net["n2"].config.election_tick):
        if any(net[f].raft.role is Role.LEADER for f in ("n2", "n3")):
            break
        for f in ("n2", "n3"):
            net.tick(f)
        net.deliver()
    assert [f for f in ("n2", "n3") if net[f].raft.role is Role.LEADER]


def test_a_false_report_of_a_lost_leader_does_not_unseat_it():
    """n2 thinks n1's connection closed, but n1 is alive and n3 hears from it: n3
    refuses n2's pre-vote (its lease on n1 holds), n1 keeps leading in its term."""
    ids = ["n1", "n2", "n3"]
    net = HandNet(ids, logs=_at_index_10(ids), pre_vote=True, check_quorum=True)
    net.campaign("n1")
    _stabilize(net)
    term = net["n1"].raft.term
    net["n2"].raw.report_leader_lost("n1")
    for _ in range(net["n2"].config.election_tick // 2):
        net.tick("n2")
        net.deliver()
    assert net["n1"].raft.role is Role.LEADER and net["n1"].raft.term == term
    assert net["n2"].raft.term == term
    _heartbeat_round(net, "n1")
    assert net["n2"].raft.lead == "n1"


def test_a_report_about_a_node_that_is_not_the_leader_changes_nothing():
    ids = ["n1", "n2", "n3"]
    net = HandNet(ids, logs=_at_index_10(ids))
    net.campaign("n1")
    _stabilize(net)
    before = net["n2"].raft.election_elapsed
    net["n2"].raw.report_leader_lost("n3")
    assert net["n2"].raft.election_elapsed == before
    net["n1"].raw.report_leader_lost("n2")  # a leader is nobody's follower
    assert net["n1"].raft.role is Role.LEADER


# -- the campaign's share of these shapes --------------------------------------


@pytest.mark.parametrize("seed", [184, 433, 629, 1405])
def test_campaign_seed_that_caught_a_leader_before_its_term_was_durable(seed: int) -> None:
    """With the self-vote counted at once, these single-voter runs ended with two
    different entries at one index and term."""
    plan = plan_run(seed)
    assert plan.nodes == 1
    result = run_one(seed)
    assert result.ok, f"{result.kind}: {result.reason}"


def test_campaign_seed_514_a_completed_snapshot_below_the_first_index_ends_the_transfer():
    """Found while fixing the snapshot-state exit: a transfer that completed after the
    leader compacted past it must still end, or the learner waits forever."""
    result = run_one(514)
    assert result.ok, f"{result.kind}: {result.reason}"


def test_the_campaign_runs_single_voters_with_learners_and_shrinking_configurations():
    plans = [plan_run(s) for s in range(400)]
    single = [p for p in plans if p.nodes == 1]
    assert len(single) > 20
    assert {p.config.learners for p in single} == {0, 1, 2}
    assert sum(p.shrink for p in plans) > 20


# -- a refused vote request does not reset the voter's election timer -------------


def test_a_refused_vote_in_a_higher_term_raises_the_term_but_keeps_the_timer():
    """Figure 2: a follower times out unless it hears its leader or *grants* a vote.
    n3 (its log behind) campaigns again and again in higher terms; n2, the node with
    the longest log, refuses each time. Had each refusal reset n2's timer (as a plain
    step-down to the new term does), n3's shorter timeouts could keep the only
    electable node from ever campaigning (campaign seed 41807420, no pre-vote)."""
    ids = ["n1", "n2", "n3"]
    logs = _at_index_10(ids)
    logs["n2"] = (HardState(1, None, 10), fake_entries(2, 1, 10))  # one entry more
    net = HandNet(ids, logs=logs, pre_vote=False, check_quorum=False)
    net.crash("n1")
    n2 = net["n2"]
    before = n2.raft.election_elapsed = 3
    timeout = n2.raft.randomized_election_timeout
    net["n3"].raw.campaign()
    net.process("n3")
    net.deliver()
    assert n2.raft.term == net["n3"].raft.term == 2 and n2.raft.vote is None  # refused
    assert (n2.raft.election_elapsed, n2.raft.randomized_election_timeout) == (before, timeout)
    # n2 times out on its own schedule, wins (n3 grants: n2's log is longer) and leads.
    net.tick("n2", timeout - before)
    net.deliver()
    assert n2.raft.role is Role.LEADER


def test_campaign_seed_41807420_converges_without_pre_vote():
    """Found by the 10,000-seed run on the merged code: it never converged."""
    plan = plan_run(41807420)
    assert not plan.config.pre_vote
    result = run_one(41807420)
    assert result.ok, f"{result.kind}: {result.reason}"
