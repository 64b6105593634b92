"""End-to-end tests of real ``raft-node`` processes (issue "raft-node").

Every test starts its own cluster through ``LocalCluster`` in its own tmp dir and port
block, with fast timing (20 ms ticks, elections after 200-400 ms), and the
``clusters`` fixture always tears it down. Waiting is done by bounded polling.
"""

from __future__ import annotations

import random
import shutil
import socket
import struct
import subprocess
import threading
import time

import httpx
import msgpack
import pytest
from proc_helpers import (
    ELECTION_TIMEOUT_MAX_S,
    FAST,
    BackgroundWriter,
    Client,
    ClusterFactory,
    SessionClient,
    append_torn_tail,
    assert_error,
    assert_same_digest,
    closed_by_peer,
    corrupt_early_record,
    find_leader,
    frame,
    http_client,
    kv_path,
    log_text,
    metric,
    metrics_of,
    node_argv,
    parse_metrics,
    peer_host_port,
    read_frame,
    shared_http,
    status_of,
    url,
    wait_applied,
    wait_leader,
)
from testkit import wait_until

from mcp_server.local import LocalCluster

pytestmark = [pytest.mark.processes, pytest.mark.slow]

# Measured failover times (kill -9 of the leader -> first write committed by a new
# leader), printed by the failover test.
FAILOVER_BOUND_S = 5.0
NO_FAULTS = {"drop": [], "drop_out": [], "drop_in": [], "delay_ms": 0, "disk_delay_ms": 0}


@pytest.fixture
def clusters(tmp_path):
    factory = ClusterFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def http():
    with http_client(timeout=7.0) as client:
        yield client


def followers(c: LocalCluster, leader_id: str) -> list[str]:
    return [n.id for n in c.nodes if n.id != leader_id]


def stale_get(node, key: str) -> str | None:
    r = shared_http().get(url(node, kv_path(key)), params={"consistency": "stale"})
    assert r.status_code == 200, r.text
    return r.json()["value"]


# 1 ----------------------------------------------------------------------------------------


def test_writes_and_reads_through_the_api(clusters, http):
    c = clusters.up(3)
    with Client(c) as cl:
        out = cl.put("k1", "v1")
        assert set(out) == {"index", "term"} and out["index"] > 0 and out["term"] > 0
        got = cl.get("k1")
        assert got["value"] == "v1" and got["applied_index"] >= out["index"]
        assert cl.get("missing")["value"] is None

        # DELETE: first removes, second finds nothing.
        d1 = cl.ok("DELETE", kv_path("k1"))
        assert d1["deleted"] is True and d1["index"] > out["index"] and d1["term"] > 0
        assert cl.ok("DELETE", kv_path("k1"))["deleted"] is False
        assert cl.get("k1")["value"] is None

        # CAS: create from absent, refuse on mismatch, swap, delete to absent.
        cas = kv_path("c") + "/cas"
        r = cl.ok("POST", cas, json={"expected": None, "value": "a"})
        assert r["ok"] is True and r["value"] == "a" and r["index"] > 0 and r["term"] > 0
        r = cl.ok("POST", cas, json={"expected": "zzz", "value": "b"})
        assert r["ok"] is False and r["value"] == "a"
        r = cl.ok("POST", cas, json={"expected": "a", "value": "b"})
        assert r["ok"] is True and r["value"] == "b"
        assert cl.get("c")["value"] == "b"
        r = cl.ok("POST", cas, json={"expected": "b", "value": None})
        assert r["ok"] is True and r["value"] is None
        assert cl.get("c")["value"] is None

        # Keys with characters that need escaping survive the round trip.
        odd = "dir/sub key?x=1&y=ü"
        cl.put(odd, "odd")
        assert cl.get(odd)["value"] == "odd"

        last = cl.put("stale", "s1")
        lead = wait_leader(c)
    # Stale reads on followers: served locally, eventually showing the write.
    for f in followers(c, lead["id"]):
        node = c.node(f)

        def seen(node=node) -> dict | None:
            r = http.get(url(node, kv_path("stale")), params={"consistency": "stale"})
            assert r.status_code == 200, r.text
            body = r.json()
            return body if body["value"] == "s1" else None

        body = wait_until(seen, 10, f"{f} to serve the write as a stale read")
        assert body["applied_index"] >= last["index"]


def test_session_retry_applies_once(clusters, http):
    """A retried PUT with the same client_id/seq is not executed again."""
    c = clusters.up(3)
    with Client(c) as cl:
        leader = cl.leader_address()
        first = http.put(
            url(leader, kv_path("s")), json={"value": "one", "client_id": "cli-1", "seq": 1}
        )
        assert first.status_code == 200, first.text
        second = http.put(
            url(leader, kv_path("s")), json={"value": "two", "client_id": "cli-1", "seq": 2}
        )
        assert second.status_code == 200, second.text
        before = http.get(url(leader, "/v1/admin/digest")).json()
        # The client never saw the answer to seq 1 and retries it: it must not overwrite
        # the later write.
        retry = http.put(
            url(leader, kv_path("s")), json={"value": "one", "client_id": "cli-1", "seq": 1}
        )
        assert retry.status_code == 200, retry.text
        assert cl.get("s")["value"] == "two"
        after = http.get(url(leader, "/v1/admin/digest")).json()
        assert after["state_hash"] == before["state_hash"], "the retry changed the state"
        # The same sequence number from another client is a different command.
        other = http.put(
            url(leader, kv_path("s")), json={"value": "three", "client_id": "cli-2", "seq": 1}
        )
        assert other.status_code == 200
        assert cl.get("s")["value"] == "three"


def test_session_retry_returns_the_original_index_and_term(clusters, http):
    """A retried command answers what the first execution answered (dissertation 6.3):
    the same index and term."""
    c = clusters.up(3)
    with Client(c) as cl:
        leader = cl.leader_address()
        body = {"value": "one", "client_id": "cli-r", "seq": 1}
        first = http.put(url(leader, kv_path("r")), json=body)
        assert first.status_code == 200, first.text
        retry = http.put(url(leader, kv_path("r")), json=body)
        assert retry.status_code == 200, retry.text
        assert retry.json() == first.json(), (
            f"retry of (cli-r, 1) answered {retry.json()}, the original {first.json()}"
        )


# 2 ----------------------------------------------------------------------------------------


def test_follower_redirects_with_leader_hint_and_faults_are_forbidden(clusters, http):
    c = clusters.up(3)
    lead = wait_leader(c)
    leader = c.node(lead["id"])
    for f in followers(c, leader.id):
        node = c.node(f)
        # The follower must know the leader before it can name it.
        wait_until(
            lambda node=node: (status_of(node) or {}).get("leader") == leader.id,
            10,
            f"{f} to know the leader",
        )
        calls = [
            ("PUT", kv_path("k"), {"value": "v"}),
            ("DELETE", kv_path("k"), None),
            ("POST", kv_path("k") + "/cas", {"expected": None, "value": "v"}),
            ("POST", "/v1/admin/membership", {"action": "remove", "id": "n9"}),
            ("POST", "/v1/admin/transfer-leadership", {"target": None}),
        ]
        for method, path, body in calls:
            r = http.request(method, url(node, path), json=body)
            err = assert_error(r, 421, "not_leader")
            assert err["leader"] == leader.id, (method, path, err)
            assert err["leader_api"] == leader.api_address, (method, path, err)
        # Linearizable reads are served by followers (ReadIndex through the leader),
        # linearizable by default; stale reads are served locally.
        for params in ({}, {"consistency": "linearizable"}):
            r = http.get(url(node, kv_path("k")), params=params)
            assert r.status_code == 200 and r.json()["value"] is None, r.text
        r = http.get(url(node, kv_path("k")), params={"consistency": "stale"})
        assert r.status_code == 200 and r.json()["value"] is None
    # Fault injection is off unless the node was started with it.
    for n in c.nodes:
        r = http.post(url(n, "/v1/admin/faults"), json={"drop": ["n1"]})
        assert_error(r, 403, "forbidden")
        assert status_of(n)["faults"]["drop"] == []


# 3 ----------------------------------------------------------------------------------------


def test_leader_kill9_loses_no_acknowledged_write(clusters):
    c = clusters.up(3)
    lead = wait_leader(c)
    old, old_term = lead["id"], lead["term"]
    survivors = followers(c, old)
    writer = BackgroundWriter(c, "failover", prefix="fo")
    writer.start()
    try:
        wait_until(lambda: len(writer.snapshot()) >= 30, 20, "30 acknowledged writes")
        t_kill = time.monotonic()
        c.kill(old)
        new = wait_leader(c, among=survivors, min_term=old_term + 1, timeout=10)
        t_elected = time.monotonic()
        first = wait_until(
            lambda: next(
                (a for a in writer.snapshot() if a.at > t_kill and a.term > old_term), None
            ),
            15,
            "a write committed by the new leader",
        )
        n = len(writer.snapshot())
        wait_until(lambda: len(writer.snapshot()) >= n + 20, 20, "20 more writes")
    finally:
        writer.stop()
    assert not writer.errors, writer.errors
    election_s, failover_s = t_elected - t_kill, first.at - t_kill
    print(
        f"FAILOVER: new leader {new['id']} (term {new['term']}) seen after {election_s:.3f}s; "
        f"first write committed by it {failover_s:.3f}s after kill -9 of {old}"
    )
    assert failover_s < FAILOVER_BOUND_S, f"failover took {failover_s:.2f}s"
    # The survivors saw the kill as a closed connection, not only as silence.
    closed = f"the leader {old} closed its connection"
    assert any(closed in (c.dir / f"{s}.log").read_text() for s in survivors)

    acks = writer.snapshot()
    assert [a.index for a in acks] == sorted(a.index for a in acks)
    assert len({a.index for a in acks}) == len(acks), "two writes acknowledged at one index"
    with Client(c, only=survivors) as cl:
        for key, value in writer.expected().items():
            assert cl.get(key)["value"] == value, f"acknowledged {key}={value} was lost"

    # The killed leader comes back, catches up and agrees with the others.
    c.start(old)
    assert_same_digest(c, [n.id for n in c.nodes])


# 4 ----------------------------------------------------------------------------------------


def test_all_nodes_killed_and_restarted_keep_acknowledged_data(clusters):
    c = clusters.up(3)  # fsync=always is the default
    assert all(status_of(n)["fsync"] == "always" for n in c.nodes)
    expected: dict[str, str | None] = {}
    with Client(c) as cl:
        s = SessionClient(cl, "restart")
        for i in range(30):
            s.put(f"r-{i}", f"v{i}")
            expected[f"r-{i}"] = f"v{i}"
        for i in range(0, 30, 7):
            assert s.delete(f"r-{i}")["deleted"] is True
            expected[f"r-{i}"] = None
        for i in range(1, 30, 9):
            out = s.cas(f"r-{i}", expected[f"r-{i}"], f"cas{i}")  # r-28 was deleted
            assert out["ok"] is True
            expected[f"r-{i}"] = f"cas{i}"
        last = s.put("r-last", "end")
        expected["r-last"] = "end"
    for n in c.nodes:  # no grace: SIGKILL right after the last acknowledgement
        c.kill(n.id)
    for n in c.nodes:
        c.start(n.id)
    # A new leader commits the entries of earlier terms only when its own no-op commits
    # (Figure 8): right after its election its commit index may still be below the last
    # acknowledged write (seen as 41 < 42 in a stress run). Wait for it; never lower.
    lead = wait_until(
        lambda: (s := find_leader(c)) and s["commit_index"] >= last["index"] and s,
        20,
        "a leader that committed the last acknowledged write",
    )
    assert lead["commit_index"] >= last["index"]
    with Client(c) as cl:
        for key, value in expected.items():
            assert cl.get(key)["value"] == value, f"{key} lost across the restart"
        # The session table was recovered too: retrying an old command of the session
        # (seq 1 wrote r-0, deleted since) must not execute it again.
        r = cl.request(
            "PUT", kv_path("r-0"), json={"value": "v0", "client_id": "restart", "seq": 1}
        )
        assert r.status_code == 200, r.text
        assert cl.get("r-0")["value"] is None, "a retried command ran twice after restart"


# 5 ----------------------------------------------------------------------------------------


def test_torn_wal_tail_is_truncated_and_node_rejoins(clusters):
    c = clusters.up(3)
    with Client(c) as cl:
        for i in range(20):
            cl.put(f"t-{i}", f"v{i}")
        lead = wait_leader(c)
        victim = followers(c, lead["id"])[0]
        wait_applied(c, victim, lead["commit_index"])
        c.kill(victim)
        # A crash mid-write: the start of a record header claiming more bytes than
        # follow, then a partial payload.
        garbage = struct.pack("<IIB", 4000, 0xDEADBEEF, 2) + random.Random(5).randbytes(37)
        seg, size = append_torn_tail(c.node(victim).data_dir, garbage)
        cl.put("while-down", "x")
        c.start(victim)
        log = log_text(c, victim)
        assert "torn write" in log and "truncating" in log, log[-2000:]
        assert f"byte offset {size}" in log and str(seg) in log, log[-2000:]
        assert c.alive(c.node(victim))
        for i in range(20, 30):
            cl.put(f"t-{i}", f"v{i}")
        target = wait_leader(c)["commit_index"]
        wait_applied(c, victim, target)
        node = c.node(victim)
        for i in range(30):
            assert stale_get(node, f"t-{i}") == f"v{i}"
        assert cl.get("while-down")["value"] == "x"
    assert_same_digest(c, [n.id for n in c.nodes])


# 6 ----------------------------------------------------------------------------------------


def test_corrupted_wal_record_in_the_middle_refuses_to_start(clusters):
    c = clusters.up(3)
    with Client(c) as cl:
        for i in range(20):
            cl.put(f"x-{i}", f"v{i}")
        lead = wait_leader(c)
        victim = followers(c, lead["id"])[0]
        wait_applied(c, victim, lead["commit_index"])
        c.kill(victim)
        node = c.node(victim)
        seg, off = corrupt_early_record(node.data_dir)
        damaged = seg.read_bytes()
        errfile = c.dir / f"{victim}.refused.log"
        with open(errfile, "wb") as errout:
            proc = subprocess.Popen(node_argv(c, node), stdout=errout, stderr=errout, cwd=c.dir)
        try:
            # It must exit; if it serves its API instead, it accepted the damaged log.
            wait_until(
                lambda: proc.poll() is not None or status_of(node) is not None,
                30,
                "the node to exit or start",
            )
            started = proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        err = errfile.read_text(errors="replace")
        assert not started, f"the node started on a WAL with a damaged record: {err[-3000:]}"
        assert proc.returncode == 3, (proc.returncode, err[-3000:])
        assert str(seg) in err, err
        assert f"byte offset {off}" in err, err
        assert "refuses to start" in err and "To recover" in err, err
        assert "backup" in err, err  # it says what to do
        assert seg.read_bytes() == damaged, "a refused start must not rewrite the segment"
        # The other two keep serving.
        others = followers(c, victim)
        with Client(c, only=others) as cl2:
            cl2.put("after-corruption", "ok")
            assert cl2.get("after-corruption")["value"] == "ok"
            assert cl2.get("x-7")["value"] == "v7"


# 6b ---------------------------------------------------------------------------------------


def test_followers_serve_linearizable_reads_and_a_cut_off_one_never_serves_stale(clusters, http):
    """A write the leader acknowledged is visible at once to a linearizable read on
    each follower (ReadIndex through the leader, then waiting to apply). A follower
    cut off from the others with the fault API answers 503 for linearizable reads,
    never its old value; stale reads there still answer (the old value)."""
    # Election timeouts of 1-2 s: the cut follower believes in the leader for at least
    # 1 s, long enough to forward a read, which expires after 2 election_ticks.
    ticks = 50
    expiry_s = 2 * ticks * FAST["tick_ms"] / 1000
    c = clusters.up(3, allow_fault_injection=True, election_ticks=ticks)
    lead = wait_leader(c)
    leader = c.node(lead["id"])
    fs = followers(c, leader.id)
    for f in fs:
        wait_until(
            lambda f=f: (status_of(c.node(f)) or {}).get("leader") == leader.id,
            10,
            f"{f} to know the leader",
        )
    for i in range(20):
        r = http.put(url(leader, kv_path("k")), json={"value": f"v{i}"})
        assert r.status_code == 200, r.text
        index = r.json()["index"]
        for f in fs:  # right after the acknowledgement, no waiting
            got = http.get(url(c.node(f), kv_path("k")), params={"consistency": "linearizable"})
            assert got.status_code == 200, got.text
            assert got.json()["value"] == f"v{i}", (f, i, got.json())
            assert got.json()["applied_index"] >= index

    cut, other = fs
    cut_node = c.node(cut)

    def faults(node_id: str, body: dict) -> None:
        r = http.post(url(c.node(node_id), "/v1/admin/faults"), json=body)
        assert r.status_code == 200, r.text

    faults(cut, {"drop": [leader.id, other]})
    faults(leader.id, {"drop": [cut]})
    faults(other, {"drop": [cut]})
    r = http.put(url(leader, kv_path("k")), json={"value": "after-cut"})
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    got = http.get(url(cut_node, kv_path("k")), params={"consistency": "linearizable"})
    took = time.monotonic() - t0
    # It still believed in the leader: its read was forwarded, got no answer and
    # expired (two election timeouts), well before the request deadline.
    assert_error(got, 503, "unavailable")
    assert took < expiry_s + 1.5, took
    # Later ones: 503 again, or 421 once it has given up on the leader; never a value.
    for _ in range(3):
        got = http.get(url(cut_node, kv_path("k")), params={"consistency": "linearizable"})
        assert_error(got, (421, 503))
    assert stale_get(cut_node, "k") == "v19"

    for n in c.nodes:
        faults(n.id, {"clear": True})
    wait_until(
        lambda: (status_of(cut_node) or {}).get("leader") is not None, 10, f"{cut} to rejoin"
    )
    got = http.get(url(cut_node, kv_path("k")), params={"consistency": "linearizable"})
    assert got.status_code == 200 and got.json()["value"] == "after-cut", got.text


# 7 ----------------------------------------------------------------------------------------


def test_partition_isolates_the_old_leader_and_heals(clusters, http):
    c = clusters.up(3, allow_fault_injection=True)
    with Client(c) as cl:
        cl.put("before", "1")
    lead = wait_leader(c)
    old, term0 = lead["id"], lead["term"]
    others = followers(c, old)
    old_node = c.node(old)

    def faults(node_id: str, body: dict) -> dict:
        r = http.post(url(c.node(node_id), "/v1/admin/faults"), json=body)
        assert r.status_code == 200, r.text
        return r.json()

    assert faults(old, {"drop": others})["drop"] == sorted(others)
    for o in others:
        assert faults(o, {"drop": [old]}) == {**NO_FAULTS, "drop": [old]}
    t0 = time.monotonic()

    # The isolated leader stops serving: never a successful linearizable read, and
    # 421/503 for reads and writes within a couple of election timeouts.
    served: list[dict] = []
    refused_after = None
    with http_client(timeout=1.5) as probe:
        while refused_after is None:
            assert time.monotonic() - t0 < 10, "the isolated leader did not refuse reads in 10 s"
            try:
                r = probe.get(url(old_node, kv_path("before")))
            except httpx.TimeoutException:
                continue
            if r.status_code == 200:
                served.append(r.json())
            elif r.status_code in (421, 503):
                assert_error(r, (421, 503))
                w = probe.put(url(old_node, kv_path("during")), json={"value": "lost"})
                assert_error(w, (421, 503))
                refused_after = time.monotonic() - t0
            else:
                pytest.fail(f"unexpected {r.status_code}: {r.text}")
            time.sleep(0.02)
    assert not served, f"the isolated old leader served linearizable reads: {served}"
    print(f"PARTITION: isolated leader {old} refused reads and writes after {refused_after:.3f}s")
    assert refused_after < 3.0 + 2 * ELECTION_TIMEOUT_MAX_S
    st = status_of(old_node)
    assert st["role"] != "leader", st

    # The majority elects a new leader and accepts writes.
    new = wait_leader(c, among=others, min_term=term0 + 1, timeout=10)
    with Client(c, only=others) as maj:
        for i in range(5):
            maj.put(f"p-{i}", f"v{i}")
        assert maj.get("p-4")["value"] == "v4"
        # Still isolated: the old leader answers linearizable reads with 421/503 only.
        r = http.get(url(old_node, kv_path("p-4")))
        assert_error(r, (421, 503))

        for n in c.nodes:
            assert faults(n.id, {"clear": True}) == NO_FAULTS
        # The old leader rejoins as a follower and gets the new writes.
        wait_until(
            lambda: (lambda s: s and s["role"] == "follower" and s["leader"] in others)(
                status_of(old_node)
            ),
            10,
            f"{old} to follow the new leader",
        )
        wait_applied(c, old, wait_leader(c, among=others)["commit_index"])
        wait_until(
            lambda: stale_get(old_node, "p-4") == "v4",
            10,
            f"{old} to apply the writes made while it was isolated",
        )
        for i in range(5):
            assert stale_get(old_node, f"p-{i}") == f"v{i}"
        assert status_of(old_node)["term"] >= new["term"]
        assert maj.get("during")["value"] is None, "a write refused by the old leader applied"
    assert_same_digest(c, [n.id for n in c.nodes])


# 8 ----------------------------------------------------------------------------------------


def test_wiped_follower_is_replaced_and_catches_up_through_a_snapshot(clusters, http):
    c = clusters.up(3, snapshot_entries=40, keep_entries=10)
    base = clusters.base_port(c)
    with Client(c) as cl:
        s = SessionClient(cl, "snap")
        for i in range(100):
            s.put(f"s-{i}", f"v{i}")
        leader = c.node(wait_leader(c)["id"])
        st = wait_until(
            lambda: (lambda x: x if x and x["snapshot_index"] > 0 else None)(status_of(leader)),
            10,
            "an automatic snapshot",
        )
        assert metric(metrics_of(leader), "raft_snapshots_total") >= 1
        log = http.get(url(leader, "/v1/admin/log")).json()
        assert log["first_index"] > 1, "the log was not compacted"
        extra = s.put("s-extra", "x")
        r = http.post(url(leader, "/v1/admin/snapshot"))
        assert r.status_code == 200, r.text
        snap = r.json()
        assert snap["snapshot_index"] >= extra["index"] > st["snapshot_index"]
        assert snap["bytes"] > 0
        assert status_of(leader)["snapshot_index"] == snap["snapshot_index"]

        # A follower loses its disk. Its vote and term are gone with it, so it must not
        # simply come back as the same voter: remove it, add a new node as a learner.
        victim = "n3" if leader.id != "n3" else "n2"
        c.kill(victim)
        shutil.rmtree(c.node(victim).data_dir)
        out = cl.ok("POST", "/v1/admin/membership", json={"action": "remove", "id": victim})
        assert victim not in out["voters"] and len(out["voters"]) == 2
        c.forget(victim)
        for i in range(10):
            s.put(f"t-{i}", f"w{i}")

        n4 = c.add_node("n4", base_port=base + 10)
        out = cl.ok(
            "POST",
            "/v1/admin/membership",
            json={
                "action": "add_learner",
                "id": "n4",
                "peer_address": n4.peer_address,
                "api_address": n4.api_address,
            },
        )
        assert out["learners"] == ["n4"] and "n4" not in out["voters"]
        target = wait_leader(c)["commit_index"]
        st4 = wait_applied(c, "n4", target, timeout=20)
        assert st4["role"] == "learner"
        assert st4["snapshot_index"] >= snap["snapshot_index"]
        out = cl.ok("POST", "/v1/admin/membership", json={"action": "promote", "id": "n4"})
        assert "n4" in out["voters"] and out["learners"] == []
        assert metric(metrics_of(n4), "raft_snapshots_installed_total") >= 1
        for key, value in [("s-0", "v0"), ("s-99", "v99"), ("s-extra", "x"), ("t-9", "w9")]:
            r = http.get(url(n4, kv_path(key)), params={"consistency": "stale"})
            assert r.json()["value"] == value, key
        s.put("after-promote", "y")
        assert cl.get("after-promote")["value"] == "y"
    assert_same_digest(c, [n.id for n in c.nodes])


# 9 ----------------------------------------------------------------------------------------


def test_membership_learner_promote_remove_and_conflict(clusters, http):
    # Longer election timeouts (1-2 s) here, so the leader's traffic can be delayed
    # enough to hold a change in flight without anyone starting an election.
    c = clusters.up(3, allow_fault_injection=True, election_ticks=50)
    base = clusters.base_port(c)
    with Client(c) as cl:
        cl.put("m", "1")
        n4 = c.add_node("n4", base_port=base + 10)
        out = cl.ok(
            "POST",
            "/v1/admin/membership",
            json={
                "action": "add_learner",
                "id": "n4",
                "peer_address": n4.peer_address,
                "api_address": n4.api_address,
            },
        )
        assert set(out) >= {"index", "voters", "learners"}, out
        assert isinstance(out["index"], int) and out["index"] > 0
        assert out["voters"] == ["n1", "n2", "n3"] and out["learners"] == ["n4"]
        st = wait_applied(c, "n4", wait_leader(c)["commit_index"])
        assert st["role"] == "learner"
        r = http.get(url(n4, kv_path("m")), params={"consistency": "stale"})
        assert r.json()["value"] == "1"
        # A learner serves linearizable reads too (ReadIndex through the leader): it
        # sees a write acknowledged just before.
        cl.put("m", "1b")
        r = http.get(url(n4, kv_path("m")), params={"consistency": "linearizable"})
        assert r.status_code == 200 and r.json()["value"] == "1b", r.text

        out2 = cl.ok("POST", "/v1/admin/membership", json={"action": "promote", "id": "n4"})
        assert out2["index"] > out["index"]
        assert out2["voters"] == ["n1", "n2", "n3", "n4"] and out2["learners"] == []
        wait_until(
            lambda: (status_of(n4) or {}).get("role") in ("follower", "leader"),
            10,
            "n4 to become a voter",
        )

        # A second change while one is in flight gets 409. Slow the leader's traffic
        # (well below the election timeout) so the first change stays in flight for
        # two round trips of 2 x 300 ms (joint configuration, then leaving it).
        lead = wait_leader(c)
        leader = c.node(lead["id"])
        victim = next(i for i in ("n2", "n3", "n1") if i != leader.id)
        r = http.post(url(leader, "/v1/admin/faults"), json={"delay_ms": 300})
        assert r.status_code == 200 and r.json()["delay_ms"] == 300
        results: dict[str, httpx.Response] = {}

        def remove() -> None:
            with http_client(timeout=10) as h:
                results["remove"] = h.post(
                    url(leader, "/v1/admin/membership"), json={"action": "remove", "id": victim}
                )

        pending_before = lead["pending_conf_index"]
        t = threading.Thread(target=remove)
        t.start()
        try:
            wait_until(
                lambda: (status_of(leader) or {}).get("pending_conf_index", 0) > pending_before,
                5,
                "the removal to be proposed",
                interval=0.005,
            )
            r = http.post(
                url(leader, "/v1/admin/membership"),
                json={"action": "add_learner", "id": "n5", "peer_address": "127.0.0.1:1"},
            )
        finally:
            t.join(15)
        assert_error(r, 409, "conflict")
        first = results["remove"]
        assert first.status_code == 200, first.text
        assert first.json()["voters"] == sorted({"n1", "n2", "n3", "n4"} - {victim})
        http.post(url(leader, "/v1/admin/faults"), json={"clear": True})
        # The removed node, still running, serves no linearizable read: 421 once it
        # knows it is out of the configuration; until then its request to the leader,
        # which no longer accepts its connections, goes unanswered: 503.
        r = http.get(url(c.node(victim), kv_path("m")), params={"consistency": "linearizable"})
        assert_error(r, (421, 503))
        c.forget(victim)

        st = cl.ok("GET", "/v1/status")
        assert victim not in st["voters"] and "n5" not in st["learners"] and not st["joint"]
        cl.put("m", "2")
        assert cl.get("m")["value"] == "2"
    assert_same_digest(c, [n.id for n in c.nodes])


# 10 ---------------------------------------------------------------------------------------


def test_api_token_and_cluster_secret(clusters, tmp_path, http):
    token = "s3cr3t-token-for-tests"
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "secret").write_text("cluster-secret-for-tests\n")
    c = clusters.up(
        3,
        api_token_file=str(tmp_path / "token"),
        cluster_secret_file=str(tmp_path / "secret"),
    )
    lead = wait_leader(c)  # elected with peer authentication on
    leader = c.node(lead["id"])
    protected = [
        ("PUT", kv_path("a"), {"value": "1"}),
        ("GET", kv_path("a"), None),
        ("DELETE", kv_path("a"), None),
        ("POST", kv_path("a") + "/cas", {"expected": None, "value": "1"}),
        ("GET", "/v1/admin/log", None),
        ("GET", "/v1/admin/digest", None),
        ("POST", "/v1/admin/snapshot", None),
        ("POST", "/v1/admin/membership", {"action": "remove", "id": "n9"}),
        ("POST", "/v1/admin/transfer-leadership", {"target": None}),
        ("POST", "/v1/admin/campaign", None),
        ("POST", "/v1/admin/faults", {"clear": True}),
    ]
    bad_headers = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {token}x"},
    ]
    for method, path, body in protected:
        for headers in bad_headers:
            r = http.request(method, url(leader, path), json=body, headers=headers)
            assert_error(r, 401, "unauthorized")
            assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers
    for n in c.nodes:
        r = http.get(url(n, "/v1/status"))
        assert r.status_code == 200, r.text
    assert http.get(url(leader, "/v1/kv/a")).status_code == 401  # nothing leaked or written

    with Client(c, token=token) as cl:
        cl.put("a", "1")
        assert cl.get("a")["value"] == "1"
        assert cl.ok("GET", "/v1/admin/log")["last_index"] >= 1
        assert cl.ok("GET", "/v1/admin/digest")["applied_index"] >= 1
        out = cl.ok("POST", kv_path("a") + "/cas", json={"expected": "1", "value": "2"})
        assert out["ok"] is True
        last = cl.put("b", "3")
    # Replicated to the followers over authenticated peer connections.
    auth = {"Authorization": f"Bearer {token}"}
    for f in followers(c, leader.id):
        wait_applied(c, f, last["index"])
        r = http.get(url(c.node(f), kv_path("a")), params={"consistency": "stale"}, headers=auth)
        assert r.status_code == 200 and r.json()["value"] == "2"
    # A peer that does not know the secret is refused at the handshake.
    target = c.node(followers(c, leader.id)[0])
    with socket.create_connection(peer_host_port(target), timeout=5) as s:
        s.sendall(frame(msgpack.packb([1, 1, None, leader.id, target.id, b""])))
        reply = msgpack.unpackb(read_frame(s), raw=False)
        assert reply[0] == 5 and reply[1] == 2, reply  # REJECT, code 2 = authentication
    assert wait_leader(c)["id"]  # still a healthy cluster


# 11 ---------------------------------------------------------------------------------------


def test_garbage_on_the_peer_port_does_not_hurt_the_node(clusters):
    # Without peer authentication, so that the garbage reaches the frame decoder (behind
    # TLS it would only reach the TLS handshake: test_secure_default covers that).
    c = clusters.up(3, insecure=True)
    lead = wait_leader(c)
    leader = c.node(lead["id"])
    victim, third = (c.node(i) for i in followers(c, leader.id))
    rng = random.Random(11)
    # Garbage must close the connection at once, well before the 5 s handshake timeout
    # would have closed it anyway.
    quick = 2.5
    held: list[socket.socket] = []
    try:
        for target in (victim, leader):
            addr = peer_host_port(target)
            for _ in range(5):  # random bytes
                with socket.create_connection(addr, timeout=5) as s:
                    s.sendall(rng.randbytes(4096))
                    assert closed_by_peer(s, quick), "random bytes did not close the connection"
            # a 4 GiB length prefix: refused at once, not buffered
            with socket.create_connection(addr, timeout=5) as s:
                s.sendall(b"\xff\xff\xff\xff" + b"x" * 64)
                assert closed_by_peer(s, quick), "a 4 GiB length prefix was accepted"
            # a well-framed handshake that is not msgpack, or not a hello
            for payload in (b"\xc1" * 100, msgpack.packb([9, "x"]), msgpack.packb({"a": 1})):
                with socket.create_connection(addr, timeout=5) as s:
                    s.sendall(frame(payload))
                    assert closed_by_peer(s, quick), payload
            # half a frame, left hanging while the node keeps working
            s = socket.create_connection(addr, timeout=5)
            s.sendall(b"\x00\x00\x01\x00" + b"\x91")
            held.append(s)

        # A dialer that completes the (secret-less) handshake as a real member, then
        # sends garbage messages. The member it claims to be is down, so no genuine
        # reconnection replaces (and closes) the fake connection: only the garbage can.
        c.kill(third.id)
        addr = peer_host_port(victim)
        for bad in (
            frame(rng.randbytes(300)),
            frame(msgpack.packb({"x": 1})),
            b"\x7f\xff\xff\xff",  # a 2 GiB frame, over the 64 MiB limit
        ):
            with socket.create_connection(addr, timeout=5) as s:
                s.sendall(frame(msgpack.packb([1, 1, None, third.id, victim.id, b""])))
                welcome = msgpack.unpackb(read_frame(s), raw=False)
                assert welcome[0] == 2, welcome
                s.sendall(frame(msgpack.packb([3, b""])))
                assert msgpack.unpackb(read_frame(s), raw=False) == [4]
                s.sendall(bad)
                assert closed_by_peer(s, quick), bad[:10]

        # The victim still serves and replicates: with the third node down, no write
        # commits without it.
        with Client(c, only=[leader.id, victim.id]) as cl:
            for i in range(20):
                cl.put(f"g-{i}", f"v{i}")
            assert cl.get("g-19")["value"] == "v19"
        assert stale_get(victim, "g-19") == "v19"
        assert c.alive(victim) and c.alive(leader)
        assert status_of(victim)["healthy"] is True
        c.start(third.id)
        assert_same_digest(c, [n.id for n in c.nodes])
    finally:
        for s in held:
            s.close()


# 12 ---------------------------------------------------------------------------------------


def test_metrics_and_status(clusters, http):
    c = clusters.up(3)
    with Client(c) as cl:
        for i in range(10):
            cl.put(f"m-{i}", "v")
        cl.get("m-1")
    lead = wait_leader(c)
    leader = c.node(lead["id"])
    r = http.get(url(leader, "/metrics"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for t in (
        "# TYPE raft_term gauge",
        "# TYPE raft_proposals_total counter",
        "# TYPE raft_fsync_seconds histogram",
    ):
        assert t in text, t
    m = parse_metrics(text)
    st = status_of(leader)
    assert metric(m, "raft_term") == st["term"]
    assert metric(m, "raft_role", role="leader") == 1
    assert metric(m, "raft_role", role="follower") == 0
    assert metric(m, "raft_commit_index") >= lead["commit_index"] >= 10
    assert metric(m, "raft_applied_index") >= lead["applied_index"]
    assert metric(m, "raft_last_index") >= metric(m, "raft_commit_index") - 0
    assert metric(m, "raft_proposals_total") >= 10
    count = metric(m, "raft_fsync_seconds_count")
    assert count and count > 0
    assert metric(m, "raft_fsync_seconds_bucket", le="+Inf") == count
    assert metric(m, "raft_fsync_seconds_sum") > 0
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in m.items()
        if name == "raft_fsync_seconds_bucket"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), "buckets not cumulative"
    assert metric(m, "raft_messages_sent_total", type="APP") > 0
    assert metric(m, "raft_messages_received_total", type="APP_RESP") > 0
    for f in followers(c, leader.id):
        fm = metrics_of(c.node(f))
        assert metric(fm, "raft_role", role="follower") == 1
        assert metric(fm, "raft_messages_received_total", type="APP") > 0
    for n in c.nodes:
        st = status_of(n)
        assert st["fsync"] == "always"
        for key in (
            "id", "role", "term", "leader", "commit_index", "applied_index", "last_index",
            "last_term", "snapshot_index", "voters", "learners", "joint",
        ):  # fmt: skip
            assert key in st, key
    assert set(status_of(leader)["progress"]) == {"n1", "n2", "n3"}
    for p in status_of(leader)["progress"].values():
        assert {"match", "next", "state"} <= set(p)
