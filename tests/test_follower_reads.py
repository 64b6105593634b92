"""Linearizable reads on followers and learners, through ReadIndex on the leader.

A follower cannot tell by itself whether it is behind: it asks the leader for a read
index (READ_INDEX), the leader confirms its leadership with a quorum round and
answers (READ_INDEX_RESP), and the follower serves once it has applied up to that
index. Each scenario below is built so that a follower answering from its own state
(or trusting an answer it must not trust) would return a stale value.
"""

from __future__ import annotations

import pytest
from simtools import Client, HandNet, MessageCounter, election_timeout_ms, settle

from raft_core.driver import Driver
from raft_core.rawnode import sendable_before_persist
from raft_core.sim.cluster import ClientResponse, SimCluster, SimConfig
from raft_core.sim.node import SimNode
from raft_core.types import DropCode, Message, MessageType, ProposalDropped, ReadState, Role

MT = MessageType


def read_at(client: Client, node: str, key: str, timeout_ms: float = 1_000) -> ClientResponse:
    resp = client.call(node, "get", key, timeout_ms=timeout_ms)
    assert resp is not None, f"no answer from {node}\n{client.c.dump()}"
    return resp


def followers(c: SimCluster, leader: SimNode) -> list[str]:
    return sorted(n for n in c.nodes if n != leader.id)


def hold_commit_from(c: SimCluster, node: str, index: int) -> tuple[list[bool], MessageCounter]:
    """Keep ``node`` from learning that ``index`` committed: returns the switch that
    turns it off, and the counter of the messages that passed."""
    on = [True]

    def drop(src: str, dst: str, m: object) -> bool:
        return (
            on[0]
            and dst == node
            and isinstance(m, Message)
            and m.type in (MT.APP, MT.HEARTBEAT)
            and m.commit >= index
        )

    return on, MessageCounter(c, drop)


# -- a follower read sees every write acknowledged before it started -------------


@pytest.mark.parametrize("learners", [0, 1])
def test_a_read_on_any_follower_sees_a_write_acknowledged_before_it(learners: int) -> None:
    c = SimCluster(301, SimConfig(nodes=3, learners=learners))
    leader = settle(c)
    client = Client(c, "cl")
    for i, node in enumerate(followers(c, leader)):
        client.write("put", "k", f"v{i}")
        resp = read_at(client, node, "k")
        assert resp.ok and resp.output == {"value": f"v{i}"}, (node, resp)
    assert c.stats["follower_reads"] == len(c.nodes) - 1


@pytest.mark.parametrize("learner", [False, True])
def test_a_lagging_follower_waits_for_the_leaders_index_instead_of_answering_stale(
    learner: bool,
) -> None:
    """The follower holds k=v1 but does not know it committed (the leader's commit
    index does not reach it). The write was acknowledged, so a read must return v1:
    answering from the follower's own commit index would return the older v0."""
    c = SimCluster(302, SimConfig(nodes=3, learners=1 if learner else 0))
    leader = settle(c)
    client = Client(c, "cl")
    client.write("put", "k", "v0")
    settle(c)
    slow = "n4" if learner else followers(c, leader)[0]
    x = leader.raw.last_index() + 1
    on, counter = hold_commit_from(c, slow, x)
    client.write("put", "k", "v1")
    assert leader.raw.commit_index >= x
    assert c.nodes[slow].raw.last_index() >= x and c.nodes[slow].raw.commit_index < x

    req = client.send(slow, "get", "k")
    c.run_for(3 * election_timeout_ms(c))
    # The leader confirmed the read (through the other voter) at an index >= x; the
    # follower waits until it has applied that far.
    (answer,) = [m for _, _, d, m in counter.passed if m.type is MT.READ_INDEX_RESP]
    assert answer.index >= x and not answer.reject
    assert req not in client.responses, client.responses[req]
    on[0] = False
    resp = client.wait(req, 2 * election_timeout_ms(c))
    assert resp is not None and resp.ok and resp.output == {"value": "v1"}, resp


def test_a_learner_of_a_single_voter_is_answered_without_a_heartbeat_round() -> None:
    """One voter is its own quorum: it answers a forwarded read at once."""
    c = SimCluster(303, SimConfig(nodes=1, learners=1))
    leader = settle(c)
    client = Client(c, "cl")
    client.write("put", "k", "v1")
    counter = MessageCounter(c)
    resp = read_at(client, "n2", "k")
    assert resp.ok and resp.output == {"value": "v1"}
    assert counter.count(MT.READ_INDEX, src="n2", dst=leader.id) == 1
    assert counter.count(MT.READ_INDEX_RESP, src=leader.id, dst="n2") == 1
    assert counter.count(MT.HEARTBEAT) == 0 or all(
        not m.context for _, _, _, m in counter.passed if m.type is MT.HEARTBEAT
    )


# -- no answer rather than a stale one -------------------------------------------


def test_a_follower_cut_off_from_the_leader_fails_the_read_instead_of_serving_stale() -> None:
    """k=v1 everywhere; the follower is cut off from the other nodes (not from the
    client) and the majority overwrites k with v2. The follower still believes in
    the leader, forwards the read, gets no answer, and fails it with "dropped" (its
    read expired) within two election timeouts: never v1. It holds nothing after."""
    c = SimCluster(304, SimConfig(nodes=3))
    leader = settle(c)
    client = Client(c, "cl")
    client.write("put", "k", "v1")
    settle(c)
    cut = followers(c, leader)[0]
    c.partition([cut], [n for n in c.nodes if n != cut])
    assert client.write("put", "k", "v2").ok

    node = c.nodes[cut]
    assert node.raw.leader == leader.id  # it has not noticed yet
    req = client.send(cut, "get", "k")
    resp = client.wait(req, 3 * election_timeout_ms(c))
    assert resp is not None and not resp.ok and resp.error == "dropped", resp
    assert not node.driver._read_batches and not node.raw.raft_for_tests.forwarded_reads
    # Later reads there are refused at once (it knows no leader) or fail the same
    # way; never a value.
    for _ in range(3):
        later = client.call(cut, "get", "k", timeout_ms=3 * election_timeout_ms(c))
        assert later is not None and not later.ok, later
    c.heal()
    settle(c)
    assert read_at(client, cut, "k").output == {"value": "v2"}


def test_a_deposed_leader_a_follower_still_believes_in_cannot_give_it_a_stale_index() -> None:
    """Five voters, check-quorum off: the leader and one follower are cut off from
    the majority, which elects a new leader and overwrites k=v1 with v2. The follower
    forwards its read to the old leader, which still thinks it leads: it cannot get a
    quorum of acknowledgements (only the follower's), so it never answers, and the
    read expires. Answering from its commit index would have returned v1."""
    c = SimCluster(305, SimConfig(nodes=5, check_quorum=False))
    old = settle(c)
    client = Client(c, "cl")
    client.write("put", "k", "v1")
    settle(c)
    buddy = followers(c, old)[0]
    majority = set(c.nodes) - {old.id, buddy}
    c.partition([old.id, buddy], sorted(majority))
    new = c.wait_for_leader(among=majority)
    assert client.call(new.id, "put", "k", "v2", seq=client.next_seq()).ok  # type: ignore[union-attr]

    counter = MessageCounter(c)
    assert c.nodes[buddy].raw.leader == old.id and old.raw.is_leader
    req = client.send(buddy, "get", "k")
    resp = client.wait(req, 3 * election_timeout_ms(c))
    assert counter.count(MT.READ_INDEX, src=buddy, dst=old.id) == 1
    assert counter.count(MT.READ_INDEX_RESP, src=old.id) == 0
    assert resp is not None and not resp.ok, resp
    assert old.raw.is_leader  # still deluded, and still harmless

    c.heal()
    c.run_for(5 * election_timeout_ms(c))
    assert read_at(client, buddy, "k").output == {"value": "v2"}


def test_a_paused_follower_that_wakes_in_an_old_term_does_not_serve_its_old_state() -> None:
    """A follower is paused (no ticks, no messages) while leadership moves on to a
    new term and k=v1 becomes v2. It wakes still believing in the old leader and
    forwards a read there; the old leader, now a follower of a newer term, refuses
    it at that term. The read fails (leadership changed) and the follower learns the
    new term; read again, it answers v2."""
    c = SimCluster(306, SimConfig(nodes=3))
    old = settle(c)
    client = Client(c, "cl")
    client.write("put", "k", "v1")
    settle(c)
    sleeper_id, other = followers(c, old)
    sleeper = c.nodes[sleeper_id]
    old_term = sleeper.term
    sleeper.tick = lambda: None  # type: ignore[method-assign]  # its clock stops
    c.isolate(sleeper_id)
    old.raw.transfer_leadership(other)
    old.process()
    new = c.wait_for_leader(among={other})
    assert new.term > old_term
    assert client.write("put", "k", "v2").ok

    c.heal()
    # Wake up to the read first, before any message from the new leader: block the
    # new leader's messages to it for now.
    c.net.block(other, sleeper_id)
    del sleeper.tick  # its clock runs again
    assert sleeper.raw.leader == old.id and sleeper.term == old_term
    counter = MessageCounter(c)
    resp = read_at(client, sleeper_id, "k")
    assert not resp.ok and resp.error == "dropped", resp
    assert counter.count(MT.READ_INDEX_RESP, src=old.id, dst=sleeper_id, reject=True) == 1
    assert sleeper.term > old_term

    c.heal()
    settle(c)
    assert read_at(client, sleeper_id, "k").output == {"value": "v2"}


def test_a_late_answer_to_a_read_of_an_earlier_process_does_not_serve_a_new_read() -> None:
    """A follower forwards a read; the answer (an index before k=v2) is held back in
    the network. The follower restarts, k=v2 commits without the follower learning
    so, and the restarted follower reads again. Delivered now, the old answer must
    not serve the new read (it would answer v1): contexts differ between
    incarnations of a node, so the read waits for its own answer, and v2."""
    c = SimCluster(307, SimConfig(nodes=3))
    leader = settle(c)
    client = Client(c, "cl")
    client.write("put", "k", "v1")
    settle(c)
    f = followers(c, leader)[0]
    held: list[Message] = []

    def hold(src: str, dst: str, m: object) -> bool:
        if isinstance(m, Message) and m.type is MT.READ_INDEX_RESP and dst == f:
            held.append(m)
            return True
        return False

    MessageCounter(c, hold)
    client.send(f, "get", "k")
    assert c.run_until(lambda: bool(held), election_timeout_ms(c))
    c.crash(f)
    c.restart(f)
    node = c.nodes[f]
    assert c.run_until(lambda: node.replica.applied_index >= held[0].index, 1_000)
    on, _ = hold_commit_from(c, f, leader.raw.last_index() + 1)
    assert client.write("put", "k", "v2").ok

    req = client.send(f, "get", "k")
    c.run_for(5)
    for m in held:
        node.receive(m)
    c.run_for(election_timeout_ms(c))
    assert req not in client.responses, client.responses[req]  # the old answer did not count
    on[0] = False
    resp = client.wait(req, election_timeout_ms(c))
    assert resp is not None and resp.output == {"value": "v2"}, resp


# -- the engine's rules, message by message --------------------------------------


def forwarded_read(net: HandNet, follower: str, ctx: bytes) -> Message:
    net[follower].raw.read_index(ctx)
    net.process(follower)
    (m,) = net.take(lambda m: m.type is MT.READ_INDEX)
    return m


def elected(net: HandNet, leader: str) -> None:
    net.campaign(leader)
    net.deliver()
    assert net[leader].raft.role is Role.LEADER
    assert net[leader].raft.log.committed == net[leader].raft.log.last_index()


def test_the_leader_answers_a_forwarded_read_only_after_a_quorum_round() -> None:
    net = HandNet(["n1", "n2", "n3"])
    elected(net, "n1")
    m = forwarded_read(net, "n2", b"r1")
    assert m.to == "n1" and m.context == b"r1"
    assert sendable_before_persist(m)
    net.step(m)
    assert not [q for q in net.queue if q.type is MT.READ_INDEX_RESP]
    beats = net.take(lambda q: q.type is MT.HEARTBEAT and q.context == b"r1")
    assert {b.to for b in beats} == {"n2", "n3"}
    commit = net["n1"].raft.log.committed
    net.step(next(b for b in beats if b.to == "n3"))
    net.deliver()  # n3's ack: with the leader's own, a quorum
    assert net["n2"].read_states == [ReadState(commit, b"r1")]


def test_reads_arriving_together_share_one_heartbeat_round() -> None:
    net = HandNet(["n1", "n2", "n3"])
    elected(net, "n1")
    asks = [forwarded_read(net, "n2", b"a"), forwarded_read(net, "n3", b"b")]
    leader = net["n1"]
    for m in asks:
        leader.raw.step(m)
    leader.raw.read_index(b"own")
    net.process("n1")
    beats = [m for m in net.queue if m.type is MT.HEARTBEAT]
    assert sorted(b.to for b in beats) == ["n2", "n3"] and {b.context for b in beats} == {b"own"}
    net.deliver()
    commit = leader.raft.log.committed
    assert net["n2"].read_states == [ReadState(commit, b"a")]
    assert net["n3"].read_states == [ReadState(commit, b"b")]
    assert leader.read_states == [ReadState(commit, b"own")]


def test_an_answer_from_an_older_term_or_another_node_is_ignored() -> None:
    net = HandNet(["n1", "n2", "n3"])
    elected(net, "n1")
    m = forwarded_read(net, "n2", b"r1")
    net.step(m)
    net.deliver()
    assert net["n2"].read_states == [ReadState(net["n1"].raft.log.committed, b"r1")]

    m = forwarded_read(net, "n2", b"r2")
    forged = Message(MT.READ_INDEX_RESP, "n2", "n3", term=m.term, index=1, context=b"r2")
    net.step(forged)  # not the leader the read was sent to
    assert len(net["n2"].read_states) == 1
    # A new term begins before the answer arrives: the read is dropped, and the old
    # leader's answer, from the older term, serves nothing.
    net.step(m)
    assert net.take(lambda q: q.type is MT.HEARTBEAT and q.context == b"r2")  # lost
    net["n1"].raw.transfer_leadership("n3")
    net.process("n1")
    net.deliver()
    assert net["n3"].raft.role is Role.LEADER and net["n2"].raft.term > m.term
    assert net["n2"].dropped_reads == [b"r2"]
    stale = Message(MT.READ_INDEX_RESP, "n2", "n1", term=m.term, index=1, context=b"r2")
    net.step(stale)
    assert len(net["n2"].read_states) == 1


def test_a_read_without_an_answer_expires_after_two_election_timeouts() -> None:
    net = HandNet(["n1", "n2", "n3"], election_tick=10)
    elected(net, "n1")
    forwarded_read(net, "n2", b"r1")  # taken from the queue: lost
    net.tick("n2", 20)
    assert net["n2"].expired_reads == []
    net.tick("n2", 1)
    assert net["n2"].expired_reads == [b"r1"]
    assert not net["n2"].raft.forwarded_reads


def test_a_node_that_knows_no_leader_refuses_at_once() -> None:
    net = HandNet(["n1", "n2", "n3"])
    with pytest.raises(ProposalDropped) as e:
        net["n2"].raw.read_index(b"r1")
    assert e.value.code is DropCode.NOT_LEADER and e.value.leader is None


def test_a_non_leader_and_a_leader_asked_by_a_non_member_refuse() -> None:
    net = HandNet(["n1", "n2", "n3"])
    elected(net, "n1")
    net.step(Message(MT.READ_INDEX, "n3", "n2", term=net["n3"].raft.term, context=b"a"))
    (refusal,) = net.take(lambda q: q.type is MT.READ_INDEX_RESP)
    assert refusal.reject and refusal.to == "n2" and not sendable_before_persist(refusal)
    net.step(Message(MT.READ_INDEX, "n1", "n9", term=net["n1"].raft.term, context=b"b"))
    (refusal,) = net.take(lambda q: q.type is MT.READ_INDEX_RESP)
    assert refusal.reject and refusal.to == "n9"


def test_read_contexts_differ_between_incarnations_of_a_node() -> None:
    c = SimCluster(308, SimConfig(nodes=3))
    node = c.nodes["n1"]
    first = node.driver._read_prefix
    c.crash("n1")
    c.restart("n1")
    assert node.driver._read_prefix != first
    a = Driver(node.raw, storage=node, transport=node, state=node.replica, call_soon=None,
               hooks=node.driver._hooks)  # fmt: skip
    b = Driver(node.raw, storage=node, transport=node, state=node.replica, call_soon=None,
               hooks=node.driver._hooks)  # fmt: skip
    assert a._read_prefix != b._read_prefix  # random by default
