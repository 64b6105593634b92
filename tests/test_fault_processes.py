"""One-way partitions and a slow disk on real ``raft-node`` processes.

What Raft promises under these faults is safety always (no two leaders in a term, no
acknowledged write lost, one history) and progress once a majority can talk both ways;
which node leads meanwhile is behaviour, not a promise. The tests assert the promises
and record the behaviour seen (printed; pytest shows it with ``-s`` or on failure):

* a leader whose messages to its followers are all dropped, but which still hears
  them: the followers stop hearing heartbeats and elect one of themselves (pre-vote
  succeeds: none of them has a leader any more); the old leader steps down (check-quorum
  sees no acknowledgements, and the new leader's higher term reaches it) and follows
  the new leader, which cannot hear it back.
* a follower that hears nothing from the leader but still hears the other follower:
  it times out and pre-votes, but the other follower still hears the leader and refuses
  (leader stickiness), so no term is bumped and the leader is not disrupted; the cut
  follower only falls behind, and catches up once healed.
* a slow disk (every WAL sync delayed) on every member: writes still commit, each
  taking at least the delay; the fsync histogram shows it; clearing the fault restores
  the speed.
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest
from proc_helpers import (
    ELECTION_TIMEOUT_MAX_S,
    Client,
    ClusterFactory,
    assert_error,
    assert_same_digest,
    metric,
    metrics_of,
    shared_http,
    status_of,
    url,
    wait_leader,
)
from testkit import wait_until

from mcp_server.local import LocalCluster

pytestmark = [pytest.mark.processes, pytest.mark.slow]

EMPTY = {"drop": [], "drop_out": [], "drop_in": [], "delay_ms": 0, "disk_delay_ms": 0}


@pytest.fixture
def clusters(tmp_path):
    factory = ClusterFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


def set_faults(c: LocalCluster, node: str, body: dict) -> dict:
    r = shared_http().post(url(c.node(node), "/v1/admin/faults"), json=body)
    assert r.status_code == 200, r.text
    return r.json()


def others(c: LocalCluster, node: str) -> list[str]:
    return [n.id for n in c.nodes if n.id != node]


def write_all(c: LocalCluster, prefix: str, n: int, only: list[str] | None = None) -> dict:
    """``n`` acknowledged writes; returns what each key must read back."""
    written = {}
    with Client(c, only=only) as cl:
        for i in range(n):
            cl.put(f"{prefix}-{i}", str(i))
            written[f"{prefix}-{i}"] = str(i)
    return written


def assert_readable(c: LocalCluster, written: dict) -> None:
    with Client(c) as cl:
        for key, value in written.items():
            assert cl.get(key)["value"] == value, key


def test_fault_api_refuses_bad_input_and_reports_the_whole_set(clusters):
    c = clusters.up(3, allow_fault_injection=True)
    lead = wait_leader(c)["id"]
    peers = others(c, lead)
    node = c.node(lead)
    for body, needle in [
        ({"drop_both": peers}, "unknown field(s): drop_both"),
        ({"drop_out": ["n9"]}, "unknown node id(s) n9"),
        ({"drop_in": [lead]}, "is this node"),
        ({"drop_in": "n2"}, "drop_in must be a list"),
        ({"disk_delay_ms": 20_000}, "0..10000"),
        ({"clear": "true"}, "clear must be true or false"),
    ]:
        r = shared_http().post(url(node, "/v1/admin/faults"), json=body)
        assert needle in assert_error(r, 400, "bad_request")["message"], body
    assert status_of(node)["faults"] == EMPTY  # nothing half-applied
    got = set_faults(c, lead, {"drop_out": [peers[0]], "disk_delay_ms": 5})
    assert got == {**EMPTY, "drop_out": [peers[0]], "disk_delay_ms": 5}
    got = set_faults(c, lead, {"drop_in": [peers[1]], "delay_ms": 1})
    assert got == {
        **EMPTY,
        "drop_out": [peers[0]],
        "drop_in": [peers[1]],
        "delay_ms": 1,
        "disk_delay_ms": 5,
    }
    assert status_of(node)["faults"] == got
    # clear first, then what the same request names: the set is replaced in one step
    assert set_faults(c, lead, {"clear": True, "drop": [peers[0]]}) == {
        **EMPTY,
        "drop": [peers[0]],
    }
    assert set_faults(c, lead, {"clear": True}) == EMPTY


def test_leader_that_cannot_send_loses_leadership_and_the_rest_progress(clusters):
    c = clusters.up(3, allow_fault_injection=True)
    before = write_all(c, "before", 3)
    lead = wait_leader(c)
    old, term0 = lead["id"], lead["term"]
    rest = others(c, old)
    assert set_faults(c, old, {"drop_out": rest})["drop_out"] == rest
    t0 = time.monotonic()
    new = wait_leader(c, among=rest, min_term=term0 + 1, timeout=20)
    elected_s = time.monotonic() - t0
    st = wait_until(
        lambda: (s := status_of(c.node(old))) and s["role"] != "leader" and s,
        20,
        f"{old} to step down",
    )
    during = write_all(c, "during", 10, only=rest)
    old_st = status_of(c.node(old))
    majority = status_of(c.node(new["id"]))["commit_index"]
    print(
        f"\nleader {old} (term {term0}) cut outbound: {new['id']} elected in term "
        f"{new['term']} after {elected_s:.2f}s; {old} is now {st['role']} in term "
        f"{st['term']} (leader it sees: {old_st['leader']}), applied "
        f"{old_st['applied_index']} while the majority is at {majority}"
    )
    dropped = metric(metrics_of(c.node(old)), "raft_messages_dropped_total", reason="fault")
    assert dropped and dropped > 0  # what it sent meanwhile was discarded, and counted
    set_faults(c, old, {"clear": True})
    assert_same_digest(c, [n.id for n in c.nodes], timeout=20)
    assert_readable(c, {**before, **during})


def test_follower_cut_off_from_the_leader_inbound_does_not_disrupt_it(clusters):
    c = clusters.up(3, allow_fault_injection=True)
    lead = wait_leader(c)
    leader, term0 = lead["id"], lead["term"]
    cut, other = others(c, leader)
    set_faults(c, cut, {"drop_in": [leader]})
    # Several election timeouts of writes by the majority, watching the terms.
    terms: set[int] = set()
    roles: set[str] = set()
    written: dict[str, str] = {}
    end = time.monotonic() + 6 * ELECTION_TIMEOUT_MAX_S
    i = 0
    with Client(c, only=[leader, other]) as cl:
        while time.monotonic() < end or i < 10:
            cl.put(f"maj-{i}", str(i))
            written[f"maj-{i}"] = str(i)
            i += 1
            st = status_of(c.node(cut))
            if st:
                terms.add(st["term"])
                roles.add(st["role"])
    lead_now = wait_leader(c)
    cut_st = status_of(c.node(cut))
    print(
        f"\nfollower {cut} cut inbound from leader {leader} (term {term0}) for "
        f"{6 * ELECTION_TIMEOUT_MAX_S:.1f}s: its roles {sorted(roles)}, terms {sorted(terms)}; "
        f"leader now {lead_now['id']} in term {lead_now['term']}; {cut} applied "
        f"{cut_st['applied_index']} vs commit {lead_now['commit_index']}"
    )
    set_faults(c, cut, {"clear": True})
    assert_same_digest(c, [n.id for n in c.nodes], timeout=20)
    assert_readable(c, written)


def test_slow_disk_still_commits_slower_and_clearing_restores(clusters):
    c = clusters.up(3, allow_fault_injection=True, tick_ms=50)
    delay_ms = 150

    def latencies(prefix: str, n: int = 6) -> list[float]:
        out = []
        with Client(c) as cl:
            cl.put(f"{prefix}-warm", "w")
            for i in range(n):
                t = time.monotonic()
                cl.put(f"{prefix}-{i}", str(i))
                out.append(time.monotonic() - t)
        return out

    def fsyncs() -> dict[str, tuple[float, float]]:
        out = {}
        for n in c.nodes:
            m = metrics_of(n)
            out[n.id] = (
                metric(m, "raft_fsync_seconds_count") or 0.0,
                metric(m, "raft_fsync_seconds_sum") or 0.0,
            )
        return out

    fast = latencies("fast")
    f0 = fsyncs()
    for n in c.nodes:
        assert set_faults(c, n.id, {"disk_delay_ms": delay_ms})["disk_delay_ms"] == delay_ms
    slow = latencies("slow")
    f1 = fsyncs()
    for n in c.nodes:
        assert set_faults(c, n.id, {"clear": True}) == EMPTY
    again = latencies("again")
    print(
        f"\nwrite latency, median: {statistics.median(fast) * 1000:.0f} ms, with every WAL "
        f"sync {delay_ms} ms slower {statistics.median(slow) * 1000:.0f} ms, cleared "
        f"{statistics.median(again) * 1000:.0f} ms"
    )
    assert min(slow) >= delay_ms / 1000  # every commit needs at least one slowed sync
    assert statistics.median(again) < delay_ms / 1000
    for node, (count1, sum1) in f1.items():
        count0, sum0 = f0[node]
        if count1 > count0:  # this node synced while slowed: every sync took the delay
            assert (sum1 - sum0) / (count1 - count0) >= delay_ms / 1000 * 0.95, node
    assert sum(f1[n][0] - f0[n][0] for n in f1) >= 6
    assert_same_digest(c, [n.id for n in c.nodes], timeout=20)


def test_a_follower_with_a_slow_disk_keeps_answering_while_it_syncs(clusters):
    """Once a WAL sync has been slow, a node hands its syncs to the disk thread, so its
    event loop keeps answering status and heartbeats however long the disk takes."""
    c = clusters.up(3, allow_fault_injection=True, tick_ms=50)
    leader = wait_leader(c)["id"]
    slow = next(n.id for n in c.nodes if n.id != leader)
    delay_s = 0.6
    set_faults(c, slow, {"disk_delay_ms": int(delay_s * 1000)})
    stop = False
    written = 0

    def writer() -> None:
        nonlocal written
        with Client(c) as cl:
            while not stop:
                cl.put(f"slow-disk-{written}", "v")
                written += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        # The first slowed sync may still run on the loop; give it time to be measured.
        wait_until(lambda: written >= 5, timeout=20)
        time.sleep(delay_s * 1.5)
        answers = []
        roles = []
        for _ in range(25):  # over about four slowed syncs
            t0 = time.monotonic()
            st = status_of(c.node(slow))
            assert st is not None
            answers.append(time.monotonic() - t0)
            roles.append((st["role"], st["leader"]))
            time.sleep(0.1)
    finally:
        stop = True
        t.join(30)
    m = metrics_of(c.node(slow))
    syncs = metric(m, "raft_fsync_seconds_count") or 0
    print(
        f"\nstatus of {slow}, every sync {delay_s}s slower: max {max(answers) * 1000:.0f} ms; "
        f"{syncs:.0f} syncs, {metric(m, 'raft_fsync_seconds_sum'):.1f} s; {written} writes; "
        f"roles seen {sorted(set(roles))}"
    )
    assert syncs >= 4  # it kept syncing while slowed
    assert max(answers) < delay_s / 2, answers
    set_faults(c, slow, {"clear": True})
    assert_same_digest(c, [n.id for n in c.nodes], timeout=30)
