"""Paused processes in the simulator (SIGSTOP), and the leader-completeness check they
sharpened: a candidate paused between its votes and counting them may lead a term the
cluster has already left behind."""

from __future__ import annotations

import pytest
from simtools import Client, election_timeout_ms, settle

from raft_core.sim.cluster import SimCluster, SimConfig
from raft_core.sim.invariants import InvariantViolation, SafetyChecker
from raft_core.types import Entry


def test_a_paused_follower_keeps_its_term_and_gets_what_was_sent_meanwhile() -> None:
    c = SimCluster(401, SimConfig(nodes=3))
    leader = settle(c)
    client = Client(c, "cl")
    sleeper = c.nodes[next(n for n in sorted(c.nodes) if n != leader.id)]
    term, ticks = sleeper.term, sleeper.raw.raft_for_tests.ticks
    c.pause(sleeper.id)
    assert client.write("put", "k", "v").ok
    c.run_for(3 * election_timeout_ms(c))
    assert sleeper.raw.raft_for_tests.ticks == ticks  # its clock stood still
    assert sleeper.term == term and sleeper.kv.get("k") is None
    assert sleeper.inbox  # appends and heartbeats wait in its socket buffers
    c.resume(sleeper.id)
    assert not sleeper.inbox
    assert c.run_until(lambda: sleeper.kv.get("k") == "v", 1_000)
    assert c.stats["pauses"] == 1


def _entry(index: int, term: int, data: bytes) -> Entry:
    return Entry(index, term, data=data)


def test_leader_completeness_covers_entries_committed_in_earlier_terms_only() -> None:
    ck = SafetyChecker()
    committed = _entry(3, 5, b"x")
    ck.term_observed("n1", 5)
    ck.commit_observed("n1", 3, lambda i: committed if i == 3 else None)
    # A leader of term 4 elected late (its votes counted after a pause): it need not
    # hold what term 5 committed.
    ck.leader_complete("n2", 4, 1, lambda i: _entry(3, 4, b"y") if i == 3 else None)
    # A leader of term 6 must.
    with pytest.raises(InvariantViolation, match="leader completeness"):
        ck.leader_complete("n3", 6, 1, lambda i: _entry(3, 4, b"y") if i == 3 else None)
    ck.leader_complete("n3", 6, 1, lambda i: committed if i == 3 else None)


def test_the_lowest_term_a_commit_was_seen_in_counts() -> None:
    """Seen committed first at term 2, then by a node at term 7: a leader of term 5
    must hold it."""
    ck = SafetyChecker()
    e = _entry(2, 2, b"x")
    ck.term_observed("n1", 2)
    ck.commit_observed("n1", 2, lambda i: e if i == 2 else None)
    ck.term_observed("n2", 7)
    ck.commit_observed("n2", 2, lambda i: e if i == 2 else None)
    with pytest.raises(InvariantViolation):
        ck.leader_complete("n3", 5, 1, lambda i: None if i != 2 else _entry(2, 1, b"z"))


@pytest.mark.parametrize("seed", [1040, 1451, 1761])
def test_campaign_seed_where_a_paused_candidate_led_a_term_left_behind(seed: int) -> None:
    """These runs failed the old leader-completeness check: a candidate paused after
    asking for votes resumed, counted them, and led a term the cluster had left."""
    from raft_core.sim.campaign import plan_run, run_one

    assert plan_run(seed).pauses
    result = run_one(seed)
    assert result.ok, f"{result.kind}: {result.reason}"
    assert result.stats["pauses"] > 0
