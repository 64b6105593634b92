"""Failover, recovery and membership on a real NATS JetStream cluster: kill -9 of the
meta leader and of a stream leader (new leaders within a bound), recover_node, a
removal refused while it would break a group's quorum (audited, nothing changed), a
stale plan refused, and a dead server removed and replaced by a new one. One cluster
for the module; the tests run in order and each leaves three current servers."""

from __future__ import annotations

import time

import pytest
from nats_helpers import audit_lines, module_fixtures
from testkit import wait_until

from mcp_server.core.errors import Refused

pytestmark = pytest.mark.processes

KV = "stream:KV_raft-manager"
FAILOVER_BOUND_S = 15.0  # JetStream's election timeouts are seconds (measured: ~4 s)


# Every test starts with a key in the KV stream (a group to change the membership of).
cluster, mgr = module_fixtures(lambda m: m.replicate({"seed": "1"}))


def new_leader_after_kill(mgr, group: str | None) -> tuple[str, str, float]:
    """Kill -9 the group's leader; (old, new, seconds until another server leads)."""
    old = mgr.status(group=group).leader
    assert old
    t0 = time.monotonic()
    mgr.inject_fault("kill", [old])
    new = wait_until(
        lambda: (ld := mgr.status(group=group).leader) not in (None, old) and ld,
        FAILOVER_BOUND_S,
        f"a new {group or 'meta'} leader after {old} was killed",
    )
    return old, new, time.monotonic() - t0


@pytest.mark.parametrize("group", [None, KV])
def test_kill_9_of_a_leader_elects_a_new_one_then_recover(mgr, group):
    old, new, took = new_leader_after_kill(mgr, group)
    assert new != old and took < FAILOVER_BOUND_S
    # The KV bucket keeps taking writes with two of three replicas.
    mgr.replicate({"during": old})
    assert mgr.read("during").value == old
    plan = mgr.recover_node(old, dry_run=True).plan
    assert [s.action for s in plan.steps] == ["start_process", "wait_caught_up"]
    r = mgr.recover_node(old, plan_id=plan.plan_id, timeout_s=30).result
    assert r.action == "restarted" and r.caught_up
    wait_until(lambda: mgr.health_check(group=KV).healthy, 30, f"{old} current in {KV}")
    assert mgr.verify_consistency(group=KV).consistent is True


def test_removal_that_would_break_a_group_quorum_is_refused(mgr, state):
    st = mgr.status()
    down, keep = [m for m in st.voters if m != st.leader][:2]
    mgr.inject_fault("kill", [down])
    try:
        plan = mgr.change_membership("remove", keep, dry_run=True).plan
        assert not plan.safe
        text = " ".join(plan.reasons)
        assert f"removing {keep} would leave" in text and KV in text, plan.reasons
        with pytest.raises(Refused):
            mgr.change_membership("remove", keep, dry_run=False)
        line = audit_lines(state)[-1]
        assert line["operation"] == "change_membership" and line["outcome"] == "refused"
        assert mgr.status().voters == st.voters  # nothing changed
    finally:
        mgr.recover_node(down, timeout_s=30)


def test_a_stale_plan_is_refused(mgr, state):
    plan = mgr.change_membership("remove", "n1", dry_run=True).plan
    mgr.elect_leader()  # the meta leader changes: the plan no longer matches
    with pytest.raises(Refused, match="plan"):
        mgr.change_membership("remove", "n1", dry_run=False, plan_id=plan.plan_id)
    assert audit_lines(state)[-1]["outcome"] == "refused"
    assert "n1" in mgr.status().voters


def test_a_dead_server_is_removed_and_replaced(mgr, cluster):
    st = mgr.status()
    dead = next(m for m in st.voters if m != st.leader)
    mgr.inject_fault("kill", [dead])
    plan = mgr.change_membership("remove", dead, dry_run=True).plan
    assert plan.safe and [s.action for s in plan.steps] == ["remove", "stop_process"]
    out = mgr.change_membership("remove", dead, dry_run=False, plan_id=plan.plan_id).result
    assert dead not in out.voters_after and len(out.voters_after) == 2
    assert dead not in [s.name for s in type(cluster).load(cluster.dir).servers]

    add = mgr.change_membership("add_voter", "n4", dry_run=True).plan
    assert add.safe and [s.action for s in add.steps] == ["start_process", "wait_caught_up"]
    done = mgr.change_membership("add_voter", "n4", dry_run=False, plan_id=add.plan_id).result
    assert "n4" in done.voters_after and all(r.ok for r in done.results)
    # The meta leader places the KV stream's missing replica on the new server.
    wait_until(
        lambda: "n4" in (g := mgr.status(group=KV).groups[0]).members and not g.lagging,
        30,
        "the KV stream re-placed onto n4",
    )
    assert mgr.read("seed").value == "1"
    assert mgr.verify_consistency(group=KV).consistent is True
