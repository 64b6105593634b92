"""Every manager operation against real local raft_core clusters (raft-node processes)."""

from __future__ import annotations

import contextlib

import pytest
from manager_helpers import (
    STEADY,
    audit_lines,
    last_audit,
    leader_of,
    local_cluster,
    make_manager,
    node_status,
)
from testkit import wait_until

from mcp_server.core.config import ClusterConfig, Config, TLSConfig
from mcp_server.core.errors import Refused, Unreachable
from mcp_server.core.models import ElectionResult, MembershipChange, Plan, RecoverResult
from mcp_server.core.plans import PlanStore
from mcp_server.local import LocalCluster
from mcp_server.manager import Manager

pytestmark = pytest.mark.processes


def test_status_health_replicate_read_snapshot_verify(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc:
        leader = leader_of(lc)
        with make_manager(lc.dir, state) as mgr:
            # A follower names the leader once its first heartbeat arrives: until then
            # the view rightly warns that it does not follow.
            st = wait_until(
                lambda: (s := mgr.status()).warnings == [] and s, 10, "every member following"
            )
            assert st.leader == leader and st.term and st.quorum == 2
            assert st.voters == ["n1", "n2", "n3"] and st.learners == []
            assert [m.id for m in st.members] == ["n1", "n2", "n3"]
            assert all(m.reachable and m.voter and m.process == "running" for m in st.members)
            assert {m.role for m in st.members} == {"leader", "follower"}
            assert st.warnings == []

            h = mgr.health_check("change_membership")
            assert h.healthy and h.safe and h.leader == leader

            r = mgr.replicate([{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]).result
            assert [e.key for e in r.entries] == ["a", "b"] and r.leader == leader
            assert r.entries[1].index == r.entries[0].index + 1
            assert mgr.read("a").value == "1"
            assert mgr.read("missing").value is None
            # Any member serves a linearizable read (followers through ReadIndex), and
            # a follower that served one is not taken for the leader.
            follower = next(n for n in ("n1", "n2", "n3") if n != leader)
            out = mgr.adapter.get("a", "linearizable", node=follower)
            assert out.value == "1" and out.node == follower
            mgr.adapter._leader_addr = None  # as after a failover: the leader unknown
            for _ in range(3):
                assert mgr.read("a").value == "1"
            assert mgr.adapter._leader_addr is None
            r = mgr.replicate([{"key": "c", "value": "3"}]).result
            assert r.leader == leader
            wait_until(lambda: mgr.read("b", "stale").value == "2")
            d = mgr.replicate({"a": None}).result
            assert d.entries[0].deleted is True and mgr.read("a").value is None
            assert last_audit(state)["operation"] == "replicate"

            snap = mgr.snapshot().result
            assert [s.node for s in snap.snapshots] == ["n1", "n2", "n3"]
            assert all(s.ok and s.snapshot_index >= 3 for s in snap.snapshots)
            one = mgr.snapshot("n2").result
            assert [s.node for s in one.snapshots] == ["n2"]

            v = mgr.verify_consistency()
            assert v.consistent is True, v
            assert v.divergences == [] and v.checked == ["n1", "n2", "n3"]
            assert v.common_index >= 5 and v.log_indexes_checked >= 1

            ops = [x["operation"] for x in audit_lines(state)]
            assert "snapshot" in ops and "cluster_status" not in ops  # reads are not audited


def test_elect_transfers_and_campaigns(tmp_path, state):
    # Steady elections (1-2 s): the "nothing to do" answer below needs the leader the
    # transfer made to still lead when elect_leader plans. With 0.6-1.2 s timeouts a
    # raft-node starved of CPU on a loaded machine (load 10 on 2 cores) missed enough
    # heartbeats for a follower to start an election in between, and elect_leader
    # rightly planned a campaign. They also leave a leaderless window after the kill.
    with (
        local_cluster(tmp_path / "c", election_ticks=STEADY) as lc,
        make_manager(lc.dir, state) as mgr,
    ):
        st = wait_until(lambda: (s := mgr.status()).leader and not s.warnings and s, 20, "a leader")
        old = st.leader
        target = next(m.id for m in st.members if m.id != old)
        out = mgr.elect_leader(target)
        assert out.outcome == "applied" and out.plan.safe
        e = out.result
        assert isinstance(e, ElectionResult)
        assert (e.method, e.previous_leader, e.leader) == ("transfer", old, target)
        assert e.term > e.previous_term and e.seconds < 5
        # Every member follows the new leader before we ask again.
        wait_until(lambda: (s := mgr.status()).leader == target and not s.warnings, 20)

        same = mgr.elect_leader().result
        assert same.method == "none" and same.leader == target
        assert same.term == e.term, "an election happened although the leader was steady"

        # Leaderless: kill the leader, then make the cluster elect at once.
        mgr.inject_fault("kill", [target])
        e = mgr.elect_leader().result
        assert e.method in ("campaign", "none")  # "none" if the timers beat us
        assert e.leader not in (None, target)
        assert e.method == "none" or e.previous_leader == target
        assert mgr.status().leader == e.leader


def test_membership_add_promote_remove_leader_with_processes(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc, make_manager(lc.dir, state) as mgr:
        out = mgr.change_membership("add_learner", "n4")  # dry run by default
        assert out.outcome == "planned" and out.result is None
        plan = out.plan
        assert isinstance(plan, MembershipChange) and plan.safe and not plan.applied
        assert [s.action for s in plan.steps] == [
            "start_process",
            "add_learner",
            "wait_caught_up",
        ]
        assert last_audit(state)["outcome"] == "planned"

        r = mgr.change_membership("add_learner", "n4", dry_run=False).result
        assert r.applied and r.learners_after == ["n4"]
        assert all(s.ok for s in r.results)
        st = mgr.status()
        n4 = next(m for m in st.members if m.id == "n4")
        assert n4.learner and n4.role == "learner" and n4.process == "running"

        r = mgr.change_membership("promote", "n4", dry_run=False).result
        assert r.voters_after == ["n1", "n2", "n3", "n4"] and r.quorum_after == 3

        leader = mgr.status().leader
        r = mgr.change_membership("remove", leader, dry_run=False).result
        actions = [s.action for s in r.results]
        assert actions == ["transfer_leadership", "remove", "stop_process"], actions
        st = mgr.status()
        assert leader not in st.voters and st.leader != leader and len(st.voters) == 3
        assert leader not in [m.id for m in st.members]  # its process is gone too
        assert mgr.verify_consistency().consistent is True
        lines = [x for x in audit_lines(state) if x["operation"] == "change_membership"]
        assert [x["outcome"] for x in lines] == ["planned", "ok", "ok", "ok"]


def test_add_voter_flow_and_learner_removal(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc, make_manager(lc.dir, state) as mgr:
        r = mgr.change_membership("add_voter", "n4", dry_run=False).result
        assert [s.action for s in r.results] == [
            "start_process",
            "add_learner",
            "wait_caught_up",
            "promote",
        ]
        assert r.voters_after == ["n1", "n2", "n3", "n4"]
        r = mgr.change_membership("add_learner", "n5", dry_run=False)
        r = mgr.change_membership("remove", "n5", dry_run=False).result
        assert r.learners_after == [] and [s.action for s in r.results] == [
            "remove",
            "stop_process",
        ]


def test_recover_restarts_and_waits_for_catch_up(tmp_path, state):
    # Steady elections: a spurious one on a loaded machine is not what this tests.
    with (
        local_cluster(tmp_path / "c", election_ticks=STEADY) as lc,
        make_manager(lc.dir, state) as mgr,
    ):
        leader = wait_until(lambda: mgr.status().leader, 10, "a leader")
        victim = next(n for n in ("n1", "n2", "n3") if n != leader)
        mgr.inject_fault("kill", [victim])
        mgr.replicate({f"k{i}": str(i) for i in range(20)})
        st = mgr.status()
        assert any(f"{victim} is unreachable" in w for w in st.warnings)
        seen = []
        r = mgr.recover_node(victim, progress=lambda d, t, m: seen.append(m)).result
        assert isinstance(r, RecoverResult)
        assert r.action == "restarted" and r.caught_up and r.applied_index >= r.target_index
        assert r.target_index >= 22 and seen
        # caught up; the restarted member's other signs of health (it follows the
        # leader, its progress is replicating) follow within a few heartbeats. 30 s:
        # each status asks three processes, which a loaded machine answers slowly.
        wait_until(lambda: mgr.status().warnings == [], 30, "no warnings")
        again = mgr.recover_node(victim).result
        assert again.action == "waited" and again.caught_up


def test_fault_injection_partition_heal_restart(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc, make_manager(lc.dir, state) as mgr:
        leader = mgr.status().leader
        victim = next(n for n in ("n1", "n2", "n3") if n != leader)
        f = mgr.inject_fault("partition", [victim]).result
        assert f.kind == "partition" and sorted(f.affected) == ["n1", "n2", "n3"]
        assert sorted(f.faults[victim]["drop"]) == sorted({"n1", "n2", "n3"} - {victim})
        wait_until(lambda: node_status(lc, victim)["role"] in ("pre_candidate", "candidate"))
        st = mgr.status()
        assert any(f"{victim} does not follow" in w for w in st.warnings)
        assert st.leader == leader  # the majority side keeps its leader
        h = mgr.inject_fault("heal").result
        assert sorted(h.affected) == ["n1", "n2", "n3"]
        wait_until(lambda: mgr.health_check().healthy, 10)
        r = mgr.inject_fault("restart", [victim]).result
        assert r.affected == [victim]
        wait_until(lambda: mgr.health_check().healthy, 10)
        plan = mgr.inject_fault("kill", ["n1", "n2"], dry_run=True).plan
        assert isinstance(plan, Plan) and any("stops committing" in x for x in plan.risks)


def test_remote_cluster_by_endpoints(tmp_path, state):
    """A cluster known only by one API endpoint: members are discovered from it, processes
    are not ours (recovery gives instructions), fault injection needs the node flag."""
    with local_cluster(tmp_path / "c", allow_fault_injection=False) as lc:
        first = lc.nodes[0].api_address
        # The cluster is TLS (the launcher's default): clusters.yaml names its CA.
        tls = TLSConfig(ca_file=lc.settings.ca_file)
        c = ClusterConfig(name="remote", endpoints=[first], mode="sandbox", tls=tls)
        cfg = Config(clusters={"remote": c}, audit_log=str(state / "audit.jsonl"))
        with Manager(c, config=cfg, plans=PlanStore(state / "plans")) as mgr:
            st = mgr.status()
            assert [m.id for m in st.members] == ["n1", "n2", "n3"] and st.leader
            assert all(m.process is None for m in st.members)  # not ours to manage
            leader = st.leader
            victim = next(n for n in ("n2", "n3") if n != leader)
            assert mgr.replicate({"r": "1"}).result.entries[0].key == "r"
            lc.kill(victim)
            r = mgr.recover_node(victim).result
            assert r.action == "manual" and not r.caught_up
            assert any("restart raft-node" in i for i in r.instructions)
            with pytest.raises(Refused, match="needs a local cluster"):
                mgr.inject_fault("kill", [leader])
            with pytest.raises(Refused, match="does not allow fault injection"):
                mgr.inject_fault("partition", [leader])
            # once the operator restarted it, recover waits until it has caught up
            lc.start(victim)
            r = mgr.recover_node(victim).result
            assert r.action == "waited" and r.caught_up


def test_only_start_local_starts_the_embedded_cluster(state):
    """A read never starts the embedded default cluster; ``start_local=True`` does, and
    says so in the manager and in the next status answer."""
    with Manager.open() as mgr, pytest.raises(Unreachable, match="cluster up"):
        mgr.status()
    d = state / "agent-raft-manager" / "local"
    assert not (d / "cluster.yaml").exists()
    try:
        with Manager.open(start_local=True) as mgr:
            assert mgr.started is not None and mgr.started.dir == str(d)
            st = mgr.status()
            assert st.notices == [f"started the local cluster in {d}"] and st.leader
            assert mgr.status().notices == [], "said once, not by every later answer"
        with Manager.open(start_local=True) as again:  # already running: nothing started
            assert again.started is None and again.status().notices == []
    finally:
        with contextlib.suppress(Exception):
            LocalCluster.load(d).down(grace_s=2.0)
