"""Every operation on a real 3-server NATS JetStream cluster, group by group: status
and health per Raft group (meta, streams, consumers) with paging, KV replicate/read,
step-down elections, per-stream verification, stream backups, process faults, and the
refusals that apply, each with its audit line. One cluster for the module; every test
leaves three healthy servers."""

from __future__ import annotations

import json

import pytest
from nats_helpers import audit_lines, module_fixtures
from testkit import wait_until

from mcp_server.core.errors import InputError, NodeRequestError, NotSupported, Refused
from mcp_server.core.view import group_line
from mcp_server.mcp import results

pytestmark = pytest.mark.processes

KV = "stream:KV_raft-manager"
STEP_DOWN_BOUND_S = 10.0
R3 = {"num_replicas": 3}


cluster, mgr = module_fixtures()


def orders(mgr, n: int = 3) -> None:
    """A replicated stream ORDERS with a durable consumer, and ``n`` messages in it."""
    a = mgr.adapter
    try:
        a.api("STREAM.INFO.ORDERS")
    except NodeRequestError:
        a.api("STREAM.CREATE.ORDERS", {"name": "ORDERS", "subjects": ["orders.>"]} | R3)
        a.api(
            "CONSUMER.DURABLE.CREATE.ORDERS.proc",
            {"stream_name": "ORDERS", "config": {"durable_name": "proc", "ack_policy": "explicit"}},
        )
    for i in range(n):
        a._conn().request(f"orders.{i}", json.dumps({"n": i}).encode())


def assert_refused_audited(state, operation: str, *reason: str) -> None:
    line = audit_lines(state)[-1]
    assert line["operation"] == operation and line["outcome"] == "refused", line
    for r in reason:
        assert r in line["reason"], line


def test_status_lists_groups_with_the_meta_leader_as_leader(mgr):
    mgr.replicate({"a": "1"})
    orders(mgr)
    st = mgr.status()
    assert st.kind == "nats" and st.leader and st.voters == ["n1", "n2", "n3"]
    assert all(m.reachable and m.version for m in st.members)
    names = [g.name for g in st.groups]
    assert names[0] == "meta" and st.groups[0].leader == st.leader
    assert {KV, "stream:ORDERS", "consumer:ORDERS/proc"} <= set(names)
    assert st.groups_total == len(names) and st.next_group_offset is None
    for g in st.groups:
        assert g.leader and g.members == ["n1", "n2", "n3"] and g.quorum == 2, g
        assert "leader NONE" not in group_line(g)
    # One group alone: its own leader and members.
    one = mgr.status(group="stream:ORDERS")
    assert one.group == "stream:ORDERS" and [g.name for g in one.groups] == ["stream:ORDERS"]
    assert one.leader == one.groups[0].leader and one.groups[0].index == 3
    with pytest.raises(InputError, match="bad group"):
        mgr.status(group="streams/ORDERS")


def test_fifty_streams_page_within_the_tool_result_budget(mgr):
    a = mgr.adapter
    for i in range(50):
        a.api(f"STREAM.CREATE.S{i:02}", {"name": f"S{i:02}", "subjects": [f"s{i}.>"]})
    try:
        first = mgr.status()
        assert first.groups_total >= 50 and len(first.groups) == 10
        assert first.next_group_offset == 10
        # What an MCP client reads: the summary line (a line's worth per group) and the
        # compact JSON of the page.
        text = results.result(first).content[0].text
        assert len(text) <= 6000, len(text)
        print(f"cluster_status text with {first.groups_total} groups: {len(text)} characters")
        seen = [g.name for g in first.groups]
        offset = first.next_group_offset
        while offset is not None:
            page = mgr.status(group_offset=offset)
            seen += [g.name for g in page.groups]
            offset = page.next_group_offset
        assert len(seen) == len(set(seen)) == first.groups_total
    finally:
        for i in range(50):
            a.api(f"STREAM.DELETE.S{i:02}")


def test_replicate_read_and_delete_through_the_kv_bucket(mgr):
    out = mgr.replicate({"k1": "v1", "k2": "v2"}).result
    seqs = [e.index for e in out.entries]
    assert seqs == sorted(seqs) and seqs[0] > 0
    assert mgr.read("k1").value == "v1" and mgr.read("k1").served_by in ("n1", "n2", "n3")
    assert mgr.read("k2", "stale").value == "v2"
    gone = mgr.replicate([{"key": "k1", "value": None}]).result.entries[0]
    assert gone.deleted is True
    assert mgr.read("k1").value is None and mgr.read("k1", "stale").value is None
    assert mgr.read("never-written").value is None
    with pytest.raises(InputError, match="bad key"):
        mgr.read("has space")


def test_verify_a_stream_and_the_kv_bucket(mgr):
    orders(mgr)
    mgr.replicate({"x": "1", "y": "2"})
    v = mgr.verify_consistency(group=KV)
    assert v.consistent is True and v.checked == ["n1", "n2", "n3"], v
    assert any("hash to" in r for r in v.reasons) and any("cannot prove" in r for r in v.reasons)
    s = mgr.verify_consistency(group="stream:ORDERS")
    assert s.consistent is True and s.common_index and s.common_index >= 3
    # The meta group's state is not exposed: verify says it could not compare.
    meta = mgr.verify_consistency()
    assert meta.consistent is None and any("not exposed" in r for r in meta.reasons)


@pytest.mark.parametrize("group", [None, KV, "consumer:ORDERS/proc"])
def test_elect_steps_the_groups_leader_down(mgr, group):
    orders(mgr, 0)
    mgr.replicate({"e": "1"})
    before = mgr.status(group=group).leader
    plan = mgr.elect_leader(group=group, dry_run=True).plan
    assert plan.safe and plan.steps[0].action == "step_down" and plan.steps[0].node == before
    r = mgr.elect_leader(group=group, plan_id=plan.plan_id, timeout_s=STEP_DOWN_BOUND_S).result
    assert r.method == "step_down" and r.previous_leader == before
    assert r.leader and r.leader != before, r
    applied = [a for a in mgr.audit.read() if a["operation"] == "elect_leader"]
    assert applied[-1]["outcome"] == "ok", applied[-1]


def test_elect_to_a_named_server_is_refused_with_the_reason(mgr, state):
    st = mgr.status()
    other = next(m for m in st.voters if m != st.leader)
    plan = mgr.elect_leader(other, dry_run=True).plan
    assert not plan.safe and "placement selects a cluster or tags" in plan.reasons[0]
    with pytest.raises(Refused):
        mgr.elect_leader(other)
    assert_refused_audited(state, "elect_leader", "placement")
    assert mgr.status().leader == st.leader
    # Naming the leader itself is nothing to do.
    assert mgr.elect_leader(st.leader).result.method == "none"


def test_snapshot_backs_up_a_stream_through_its_leader(mgr, cluster):
    orders(mgr, 2)
    out = mgr.snapshot(group="stream:ORDERS").result.snapshots
    assert len(out) == 1 and out[0].ok and out[0].snapshot_index >= 2 and out[0].bytes > 0
    files = sorted((cluster.dir / "backups").glob("ORDERS-*.jsonl"))
    lines = files[-1].read_text().splitlines()
    assert json.loads(lines[0])["stream"] == "ORDERS" and len(lines) - 1 == out[0].snapshot_index
    meta = mgr.snapshot().result.snapshots
    assert meta and not any(s.ok for s in meta) and "only a stream" in meta[0].error


def test_health_per_group_and_process_faults(mgr, state):
    assert mgr.health_check().healthy and mgr.health_check(group=KV).healthy
    st = mgr.status()
    follower = next(m for m in st.voters if m != st.leader)
    f = mgr.inject_fault("stop", [follower]).result
    try:
        assert f.affected == [follower]
        h = mgr.health_check()
        assert any(follower in r for r in h.reasons + h.warnings), h
        warn = mgr.status().warnings
        assert any(f"{follower} is unreachable" in w for w in warn), warn
    finally:
        mgr.inject_fault("continue", [follower])
    wait_until(lambda: mgr.health_check().healthy, 20, "the paused server to be current again")
    with pytest.raises(Refused, match="partition"):
        mgr.inject_fault("partition", [follower])
    assert_refused_audited(state, "inject_fault")


def test_refusals_that_apply_to_nats(mgr, state):
    plan = mgr.change_membership("add_learner", "n9", dry_run=True).plan
    assert not plan.safe and "no learners" in plan.reasons[0]
    with pytest.raises(Refused):
        mgr.change_membership("promote", "n1", dry_run=False)
    assert_refused_audited(state, "change_membership", "no learners")
    with pytest.raises(NotSupported):
        mgr.adapter.get("a", "linearizable", node="n1")
