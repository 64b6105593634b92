"""Scenario tests: membership changes and snapshots, on the deterministic simulator.

Each test tells one story (its docstring) about a rule the engine must keep when the
configuration changes or a log is compacted. Seeds are fixed and time is virtual, so a
failure replays exactly; every test checks the rule itself (not just "it didn't
crash"), so breaking that rule in the engine makes the test fail.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from simtools_membership import (
    MT,
    OnceHook,
    acknowledged_writes,
    add_learner,
    applied,
    assert_same_state,
    caught_up,
    converge,
    is_joint_entry,
    is_leave_entry,
    leader_ready,
    make_cluster,
    member_terms,
    progress_of,
    propose_puts,
    snapshot_message,
    start_clients,
    stop_clients_and_check,
    try_change,
    wait_applied,
    wait_stable_conf,
)

from raft_core.confchange import ChangeOp, ConfChange
from raft_core.raft import RaftConfig
from raft_core.rawnode import PersistedState, RawNode
from raft_core.sim.campaign import run_campaign
from raft_core.sim.cluster import ClientRequest, ClientResponse
from raft_core.sim.network import LinkProfile
from raft_core.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    Role,
    SnapshotChunk,
    SnapshotMeta,
)

ADD_VOTER, ADD_LEARNER, REMOVE = ChangeOp.ADD_VOTER, ChangeOp.ADD_LEARNER, ChangeOp.REMOVE


def others(c, *nids: str) -> list[str]:
    return sorted(set(c.nodes) - set(nids))


def commits(c, ids) -> dict[str, int]:
    return {n: c.nodes[n].raw.raft_for_tests.log.committed for n in ids}


# -- 1 -------------------------------------------------------------------------


def test_add_two_voters_under_load_learner_first():
    """Grow a 3-node cluster to 5 while clients keep writing.

    Each new node starts as a fresh process, joins as a learner, and is promoted only
    once the leader reports it caught up (progress "replicate", match near the last
    index). At the end: 5 voters everywhere, the client history is linearizable (no
    acknowledged write lost or applied twice), and every node has the same digest
    chain and state.
    """
    c = make_cluster(101)
    clients = start_clients(c, 3, seed=11)
    c.run_for(300)
    for nid in ("n4", "n5"):
        add_learner(c, nid)
        assert c.run_until(lambda nid=nid: caught_up(c, nid, slack=3), 5_000), c.dump()
        ld = c.leader()
        pr = progress_of(ld, nid)
        assert pr.learner and pr.state == "replicate"
        assert pr.match >= ld.raw.raft_for_tests.log.last_index() - 3
        # While a learner, it is not part of any quorum.
        assert nid not in ld.conf.all_voters()
        c.change((ADD_VOTER, nid))
        wait_stable_conf(c, lambda ld, nid=nid: nid in ld.conf.voters)
        c.run_for(250)  # more writes under the new configuration

    history = stop_clients_and_check(c, clients)
    assert acknowledged_writes(history) > 50, "the scenario must actually be under load"
    ids = sorted(c.nodes)
    assert ids == ["n1", "n2", "n3", "n4", "n5"]
    converge(c, ids)
    for n in ids:
        conf = c.nodes[n].conf
        assert conf.voters == frozenset(ids) and not conf.joint and not conf.learners, n
    assert_same_state(c, ids)
    # The reference replica saw every committed entry once: the chain agrees with it.
    top = applied(c, "n1")
    assert c.nodes["n1"].replica.chain == c.shadow.chain_at(top)
    assert c.stats["membership_changes"] == 4  # two learner additions, two promotions


# -- 2 -------------------------------------------------------------------------


def test_promoting_a_lagging_learner_stalls_commits_until_it_catches_up():
    """Why the manager must refuse to promote a lagging learner.

    The engine itself accepts the promotion; what it offers the manager is the
    leader's view of the learner: here, a learner that never heard from the leader
    shows match 0, state "probe", not recently active. Promote it anyway while one of
    the three voters is down: the joint configuration {old 3} / {old 3 + learner}
    needs 3 of 4 in the new half, so nothing commits (and the leader loses its
    quorum) until the learner catches up. Once it is reachable it catches up, the
    cluster leaves the joint configuration and commits again.
    """
    c = make_cluster(102)
    leader = c.leader()
    c.add_node("n4")
    c.isolate("n4")
    c.change((ADD_LEARNER, "n4"))
    wait_stable_conf(c, lambda ld: "n4" in ld.conf.learners)
    last = propose_puts(c, 30)
    voters = sorted(leader.conf.voters)
    wait_applied(c, last, voters)

    pr = progress_of(leader, "n4")
    last_index = leader.raw.raft_for_tests.log.last_index()
    assert pr.learner is True
    assert pr.match <= last_index - 30, pr
    assert pr.state in ("probe", "snapshot"), pr
    assert pr.recent_active is False and pr.ticks_since_heard is None, pr

    down = others(c, leader.id, "n4")[0]
    live = others(c, down, "n4")
    c.crash(down)
    joint_index, _ = c.change((ADD_VOTER, "n4"))
    assert c.run_until(lambda: leader.conf.joint, 1_000)
    t0 = c.now
    propose_puts(c, 5, prefix="stalled")
    c.run_for(1_500)
    # The joint entry itself commits under C_old; nothing after it does.
    assert max(commits(c, live).values()) == joint_index, "commit needs the lagging learner"
    assert all(c.nodes[n].kv.get("stalled0") is None for n in live)
    assert c.events_named("check_quorum_step_down", node=leader.id, since=t0)
    assert c.leader() is None, "no voter can win the joint configuration without n4"

    c.heal()  # the learner is reachable again: it catches up and the cluster recovers
    ld = wait_stable_conf(c, lambda ld: "n4" in ld.conf.voters, timeout_ms=5_000)
    assert ld.conf.voters == frozenset([*live, down, "n4"])
    last = propose_puts(c, 3, prefix="after")
    wait_applied(c, last, [*live, "n4"])
    for n in (*live, "n4"):
        assert c.nodes[n].kv.get("stalled4") == "00000004", n
        assert c.nodes[n].kv.get("after2") == "00000002", n
    assert c.nodes[down].up is False  # recovered without the crashed voter


# -- 3 -------------------------------------------------------------------------


def test_replace_the_leader_in_one_joint_step():
    """ADD_VOTER n4 + REMOVE <leader> in one change.

    The old leader leads through the joint configuration, and only when it applies
    C_new (which no longer contains it) does it hand over: a TimeoutNow to the most
    caught-up new voter, which wins the next term; the old leader steps down. Clients
    keep writing across the whole change and their history stays linearizable.
    """
    c = make_cluster(103)
    old = c.leader()
    L, term0 = old.id, old.term
    clients = start_clients(c, 3, seed=5)
    add_learner(c, "n4")
    assert c.run_until(lambda: caught_up(c, "n4"), 3_000)
    t0 = c.now
    c.change((ADD_VOTER, "n4"), (REMOVE, L))
    new_voters = frozenset([*others(c, L, "n4"), "n4"])
    ld = wait_stable_conf(c, lambda ld: ld.conf.voters == new_voters and ld.id != L)
    c.run_for(300)

    mine = [e for e in c.events if e.node == L and e.at >= t0]
    applied_confs = [e for e in mine if e.name == "conf_applied"]
    assert [e.fields["conf"]["voters_outgoing"] != [] for e in applied_confs] == [True, False]
    assert all(e.role is Role.LEADER for e in applied_confs), "it leads through the change"
    c_new_at = applied_confs[1].at
    started = [e for e in mine if e.name == "transfer_started"]
    assert len(started) == 1 and started[0].at >= c_new_at
    target = started[0].fields["target"]
    assert target in new_voters
    assert c.messages(MT.TIMEOUT_NOW, src=L, dst=target, since=c_new_at)
    down = [e for e in mine if e.name == "stepped_down"]
    assert down and down[0].at >= c_new_at
    assert ld.id == target and ld.term > term0
    assert old.raw.raft_for_tests.role is not Role.LEADER

    # The cluster keeps committing, without the old leader.
    last = propose_puts(c, 5, prefix="after")
    wait_applied(c, last, sorted(new_voters))
    history = stop_clients_and_check(c, clients)
    assert acknowledged_writes(history) > 20
    converge(c, sorted(new_voters))
    assert_same_state(c, sorted(new_voters))


# -- 4 -------------------------------------------------------------------------


def test_remove_a_partitioned_node_then_heal():
    """A follower is cut off; the majority removes it.

    Removing it needs a majority of {n1,n2,n3} and of {the other two}: both are
    reachable, so it succeeds. When the partition heals, the removed node (which
    never learned it was removed, and has been campaigning in vain) does not disturb
    anyone: the members' terms and leader stay the same, nobody starts an election.
    """
    c = make_cluster(104)
    L = c.leader().id
    gone = others(c, L)[0]
    members = others(c, gone)
    c.partition([gone], members)
    c.run_for(300)
    c.change((REMOVE, gone))
    ld = wait_stable_conf(c, lambda ld: gone not in ld.conf.members())
    assert ld.id == L
    assert gone in c.nodes[gone].conf.voters, "the removed node did not hear about it"

    terms = member_terms(c, members)
    t0 = c.now
    c.heal()
    c.run_for(2_000)  # 10-20 election timeouts
    assert c.messages(MT.PRE_VOTE, src=gone, since=t0), "it does try to campaign"
    assert member_terms(c, members) == terms
    assert c.leader().id == L
    assert not [e for e in c.events_named("election", since=t0) if e.node in members]
    granted = [s for s in c.messages(MT.PRE_VOTE_RESP, dst=gone, since=t0) if not s.msg.reject]
    assert not granted
    last = propose_puts(c, 5)
    wait_applied(c, last, members)


# -- 5 -------------------------------------------------------------------------


def test_remove_the_leader_itself():
    """The leader proposes its own removal.

    It keeps leading through the joint configuration (it is still in C_old and
    proposes the leave-joint entry itself), then, once C_new is applied, hands over
    to one of the remaining voters and steps down. Every entry committed before,
    during and after the change is on the new leader with the same digest chain.
    """
    c = make_cluster(105)
    old = c.leader()
    L = old.id
    remaining = others(c, L)
    clients = start_clients(c, 3, seed=55)
    c.run_for(200)
    t0 = c.now
    c.change((REMOVE, L))
    ld = wait_stable_conf(c, lambda ld: ld.id != L and L not in ld.conf.members())
    assert ld.id in remaining
    c.run_for(300)  # clients keep writing under the new leader

    confs = [e for e in c.events_named("conf_applied", node=L, since=t0)]
    assert len(confs) == 2 and confs[0].fields["conf"]["voters_outgoing"]
    assert all(e.role is Role.LEADER for e in confs)
    # The leave-joint entry was proposed by the old leader, in its own term.
    leave = [
        ld.raw.raft_for_tests.log.entry(i)
        for i in range(
            ld.raw.raft_for_tests.log.first_index(), ld.raw.raft_for_tests.log.last_index() + 1
        )
        if is_leave_entry(ld.raw.raft_for_tests.log.entry(i))
    ]
    assert leave and leave[-1].term == confs[0].term
    handover = c.events_named("transfer_started", node=L, since=t0)
    assert handover and handover[0].at >= confs[1].at
    assert handover[0].fields["target"] in remaining
    assert c.events_named("stepped_down", node=L, since=confs[1].at)

    last = propose_puts(c, 5, prefix="after")
    wait_applied(c, last, remaining)
    history = stop_clients_and_check(c, clients)
    assert acknowledged_writes(history) > 20
    top = converge(c, remaining)
    assert_same_state(c, remaining)
    # No committed entry lost: the survivors' chain equals the never-crashing reference
    # that saw every entry the old leader committed.
    assert c.nodes[remaining[0]].replica.chain == c.shadow.chain_at(top)


# -- 6 -------------------------------------------------------------------------


def test_one_change_at_a_time():
    """A change is refused while an earlier one is in flight.

    (a) a learner addition not yet applied blocks the next change; (b) during a
    joint configuration (the leave-joint entry is pending) every change is refused;
    (c) a new leader accepts no change before its no-op has been applied (the fix
    for the single-server-change bug reported on raft-dev in 2015: a new leader may
    hold an uncommitted change from an earlier term in its log). Every refusal says
    why, and the same change is accepted once the earlier one has been applied.
    """
    c = make_cluster(106)
    ld = c.leader()
    c.add_node("n4")
    c.add_node("n5")

    # (a)
    assert try_change(ld, (ADD_LEARNER, "n4")) is None
    refused = try_change(ld, (ADD_LEARNER, "n5"))
    assert refused is not None and "in flight" in refused.reason, refused
    assert refused.leader == ld.id
    wait_stable_conf(c, lambda ld: "n4" in ld.conf.learners)
    assert try_change(ld, (ADD_LEARNER, "n5")) is None
    wait_stable_conf(c, lambda ld: "n5" in ld.conf.learners)
    assert c.run_until(lambda: caught_up(c, "n4") and caught_up(c, "n5"), 3_000)

    # (b)
    assert try_change(ld, (ADD_VOTER, "n4")) is None
    assert c.run_until(lambda: ld.conf.joint, 1_000)
    refused = try_change(ld, (ADD_VOTER, "n5"))
    assert ld.conf.joint, "still in the joint configuration"
    assert refused is not None and "in flight" in refused.reason, refused
    wait_stable_conf(c, lambda ld: "n4" in ld.conf.voters)
    assert try_change(ld, (ADD_VOTER, "n5")) is None
    wait_stable_conf(c, lambda ld: "n5" in ld.conf.voters)

    # (c)
    target = others(c, ld.id)[0]
    ld.raw.transfer_leadership(target)
    ld.process()
    new = c.nodes[target]
    assert c.run_until(lambda: new.raw.raft_for_tests.role is Role.LEADER, 1_000)
    r = new.raw.raft_for_tests
    noop = r.pending_conf_index
    assert r.log.entry(noop).data == b"" and r.log.entry(noop).term == r.term
    assert r.log.applied < noop, "caught the new leader before its no-op applied"
    refused = try_change(new, (REMOVE, "n5"))
    assert refused is not None and "in flight" in refused.reason
    assert f"entry {noop}" in refused.reason, refused.reason
    leader_ready(c)
    assert c.leader() is new
    assert try_change(new, (REMOVE, "n5")) is None
    wait_stable_conf(c, lambda ld: "n5" not in ld.conf.members())


def test_joint_configuration_is_left_after_a_deferred_auto_leave():
    """Auto-leave deferred by a leadership transfer must still happen.

    The leader promotes a learner and, right after, is asked to transfer leadership
    to a voter that turns out to be unreachable. When the joint configuration is
    applied the transfer is still pending, so the leader defers auto-leave. The
    transfer times out and is aborted; the leader keeps leading, in the joint
    configuration. It must then leave it on its own: configuration changes are
    refused "until it is left", so an idle cluster must not stay joint forever.
    """
    c = make_cluster(107)
    ld = c.leader()
    add_learner(c, "n4")
    assert c.run_until(lambda: caught_up(c, "n4"), 3_000)
    unreachable = others(c, ld.id, "n4")[0]
    c.isolate(unreachable)
    joint_index, _ = c.change((ADD_VOTER, "n4"))
    ld.raw.transfer_leadership(unreachable)
    ld.process()
    assert c.run_until(lambda: ld.conf.joint, 1_000)
    assert ld.raw.raft_for_tests.lead_transferee == unreachable, (
        "applied while the transfer is pending"
    )
    assert ld.raw.raft_for_tests.pending_conf_index == joint_index, "auto-leave was deferred"
    t0 = c.now
    assert c.run_until(lambda: ld.raw.raft_for_tests.lead_transferee is None, 1_000)
    assert c.events_named("transfer_aborted", node=ld.id, since=t0)
    assert c.leader() is ld and ld.conf.joint
    refused = try_change(ld, (REMOVE, "n4"))
    assert refused is not None and "joint configuration is still in force" in refused.reason
    c.heal()
    # No client traffic: the leader alone is responsible for leaving the joint config.
    left = c.run_until(lambda: not ld.conf.joint, 2_000)
    assert left, (
        "the leader stays in the joint configuration after the transfer was aborted "
        f"(pending_conf_index={ld.raw.pending_conf_index}, applied="
        f"{ld.raw.applied_index}); a change is refused with {refused.reason!r}\n{c.dump()}"
    )


# -- 7 -------------------------------------------------------------------------


@pytest.mark.parametrize("reachable", ["new_majority_only", "old_majority_only"])
def test_joint_quorum_needs_both_majorities(reachable):
    """In C_old,new, commits and elections need a majority of BOTH halves.

    C_old = {L, a, b}, C_new = {L, n4, n5}. The moment the leader applies the joint
    configuration the network splits so that only one half has a reachable
    majority: {L, n4, n5} with a and b each alone, or {L, a, b} with n4 and n5 each
    alone. Nothing commits (not the leave-joint entry, not client writes), and no
    election succeeds, although the reachable majority does grant its pre-votes.
    After healing, the cluster moves on to C_new.
    """
    c = make_cluster(107)
    ld = c.leader()
    L = ld.id
    a, b = others(c, L)
    for n in ("n4", "n5"):
        add_learner(c, n)
        assert c.run_until(lambda n=n: caught_up(c, n), 3_000)
    if reachable == "new_majority_only":
        groups, majority = [[L, "n4", "n5"], [a], [b]], {"n4", "n5"}
    else:
        groups, majority = [[L, a, b], ["n4"], ["n5"]], {a, b}
    hook = OnceHook(
        lambda nid, e: nid == L and is_joint_entry(e), lambda: c.partition(*groups)
    ).install(c)
    joint_index, _ = c.change((ADD_VOTER, "n4"), (ADD_VOTER, "n5"), (REMOVE, a), (REMOVE, b))
    assert c.run_until(lambda: hook.fired, 1_000)
    assert ld.conf.joint
    t0 = c.now
    propose_puts(c, 3, prefix="p")
    c.run_for(2_000)

    # The joint entry committed under C_old; nothing after it commits anywhere (not
    # the leave-joint entry the leader appended at once, not the client writes).
    assert ld.raw.raft_for_tests.log.last_index() >= joint_index + 4
    assert max(commits(c, c.nodes).values()) == joint_index, "committed without a joint quorum"
    assert not c.events_named("became_leader", since=t0), "a leader won without a joint quorum"
    assert c.events_named("check_quorum_step_down", node=L, since=t0)
    grants = {
        s.src
        for s in c.messages(MT.PRE_VOTE_RESP, dst=L, since=t0)
        if not s.msg.reject and not s.dropped
    }
    assert majority <= grants, f"{L} should get pre-votes from {majority}, got {grants}"

    c.heal()
    ld = wait_stable_conf(c, lambda ld: ld.conf.voters == frozenset([L, "n4", "n5"]))
    last = propose_puts(c, 2, prefix="q")
    wait_applied(c, last, [L, "n4", "n5"])


# -- 8 -------------------------------------------------------------------------


def test_truncated_conf_change_never_took_effect():
    """A configuration takes effect when applied, so a truncated one never did.

    The leader is isolated, and in that moment it appends a change removing a
    follower. Appended but never committed, the change does not alter its
    configuration (it still tracks the follower). The majority elects a new leader and
    commits other entries; when the old leader rejoins, its change entry is
    overwritten. No node ever applied that configuration.
    """
    c = make_cluster(108)
    old = c.leader()
    L = old.id
    rest = others(c, L)
    conf0 = old.conf
    converge(c, sorted(c.nodes))
    c.isolate(L)
    t0 = c.now
    index, term = c.change((REMOVE, rest[0]))
    e = old.raw.raft_for_tests.log.entry(index)
    assert e.type is EntryType.CONF_CHANGE and e.term == term
    assert old.conf == conf0, "appending a change must not apply it"
    assert rest[0] in old.raw.raft_for_tests.prs and old.raw.raft_for_tests.role is Role.LEADER

    new = c.wait_for_leader(among=set(rest))
    last = propose_puts(c, 5, prefix="z")
    wait_applied(c, last, rest)
    assert old.conf == conf0
    c.heal()
    converge(c, sorted(c.nodes))

    replaced = old.raw.raft_for_tests.log.entry(index)
    assert (replaced.type, replaced.term) != (EntryType.CONF_CHANGE, term)
    assert replaced.term == new.term
    assert not c.events_named("conf_applied", since=t0)
    for n in c.nodes.values():
        assert n.conf == conf0, n.id
    assert_same_state(c, sorted(c.nodes))


# -- 9 -------------------------------------------------------------------------


def test_node_joining_after_compaction_catches_up_by_snapshot():
    """A node added after the log was compacted can only catch up by InstallSnapshot.

    Under client load, with snapshots every 20 entries and a chunk size that splits
    the image, a fresh node joins as a learner. The leader no longer has entry 1, so
    it streams a snapshot; the learner installs it, then follows by appends, and is
    promoted. Its digest chain and state hash equal the leader's.
    """
    c = make_cluster(109, snapshot_every=20, keep_entries=5, snapshot_chunk_bytes=256)
    clients = start_clients(c, 3, seed=9, keys=4)
    c.run_for(600)
    ld = c.leader()
    assert ld.raw.raft_for_tests.log.first_index() > 2, "the leader must have compacted"
    add_learner(c, "n4")
    assert c.run_until(lambda: caught_up(c, "n4"), 5_000), c.dump()
    c.change((ADD_VOTER, "n4"))
    wait_stable_conf(c, lambda ld: "n4" in ld.conf.voters)
    c.run_for(200)
    history = stop_clients_and_check(c, clients)
    assert acknowledged_writes(history) > 30

    snaps = c.messages(MT.SNAP, dst="n4")
    assert snaps, "the learner must have been sent a snapshot"
    first = snaps[0].msg.chunk
    assert first.offset == 0 and first.total > 256, "the image spans several chunks"
    assert len({s.msg.chunk.offset for s in snaps if s.msg.chunk.meta == first.meta}) > 1
    assert c.events_named("snapshot_installed", node="n4")
    assert c.stats["snapshots_installed"] >= 1
    n4 = c.nodes["n4"]
    assert n4.disk.snapshot is not None and n4.disk.snapshot.meta.index >= first.meta.index
    ids = sorted(c.nodes)
    converge(c, ids)
    assert_same_state(c, ids)


# -- 10 ------------------------------------------------------------------------


def test_slow_follower_behind_compaction_catches_up_by_snapshot():
    """A follower cut off under load falls behind the leader's compaction point.

    Its links are blocked for 1.5 s while clients write and the leader snapshots every
    10 entries keeping only 2. When the links come back, the entries it needs are
    gone from the leader's log, so it catches up through a snapshot, and ends with
    the leader's exact state and digest chain.
    """
    c = make_cluster(110, snapshot_every=10, keep_entries=2)
    L = c.leader().id
    slow = others(c, L)[0]
    clients = start_clients(c, 4, seed=3)
    c.run_for(200)
    c.partition([slow], others(c, slow))
    c.run_for(1_500)
    ld = c.leader()
    behind = c.nodes[slow].raw.raft_for_tests.log.last_index()
    assert ld.raw.raft_for_tests.log.first_index() > behind + 1, (
        "its next entry must be compacted away"
    )
    t0 = c.now
    c.heal()
    c.run_for(800)
    history = stop_clients_and_check(c, clients)
    assert acknowledged_writes(history) > 100
    installed = c.events_named("snapshot_installed", node=slow, since=t0)
    assert installed and installed[0].fields["index"] > behind
    assert c.messages(MT.SNAP, dst=slow, since=t0)
    ids = sorted(c.nodes)
    top = converge(c, ids)
    assert_same_state(c, ids)
    assert c.nodes[slow].replica.chain == c.shadow.chain_at(top)


# -- 11 ------------------------------------------------------------------------


def test_lost_snapshot_chunks_resume_from_the_follower_offset():
    """Every third chunk of a snapshot is lost (the first time it is sent).

    With 64-byte chunks the image takes ~20 chunks. The follower asks again from the
    offset it has, so the transfer completes, and the cost stays close to the
    number of chunks: the first chunk is sent exactly once (no restart from scratch)
    and the total is far below what restarting at every loss would need. Links have
    a fixed delay here, so the only disorder is the loss itself.
    """
    link = LinkProfile(min_delay_ms=1.0, max_delay_ms=1.0)
    c = make_cluster(111, snapshot_chunk_bytes=64, keep_entries=0, link=link)
    last = propose_puts(c, 60, value_size=16)
    converge(c, sorted(c.nodes))
    ld = c.leader()
    snap = ld.take_snapshot()
    assert snap is not None and ld.raw.raft_for_tests.log.first_index() > last
    cs = 64
    nchunks = -(-len(snap.data) // cs)
    assert nchunks >= 15
    lost: set[int] = set()

    def drop(src, dst, m) -> bool:
        if getattr(m, "type", None) is not MT.SNAP or dst != "n4":
            return False
        off = m.chunk.offset
        if (off // cs) % 3 == 2 and off not in lost:
            lost.add(off)
            return True
        return False

    c.drop = drop
    add_learner(c, "n4")
    assert c.run_until(lambda: caught_up(c, "n4"), 10_000), c.dump()

    assert len(lost) == len([k for k in range(nchunks) if k % 3 == 2])
    sent = c.messages(MT.SNAP, dst="n4")
    assert {s.msg.chunk.meta.index for s in sent} == {snap.meta.index}
    per_offset = Counter(s.msg.chunk.offset for s in sent)
    assert set(per_offset) == {k * cs for k in range(nchunks)}
    assert per_offset[0] == 1, "the transfer restarted from scratch"
    restart_cost = nchunks + sum(off // cs for off in lost)
    assert len(sent) <= 3 * nchunks, f"{len(sent)} SNAP messages for {nchunks} chunks"
    assert len(sent) < restart_cost
    assert c.events_named("snapshot_installed", node="n4")
    converge(c, [ld.id, "n4"])
    assert_same_state(c, [ld.id, "n4"])


# -- 12 ------------------------------------------------------------------------


def test_snapshot_keeps_follower_suffix_when_it_holds_the_snapshot_entry():
    """Figure 13, step 6: a follower that already holds the snapshot's last entry keeps
    its log.

    The follower is cut off, then handed (as a lagging delivery would) the leader's
    entries up to S+10 but a commit index far below S. The leader snapshots at S.
    Delivered that snapshot, the follower finds entry S with the snapshot's term in
    its log: it commits up to S, keeps S+1..S+10, and restores nothing (no install
    event, no snapshot on its disk, its state reached S by applying entries).
    """
    c = make_cluster(112, keep_entries=100)
    ld = c.leader()
    f = c.nodes[others(c, ld.id)[0]]
    c0 = converge(c, sorted(c.nodes))
    c.partition([f.id], others(c, f.id))
    s_index = propose_puts(c, 30, prefix="a")
    wait_applied(c, s_index, [ld.id])
    snap = ld.take_snapshot()
    assert snap is not None and snap.meta.index == s_index
    last = propose_puts(c, 10, prefix="b")
    lg = ld.raw.raft_for_tests.log
    assert lg.first_index() == 1, "the leader kept its entries (keep_entries)"

    app = Message(
        MT.APP,
        f.id,
        ld.id,
        term=ld.term,
        index=c0,
        log_term=lg.term(c0),
        entries=lg.slice(c0 + 1, last + 1),
        commit=c0,
    )
    f.receive(app)
    flog = f.raw.raft_for_tests.log
    assert flog.last_index() == last and flog.committed == c0
    t0 = c.now
    f.receive(snapshot_message(ld, f.id, snap))

    assert flog.last_index() == last, "the suffix after the snapshot was dropped"
    assert [flog.term(i) for i in range(s_index + 1, last + 1)] == [
        lg.term(i) for i in range(s_index + 1, last + 1)
    ]
    assert flog.committed == s_index
    assert flog.offset == 0 and flog.pending_snapshot is None
    assert not c.events_named("snapshot_installed", node=f.id)
    assert f.disk.snapshot is None and len(f.disk.entries) == last
    assert f.replica.applied_index == s_index
    assert f.replica.chain == ld.replica.chain_at(s_index)
    resp = c.messages(MT.APP_RESP, src=f.id, since=t0)
    assert resp and resp[-1].msg.index == s_index and not resp[-1].msg.reject

    c.heal()
    ids = sorted(c.nodes)
    converge(c, ids)
    assert_same_state(c, ids)


def test_snapshot_replaces_follower_log_on_mismatch():
    """Figure 13, step 7: when the follower's entry at the snapshot index has another
    term, the whole log goes and the state comes from the snapshot.

    The leader is isolated and appends entries nobody else gets. The majority elects
    a new leader, commits past those indexes and snapshots at an index S where the
    old leader holds an entry of its own, older term. Delivered the snapshot, the old
    leader discards its entire log, installs the snapshot, and its digest chain at S
    is the new leader's.
    """
    c = make_cluster(113)
    old = c.leader()
    rest = others(c, old.id)
    converge(c, sorted(c.nodes))
    c.isolate(old.id)
    for i in range(5):
        old.raw.propose(f"orphan{i}".encode())
    old.process()
    orphan_last = old.raw.raft_for_tests.log.last_index()
    new = c.wait_for_leader(among=set(rest))
    leader_ready(c)
    s_index = propose_puts(c, 2, prefix="n")
    wait_applied(c, s_index, [new.id])
    snap = new.take_snapshot()
    assert snap is not None and snap.meta.index == s_index <= orphan_last
    olog = old.raw.raft_for_tests.log
    assert olog.term(s_index) is not None and olog.term(s_index) != snap.meta.term

    t0 = c.now
    old.receive(snapshot_message(new, old.id, snap))
    assert olog.offset == s_index and olog.last_index() == s_index, "whole log replaced"
    assert olog.entries == []
    assert c.events_named("snapshot_installed", node=old.id, since=t0)
    assert old.disk.snapshot is not None and old.disk.snapshot.meta.index == s_index
    assert old.disk.entries == []
    assert old.replica.applied_index == s_index
    assert old.replica.chain == new.replica.chain_at(s_index)
    assert old.kv.get("n1") == "00000001"

    c.heal()
    ids = sorted(c.nodes)
    converge(c, ids)
    assert_same_state(c, ids)
    assert all(c.nodes[n].kv.get("orphan0") is None for n in ids)


def test_snapshot_installed_while_a_ready_is_in_flight_keeps_the_snapshot_conf():
    """A snapshot that arrives while the driver is still persisting a Ready must not be
    overridden by older configuration changes from that Ready.

    The driver contract allows ``step`` between ``ready()`` and ``advance()``. A
    follower gets a Ready whose committed entries end a first joint change (ADD n4,
    then its leave-joint entry). While that Ready is on its way to disk, the final
    chunk of the leader's snapshot at index 10 arrives: by then a second change
    (REMOVE n3) has been applied up to its joint configuration, which is what the
    snapshot carries. The follower installs it. When the driver then calls
    ``advance()`` on the old Ready, those entries are history the snapshot already
    includes: the follower's configuration must remain the snapshot's joint one, not
    "leave" it on the strength of the first change's leave-joint entry (which would
    put this node in C_new = {n1, n2, n4} although the cluster has not committed that
    transition).
    """
    st = PersistedState.bootstrap(["n1", "n2", "n3"])
    f = RawNode(RaftConfig("n3"), st, random.Random(1))
    f.advance(f.ready())
    add_n4 = ConfChange([(ADD_VOTER, "n4")]).encode()
    leave = ConfChange([]).encode()
    entries = [
        Entry(2, 2, EntryType.NORMAL, b""),
        Entry(3, 2, EntryType.CONF_CHANGE, add_n4),
        Entry(4, 2, EntryType.CONF_CHANGE, leave),
    ]
    f.step(Message(MT.APP, "n3", "n1", term=2, index=1, log_term=1, entries=entries, commit=4))
    in_flight = f.ready()
    assert [e.index for e in in_flight.committed_entries] == [2, 3, 4]

    # Index 5: REMOVE n3 (joint, applied); 6-10: writes. The leave-joint entry of
    # that change is not in the snapshot, so the snapshot's configuration is joint.
    snap_conf = ConfState(
        voters=frozenset({"n1", "n2", "n4"}),
        voters_outgoing=frozenset({"n1", "n2", "n3", "n4"}),
        auto_leave=True,
    )
    meta = SnapshotMeta(10, 2, snap_conf)
    chunk = SnapshotChunk(meta, 0, 5, b"image", True)
    f.step(Message(MT.SNAP, "n3", "n1", term=2, chunk=chunk))
    assert f.conf == snap_conf, "the snapshot's configuration is installed"

    f.advance(in_flight)  # the driver finished persisting and applying the old Ready
    assert f.conf == snap_conf, (
        f"stale entries from before the snapshot changed the configuration to {f.conf}"
    )
    rd = f.ready()
    assert rd.snapshot is not None and rd.snapshot.meta.index == 10
    f.advance(rd)
    assert f.conf == snap_conf


# -- 13 ------------------------------------------------------------------------


def test_whole_cluster_crash_after_compaction_recovers_everything_committed():
    """Every node crashes at once, after compaction, with writes still on their way
    to disk (disk latency on: unsynced writes are lost).

    On restart each node loads its snapshot and replays its log: its digest chain at
    the snapshot index equals the chain of a reference replica that never crashed.
    Clients continue; at the end every acknowledged write is among the applied
    entries, the history is linearizable and all replicas agree with the reference.
    """
    c = make_cluster(114, snapshot_every=15, keep_entries=3, disk_latency_ms=(0.5, 4.0))
    clients = start_clients(c, 4, seed=13)
    c.run_for(800)
    ids = sorted(c.nodes)
    assert all(c.nodes[n].disk.snapshot is not None for n in ids), "compaction happened"

    def unsynced() -> list[str]:
        return [
            n
            for n in ids
            if c.nodes[n].writing
            or c.nodes[n].raw.raft_for_tests.log.last_index()
            > max([e.index for e in c.nodes[n].disk.entries] or [0])
        ]

    # Crash at a moment when some node still has writes on their way to disk.
    assert c.run_until(lambda: bool(unsynced()), 2000), (
        "the crash must catch some writes before they reached the disk"
    )
    for n in ids:
        c.crash(n)
    c.run_for(50)
    for n in ids:
        c.restart(n)
        r = c.nodes[n].replica
        assert r.applied_index == c.nodes[n].disk.snapshot.meta.index
        assert r.chain == c.shadow.chain_at(r.applied_index), f"{n} chain broken at restart"
    c.run_for(800)
    history = stop_clients_and_check(c, clients)
    top = converge(c, ids)
    assert_same_state(c, ids)
    assert c.nodes[ids[0]].replica.chain == c.shadow.chain_at(top)

    written = c.shadow.applied_writes()
    acked = [op for op in history if op.kind in ("put", "cas") and op.ret is not None]
    acked = [op for op in acked if op.kind == "put" or op.output.get("ok")]
    assert len(acked) > 50
    missing = [op for op in acked if (op.key, op.value) not in written]
    assert not missing, f"acknowledged writes lost: {missing[:3]}"


# -- 14 ------------------------------------------------------------------------


@pytest.mark.parametrize("pre_vote", [True, False])
def test_removed_node_keeps_running_without_disturbing(pre_vote):
    """A removed follower that never hears the end of its removal keeps running.

    The members stop talking to it the moment the leader applies C_new, so it is
    stuck in the joint configuration, still thinking itself a voter. For 2 s (10-20
    election timeouts) it campaigns (pre-votes, or real votes with ever higher terms
    when pre-vote is off). Nobody grants it anything, the members' terms and leader do
    not change, and they keep committing.
    """
    c = make_cluster(115, pre_vote=pre_vote)
    L = c.leader().id
    gone = others(c, L)[0]
    members = others(c, gone)

    def cut() -> None:
        for m in members:
            c.net.block(m, gone)

    OnceHook(lambda nid, e: nid == L and is_leave_entry(e), cut).install(c)
    c.change((REMOVE, gone))
    wait_stable_conf(c, lambda ld: gone not in ld.conf.members())
    assert gone in c.nodes[gone].conf.all_voters(), "it still believes it is a voter"

    t0 = c.now
    terms = member_terms(c, members)
    c.run_for(2_000)
    kind, resp = (MT.PRE_VOTE, MT.PRE_VOTE_RESP) if pre_vote else (MT.VOTE, MT.VOTE_RESP)
    asked = c.messages(kind, src=gone, since=t0)
    assert len(asked) >= 10, "the removed node should keep campaigning"
    assert {s.dst for s in asked} <= set(members)
    assert not [s for s in c.messages(resp, dst=gone, since=t0) if not s.msg.reject]
    assert member_terms(c, members) == terms
    assert c.leader().id == L
    assert not [e for e in c.events_named("election", since=t0) if e.node in members]
    if not pre_vote:
        assert c.nodes[gone].term > max(terms.values()), "its term ran ahead, harmlessly"
    last = propose_puts(c, 5)
    wait_applied(c, last, members)


# -- 15 ------------------------------------------------------------------------


def test_learners_never_vote_and_never_count():
    """Learners replicate the log but take no part in any quorum.

    1 voter + 2 learners: with both learners unreachable, the voter alone commits.
    2 voters + 3 learners: with one voter cut off, the leader still reaches all three
    learners (4 of 5 nodes) but commits nothing and loses its quorum, and no leader
    is elected. Throughout, learners never campaign, are never asked for a vote, and
    never answer one.
    """
    c = make_cluster(116, nodes=1)
    for n in ("n2", "n3"):
        add_learner(c, n)
        assert c.run_until(lambda n=n: caught_up(c, n), 2_000)
    c.isolate("n2")
    c.isolate("n3")
    last = propose_puts(c, 5)
    wait_applied(c, last, ["n1"], timeout_ms=100)
    c.run_for(1_000)
    assert c.leader().id == "n1"
    assert not [e for e in c.events_named("election") if e.node != "n1"]
    assert commits(c, ["n2", "n3"]) == {"n2": last - 5, "n3": last - 5}

    c = make_cluster(117, nodes=2)
    learners = ["n3", "n4", "n5"]
    for n in learners:
        add_learner(c, n)
        assert c.run_until(lambda n=n: caught_up(c, n), 2_000)
    ld = c.leader()
    other_voter = others(c, ld.id, *learners)[0]
    c.partition([other_voter], [ld.id, *learners])
    t0 = c.now
    before = ld.raw.raft_for_tests.log.committed
    propose_puts(c, 5, prefix="x")
    c.run_for(2_000)
    assert ld.raw.raft_for_tests.log.committed == before, "learners must not count toward commit"
    assert c.events_named("check_quorum_step_down", node=ld.id, since=t0)
    assert c.leader() is None
    assert not c.events_named("became_leader", since=t0)

    assert not [e for e in c.events if e.node in learners and e.name == "election"]
    for kind in (MT.VOTE, MT.PRE_VOTE):
        assert not [s for s in c.sent if s.msg.type is kind and s.dst in learners]
        assert not [s for s in c.sent if s.msg.type is kind and s.src in learners]
    for kind in (MT.VOTE_RESP, MT.PRE_VOTE_RESP):
        assert not [s for s in c.sent if s.msg.type is kind and s.src in learners]
    assert {c.nodes[n].raw.raft_for_tests.role for n in learners} == {Role.FOLLOWER}

    c.heal()
    wait_stable_conf(c, lambda ld: ld.conf.learners == frozenset(learners))
    last = propose_puts(c, 2, prefix="y")
    wait_applied(c, last, ["n1", "n2", *learners])


# -- 16 ------------------------------------------------------------------------


def test_sessions_survive_snapshot_install_on_a_new_leader():
    """A client's retried command is answered from its session, even by a leader that
    only knows that session from a snapshot.

    Alice's CAS k: absent -> "v1" executes, but the answer is lost. Bob then puts
    k = "v2". Meanwhile a follower was cut off; the log is compacted past Alice's
    entry, so it catches up by installing a snapshot, and leadership moves to it.
    Alice retries (same session and sequence number) at the new leader: she gets
    the saved "ok" answer; the CAS is not executed again (which would fail, or set
    v1 over Bob's v2), and k stays "v2" everywhere.
    """
    c = make_cluster(118, snapshot_every=10, keep_entries=2)
    ld = c.leader()
    lagger = others(c, ld.id)[0]
    c.partition([lagger], others(c, lagger))
    inbox: list[ClientResponse] = []
    c.net.attach("alice", inbox.append)
    c.net.attach("bob", inbox.append)
    lost = []

    def drop(src, dst, m) -> bool:
        if dst == "alice" and isinstance(m, ClientResponse) and not lost:
            lost.append(m)
            return True
        return False

    c.drop = drop
    cas = ClientRequest("alice", 1, "cas", "k", "v1", None, ("alice", 1))
    c.net.send("alice", ld.id, cas, "client_request")
    c.run_for(100)
    assert lost and lost[0].ok and lost[0].output == {"ok": True, "value": "v1"}
    cas_index = next(i for i, cmd, cid, _ in c.shadow.commands if cid == "alice")
    c.net.send(
        "bob", ld.id, ClientRequest("bob", 1, "put", "k", "v2", None, ("bob", 1)), "client_request"
    )
    c.run_for(100)
    assert inbox and inbox[-1].ok
    propose_puts(c, 40, prefix="f")
    c.run_for(200)
    assert ld.raw.raft_for_tests.log.first_index() > cas_index + 1

    c.heal()
    assert c.run_until(lambda: applied(c, lagger) >= applied(c, ld.id), 3_000)
    installed = c.events_named("snapshot_installed", node=lagger)
    assert installed and installed[0].fields["index"] >= cas_index
    assert c.nodes[lagger].raw.raft_for_tests.log.first_index() > cas_index
    ld.raw.transfer_leadership(lagger)
    ld.process()
    c.wait_for_leader(among={lagger}, timeout_ms=1_000)
    new = leader_ready(c)
    assert new.id == lagger

    retry = ClientRequest("alice", 2, "cas", "k", "v1", None, ("alice", 1))
    c.net.send("alice", lagger, retry, "client_request")
    c.run_for(100)
    answer = inbox[-1]
    assert answer.req_id == 2 and answer.ok
    assert answer.output == {"ok": True, "value": "v1"}, "the saved response"
    ids = sorted(c.nodes)
    converge(c, ids)
    assert {n: c.nodes[n].kv.get("k") for n in ids} == dict.fromkeys(ids, "v2")
    assert_same_state(c, ids)


# -- 17 ------------------------------------------------------------------------


def test_campaign_keeps_its_membership_and_snapshot_coverage():
    """The randomized campaign must keep exercising membership changes and snapshot
    installs; if a change to it silently stopped doing either, this test says so."""
    summary = run_campaign(list(range(30)))
    assert summary["runs"] == 30
    assert summary["failures"] == [], summary["failures"]
    assert summary["runs_with_membership_changes"] >= 9, summary
    assert summary["runs_with_snapshots_installed"] >= 9, summary
    assert summary["membership_changes"] >= 20, summary
    assert summary["snapshots_installed"] >= 15, summary
