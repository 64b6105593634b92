"""Every refusal rule, tried for real against local clusters: refused, with its reason,
nothing changed, and one audit line (reason, redacted arguments) per refusal."""

from __future__ import annotations

import threading

import pytest
from manager_helpers import (
    STEADY,
    assert_audited,
    audit_lines,
    leader_of,
    local_cluster,
    make_manager,
    node_api,
    node_status,
    refused,
    set_faults,
    spare_address,
)
from proc_helpers import http_client
from testkit import wait_until

from mcp_server.local import LocalCluster

pytestmark = pytest.mark.processes


def _down(mgr, node: str) -> bool:
    """The manager sees ``node`` down (its status unreachable) and a leader up."""
    st = mgr.status()
    return st.leader is not None and not next(m for m in st.members if m.id == node).reachable


# -- membership ------------------------------------------------------------------------


def test_promote_of_a_lagging_learner_is_refused(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc, make_manager(lc.dir, state) as mgr:
        # A learner whose process does not run: the leader can replicate nothing to it.
        peer = spare_address(lc)
        mgr.change_membership("add_learner", "n9", peer_address=peer, dry_run=True)
        r = mgr.adapter.add_learner("n9", peer, None)  # add it without waiting to catch up
        assert "n9" in r.learners
        mgr.replicate({f"k{i}": "v" for i in range(15)})
        refused(
            lambda: mgr.change_membership("promote", "n9", dry_run=False),
            "cannot promote a lagging learner",
            "n9 is",
            "entries behind",
        )
        assert_audited(state, "change_membership", "lagging learner")
        assert mgr.status().learners == ["n9"]  # nothing changed
        plan = mgr.change_membership("promote", "n9", dry_run=True).plan
        assert not plan.safe and plan.reasons


def test_removal_that_breaks_quorum_is_refused(tmp_path, state):
    # Steady elections (1-2 s): the refusals below name the available voters, counted
    # by a leader's view. With 0.2-0.4 s timeouts a raft-node starved of CPU on a loaded
    # machine missed heartbeats, the two survivors held an election, and the plan met
    # a cluster without a leader instead.
    with (
        local_cluster(tmp_path / "c", election_ticks=STEADY) as lc,
        make_manager(lc.dir, state) as mgr,
    ):
        leader = leader_of(lc)
        a, b = [n for n in ("n1", "n2", "n3") if n != leader]
        lc.kill(b)
        wait_until(lambda: _down(mgr, b), 20, f"{b} seen down")
        e = refused(
            lambda: mgr.change_membership("remove", a, dry_run=False),
            f"removing {a} would leave 1 available voter",
            "fewer than its quorum of 2",
        )
        assert e.operation == "change_membership"
        line = assert_audited(state, "change_membership", "fewer than its quorum")
        assert line["arguments"]["node_id"] == a and line["arguments"]["action"] == "remove"
        assert sorted(mgr.status().voters) == ["n1", "n2", "n3"]
        # Removing the dead member instead is fine (2 of the 2 remaining are available).
        plan = mgr.change_membership("remove", b, dry_run=True).plan
        assert plan.safe, plan.reasons
        # Two voters down: no election can succeed; `elect` refuses to pretend. The
        # leader steps down within an election timeout (check-quorum); 20 s for a
        # loaded machine.
        lc.kill(a)
        wait_until(lambda: mgr.status().leader is None, 20)
        refused(lambda: mgr.elect_leader(), "quorum lost")
        assert_audited(state, "elect_leader", "quorum lost")


def test_change_while_another_is_in_flight_or_joint_is_refused(tmp_path, state):
    # Slow elections (1-2 s) so a 300 ms delay on the leader's traffic keeps it leading
    # while each configuration change takes ~1 s to commit.
    with local_cluster(tmp_path / "c", election_ticks=50) as lc, make_manager(lc.dir, state) as mgr:
        leader = leader_of(lc)
        set_faults(lc, leader, {"delay_ms": 300})
        url = f"{node_api(lc, leader)}/v1/admin/membership"
        peer = spare_address(lc)

        def change(body: dict) -> None:
            with http_client(timeout=15) as h:
                h.post(url, json=body)

        t = threading.Thread(
            target=change, args=({"action": "add_learner", "id": "n9", "peer_address": peer},)
        )
        t.start()
        try:
            wait_until(
                lambda: (s := node_status(lc, leader))["pending_conf_index"] > s["applied_index"],
                5,
                interval=0.01,
            )
            refused(
                lambda: mgr.change_membership(
                    "add_learner", "n8", peer_address=spare_address(lc, 1), dry_run=False
                ),
                "another membership change is in flight",
            )
            assert_audited(state, "change_membership", "in flight")
        finally:
            t.join()
        assert "n8" not in mgr.status().learners
        # A voter change goes through a joint configuration; try a change while it is in force.
        t = threading.Thread(target=change, args=({"action": "promote", "id": "n9"},))
        t.start()
        try:
            wait_until(lambda: node_status(lc, leader)["joint"], 5, interval=0.01)
            refused(
                lambda: mgr.change_membership("remove", "n9", dry_run=False),
                "joint configuration",
            )
            assert_audited(state, "change_membership", "joint configuration")
        finally:
            t.join()
        set_faults(lc, leader, {"clear": True})


def safe_plan(mgr, action: str, node: str):
    """A dry-run plan once it is safe: right after start (or a transfer), a loaded
    machine can make the cluster look unsettled for a moment, and that refusal is not
    what the test is about."""

    def attempt():
        plan = mgr.change_membership(action, node, dry_run=True).plan
        return plan if plan.safe else None

    return wait_until(attempt, 20, f"a safe plan to {action} {node}", interval=0.2)


def test_stale_plan_id_is_refused(tmp_path, state):
    # Steady elections (1-2 s): the plan must go stale because of the transfer below,
    # not because a starved process missed heartbeats.
    with (
        local_cluster(tmp_path / "c", election_ticks=STEADY) as lc,
        make_manager(lc.dir, state) as mgr,
    ):
        leader = leader_of(lc)
        follower = next(n for n in ("n1", "n2", "n3") if n != leader)
        plan = safe_plan(mgr, "remove", follower)
        assert plan.plan_id.startswith("p-")
        leader = plan.leader  # the leader the plan is bound to
        other = next(n for n in ("n1", "n2", "n3") if n not in (leader, follower))
        mgr.elect_leader(other)  # the term and the leader change
        refused(
            lambda: mgr.change_membership("remove", follower, dry_run=False, plan_id=plan.plan_id),
            f"plan {plan.plan_id} no longer matches the cluster",
            "term",
            f"leader {leader} -> {other}",
        )
        line = assert_audited(state, "change_membership", "no longer matches")
        assert line["plan_id"] == plan.plan_id
        assert follower in mgr.status().voters
        # A plan for other arguments, or one already used, is refused too.
        fresh = safe_plan(mgr, "remove", follower)
        refused(
            lambda: mgr.change_membership("remove", other, dry_run=False, plan_id=fresh.plan_id),
            "was made for",
        )
        done = mgr.change_membership(
            "remove", follower, dry_run=False, plan_id=fresh.plan_id
        ).result
        assert done.applied and follower not in done.voters_after
        refused(
            lambda: mgr.change_membership("remove", follower, dry_run=False, plan_id=fresh.plan_id),
            "unknown plan id",
        )


# -- leadership ------------------------------------------------------------------------


def test_elect_refuses_non_voter_unreachable_and_cut_off_targets(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc, make_manager(lc.dir, state) as mgr:
        mgr.change_membership("add_learner", "n4", dry_run=False)
        refused(lambda: mgr.elect_leader("n4"), "n4 is a learner, not a voter")
        assert_audited(state, "elect_leader", "learner")
        refused(lambda: mgr.elect_leader("n7"), "n7 is not a voter")
        leader = leader_of(lc)
        a, b = [n for n in ("n1", "n2", "n3") if n != leader]
        lc.kill(a)
        refused(lambda: mgr.elect_leader(a), f"{a} is unreachable")
        assert_audited(state, "elect_leader", "unreachable")
        # Cut off from the leader but answering the manager: refused, not attempted.
        mgr.recover_node(a)
        mgr.inject_fault("partition", [b])
        wait_until(lambda: node_status(lc, b)["role"] != "follower")
        refused(lambda: mgr.elect_leader(b), f"{b} does not follow leader")
        assert mgr.status().leader == leader


def test_elect_refuses_a_lagging_target(tmp_path, state):
    # Elections after 2-4 s, so a follower whose traffic is delayed 1.5 s keeps following.
    with (
        local_cluster(tmp_path / "c", election_ticks=100) as lc,
        make_manager(lc.dir, state) as mgr,
    ):
        leader = leader_of(lc)
        slow = next(n for n in ("n1", "n2", "n3") if n != leader)
        set_faults(lc, slow, {"delay_ms": 1500})
        mgr.replicate({f"k{i}": "v" for i in range(20)})
        refused(lambda: mgr.elect_leader(slow), f"{slow} is lagging", "entries behind")
        assert_audited(state, "elect_leader", "lagging")
        assert mgr.status().leader == leader
        set_faults(lc, slow, {"clear": True})


# -- policy: modes, read-only, allowed operations, secrets -----------------------------


def test_policy_refusals_on_a_real_cluster(tmp_path, state, monkeypatch):
    token = "tok-" + "9f8e7d6c5b4a"
    (tmp_path / "token").write_text(token + "\n")
    with local_cluster(tmp_path / "c", api_token_file=str(tmp_path / "token")) as lc:
        monkeypatch.setenv("TEST_RAFT_TOKEN", token)
        prod = make_manager(
            lc.dir, state, name="prod", mode="production", token_env="TEST_RAFT_TOKEN"
        )
        ro = make_manager(lc.dir, state, name="ro", read_only=True)
        allow = make_manager(lc.dir, state, name="allow", allowed_operations=["status", "get"])

        # Production refuses fault injection, even with a plan.
        refused(lambda: prod.inject_fault("kill", ["n1"]), "production", "fault injection")
        assert_audited(state, "inject_fault", "fault injection is refused")
        refused(lambda: prod.inject_fault("partition", ["n1"], dry_run=True), "fault injection")
        # Production needs plan, then apply, for every mutation.
        refused(
            lambda: prod.replicate({"k": "v"}),
            "needs a plan id",
        )
        assert_audited(state, "replicate", "needs a plan id")
        refused(lambda: prod.change_membership("remove", "n3", dry_run=False), "needs a plan id")
        refused(lambda: prod.elect_leader("n1"), "needs a plan id")
        refused(lambda: prod.snapshot(), "needs a plan id")
        plan = prod.replicate({"k": "v"}, dry_run=True).plan
        assert plan.safe and plan.steps[0].detail == "put k"
        done = prod.replicate({"k": "v"}, plan_id=plan.plan_id).result
        assert done.entries[0].key == "k"
        assert prod.read("k").value == "v"  # reads need no plan
        assert prod.status().leader is not None

        # Read-only refuses every mutation, still plans and reads.
        refused(lambda: ro.replicate({"k": "w"}), "read-only")
        assert_audited(state, "replicate", "read-only")
        refused(lambda: ro.elect_leader(), "read-only")
        refused(lambda: ro.recover_node("n1"), "read-only")
        assert ro.change_membership("remove", "n3", dry_run=True).plan.safe
        assert ro.read("k").value == "v"

        # Operations outside allowed_operations are refused, reads included.
        refused(lambda: allow.verify_consistency(), "not in the allowed_operations")
        assert_audited(state, "verify_consistency", "allowed_operations")
        refused(lambda: allow.replicate({"k": "x"}), "not in the allowed_operations")
        assert allow.status().leader is not None and allow.read("k").value == "v"

        # The token never appears in the audit log or in any answer.
        audit = (state / "audit.jsonl").read_text()
        assert token not in audit and "9f8e7d6c5b4a" not in audit
        for out in (prod.status(), prod.health_check(), prod.verify_consistency(), plan):
            assert token not in out.model_dump_json()
        lines = audit_lines(state)
        assert sum(x["outcome"] == "refused" for x in lines) == 11
        assert all("time" in x and "cluster" in x and "arguments" in x for x in lines)
        # Without the token the nodes say 401, and the manager says what to do.
        monkeypatch.setenv("TEST_RAFT_TOKEN", "wrong")
        bad = make_manager(lc.dir, state, name="bad", token_env="TEST_RAFT_TOKEN")
        with pytest.raises(Exception) as e:
            bad.read("k")
        assert "token" in str(e.value).lower()
        for m in (prod, ro, allow, bad):
            m.close()


def test_sandbox_never_applies_an_unsafe_plan(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc, make_manager(lc.dir, state) as mgr:
        leader = leader_of(lc)
        a, b = [n for n in ("n1", "n2", "n3") if n != leader]
        LocalCluster.load(lc.dir).kill(b)
        wait_until(lambda: _down(mgr, b), 20, f"{b} seen down")
        refused(lambda: mgr.change_membership("remove", a, dry_run=False), "fewer than its quorum")
        plan = mgr.change_membership("remove", a, dry_run=True).plan
        assert not plan.safe and not plan.applied
        refused(
            lambda: mgr.change_membership("remove", a, dry_run=False, plan_id=plan.plan_id),
            "fewer than its quorum",
        )
        assert sorted(mgr.status().voters) == ["n1", "n2", "n3"]
