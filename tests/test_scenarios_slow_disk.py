"""Scenario tests: a slow disk costs latency, never the leader.

A node's Ready loop keeps one write in flight; a disk flushing a large snapshot image
can hold it for seconds (a 40 MB state made the followers' syncs take about two).
What needs no write still leaves meanwhile: the leader's heartbeats, and the
followers' answers to them. Time is virtual and seeds fixed, so each run replays.
"""

from __future__ import annotations

from simtools_membership import make_cluster, propose_puts, wait_applied

from raft_core.sim.cluster import SimCluster

TIMEOUT_MS = 2 * 10 * 10.0  # the longest election timeout: 2 x election_tick x tick_ms


def _terms(c: SimCluster) -> dict[str, int]:
    return {nid: n.term for nid, n in c.nodes.items()}


def test_a_leader_whose_disk_stalls_for_three_election_timeouts_keeps_its_term():
    c = make_cluster(401)
    ld = c.leader()
    assert ld is not None
    terms = _terms(c)
    ld.disk_stall_ms = 3 * TIMEOUT_MS  # the leader's next write
    last = propose_puts(c, 3, prefix="during")
    c.run_for(3 * TIMEOUT_MS)
    assert c.leader() is ld and _terms(c) == terms, c.dump()
    wait_applied(c, last, sorted(c.nodes))


def test_a_leader_keeps_its_quorum_while_both_followers_disks_stall():
    """The shape of the 40 MB failure: both followers write images at once; the
    leader's check-quorum must still hear them (their heartbeat answers leave)."""
    c = make_cluster(402)
    ld = c.leader()
    assert ld is not None
    terms = _terms(c)
    followers = [n for n in c.nodes.values() if n is not ld]
    for f in followers:
        f.disk_stall_ms = 3 * TIMEOUT_MS
    last = propose_puts(c, 3, prefix="during")
    c.run_for(3 * TIMEOUT_MS)
    assert c.leader() is ld and ld.raw.is_leader and _terms(c) == terms, c.dump()
    wait_applied(c, last, sorted(c.nodes))
