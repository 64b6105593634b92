"""Membership changes, failover and the guardrails on a real etcd cluster: each change is
planned, checked, applied through the Manager and audited; each refusal changes nothing.
One cluster per module and etcd version; every test leaves three healthy voters."""

from __future__ import annotations

import time

import pytest
from etcd_helpers import etcd_manager, module_fixtures
from manager_helpers import assert_audited, audit_lines, refused
from testkit import wait_until

from mcp_server.local.etcd import EtcdLocalCluster

pytestmark = pytest.mark.processes

FAILOVER_BOUND_S = 10.0
cluster, mgr = module_fixtures()


def test_learner_added_started_promoted_then_removed_as_leader(mgr, cluster, state):
    plan = mgr.change_membership("add_learner", "n4", dry_run=True).plan
    assert plan.safe, plan.reasons
    # etcd: the member is added first, then its process starts.
    assert [s.action for s in plan.steps] == ["add_learner", "start_process", "wait_caught_up"]
    seen: list[str] = []
    done = mgr.change_membership(
        "add_learner",
        "n4",
        dry_run=False,
        plan_id=plan.plan_id,
        progress=lambda d, t, m: seen.append(m),
    ).result
    assert done.applied and done.learners_after == ["n4"], done
    assert all(r.ok for r in done.results)
    st = mgr.status()
    n4 = next(m for m in st.members if m.id == "n4")
    assert n4.learner and n4.role == "learner" and n4.reachable and n4.caught_up
    assert n4.process == "running" and n4.name == "n4"
    # A learner refuses writes; the manager still writes through the others.
    mgr.replicate({"after-learner": "x"})
    assert mgr.read("after-learner", consistency="stale").value == "x"

    promoted = mgr.change_membership("promote", "n4", dry_run=False).result
    assert promoted.voters_after == ["n1", "n2", "n3", "n4"]
    assert any("4 voters tolerate" in r for r in promoted.risks)
    mgr.elect_leader("n4")
    assert mgr.status().leader == "n4"

    lc = EtcdLocalCluster.load(cluster.dir)
    pid = lc.member("n4").pid
    removal = mgr.change_membership("remove", "n4", dry_run=True).plan
    assert [s.action for s in removal.steps] == ["transfer_leadership", "remove", "stop_process"]
    out = mgr.change_membership("remove", "n4", dry_run=False, plan_id=removal.plan_id).result
    assert out.voters_after == ["n1", "n2", "n3"]
    st = mgr.status()
    assert st.leader in ("n1", "n2", "n3") and "n4" not in [m.id for m in st.members]
    # The removed member's process exits by itself (etcd stops a removed member).
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
    log = (cluster.dir / "n4.log").read_text()
    assert "removed" in log.lower()
    assert [x["outcome"] for x in audit_lines(state) if x["operation"] == "change_membership"] == [
        "planned",
        "ok",
        "ok",
        "planned",
        "ok",
    ]


def test_unsafe_removal_is_refused_and_changes_nothing(mgr, cluster, state):
    leader = mgr.status().leader
    a, b = [n for n in ("n1", "n2", "n3") if n != leader]
    mgr.inject_fault("kill", [b])
    try:
        e = refused(
            lambda: mgr.change_membership("remove", a, dry_run=False),
            f"removing {a} would leave 1 available voter",
            "fewer than its quorum of 2",
        )
        assert e.operation == "change_membership"
        line = assert_audited(state, "change_membership", "fewer than its quorum")
        assert line["arguments"]["node_id"] == a
        assert mgr.status().voters == ["n1", "n2", "n3"]
        # The unsafe plan, saved by a dry run, is never applied either.
        plan = mgr.change_membership("remove", a, dry_run=True).plan
        assert not plan.safe and not plan.applied
        refused(
            lambda: mgr.change_membership("remove", a, dry_run=False, plan_id=plan.plan_id),
            "fewer than its quorum",
        )
        assert mgr.status().voters == ["n1", "n2", "n3"]
        # Removing the dead member instead would be safe.
        assert mgr.change_membership("remove", b, dry_run=True).plan.safe
    finally:
        r = mgr.recover_node(b).result
    assert r.action == "restarted" and r.caught_up
    assert mgr.status().reachable_voters == 3


def test_stale_plan_is_refused(mgr, state):
    st = mgr.status()
    follower = next(n for n in st.voters if n != st.leader)
    other = next(n for n in st.voters if n not in (st.leader, follower))
    plan = mgr.change_membership("remove", follower, dry_run=True).plan
    assert plan.safe
    mgr.elect_leader(other)  # term and leader change
    refused(
        lambda: mgr.change_membership("remove", follower, dry_run=False, plan_id=plan.plan_id),
        f"plan {plan.plan_id} no longer matches the cluster",
        f"leader {st.leader} -> {other}",
    )
    line = assert_audited(state, "change_membership", "no longer matches")
    assert line["plan_id"] == plan.plan_id
    assert mgr.status().voters == ["n1", "n2", "n3"]


def test_production_needs_a_plan_and_refuses_fault_injection(cluster, state):
    with etcd_manager(cluster, state, name="prod", mode="production", local=False) as prod:
        refused(lambda: prod.inject_fault("kill", ["n1"]), "fault injection")
        assert_audited(state, "inject_fault", "fault injection is refused")
        refused(lambda: prod.replicate({"k": "v"}), "needs a plan id")
        assert_audited(state, "replicate", "needs a plan id")
        refused(lambda: prod.change_membership("remove", "n3", dry_run=False), "needs a plan id")
        refused(lambda: prod.elect_leader("n1"), "needs a plan id")
        assert prod.status().voters == ["n1", "n2", "n3"]
        assert prod.read("k").value is None
        plan = prod.replicate({"k": "v"}, dry_run=True).plan
        assert prod.replicate({"k": "v"}, plan_id=plan.plan_id).result.entries[0].key == "k"
        assert prod.read("k").value == "v"
        assert not prod.adapter.can_control_processes  # remote: no process control
    with etcd_manager(cluster, state, name="ro", read_only=True) as ro:
        refused(lambda: ro.replicate({"k": "w"}), "read-only")
        assert_audited(state, "replicate", "read-only")
        assert ro.change_membership("remove", "n3", dry_run=True).plan.safe  # plans still work
        assert ro.read("k").value == "v"
    with etcd_manager(cluster, state, name="allow", allowed_operations=["status", "get"]) as al:
        refused(lambda: al.verify_consistency(), "not in the allowed_operations")
        assert_audited(state, "verify_consistency", "allowed_operations")
        assert al.status().leader is not None and al.read("k").value == "v"


def test_leader_killed_then_a_new_leader_within_a_bound(mgr, cluster, state):
    old = mgr.status()
    mgr.inject_fault("kill", [old.leader])
    t0 = time.monotonic()
    st = wait_until(
        lambda: (s := mgr.status()).leader not in (None, old.leader) and s,
        FAILOVER_BOUND_S,
        "a new leader",
        interval=0.1,
    )
    took = time.monotonic() - t0
    assert st.term > old.term and took < FAILOVER_BOUND_S
    dead = next(m for m in st.members if m.id == old.leader)
    assert not dead.reachable and dead.process == "stopped"
    assert any(f"voter {old.leader} is unreachable" in w for w in st.warnings)
    # Seen as a remote cluster, recovery is the operator's: the manual steps.
    with etcd_manager(cluster, state, name="remote", mode="production", local=False) as remote:
        plan = remote.recover_node(old.leader, dry_run=True).plan
        assert [s.action for s in plan.steps] == ["manual", "wait_caught_up"]
        manual = remote.recover_node(old.leader, plan_id=plan.plan_id).result
        assert manual.action == "manual" and not manual.caught_up
        assert any(f"restart etcd for {old.leader}" in i for i in manual.instructions)
    r = mgr.recover_node(old.leader).result
    assert r.action == "restarted" and r.caught_up
    assert mgr.status().reachable_voters == 3
