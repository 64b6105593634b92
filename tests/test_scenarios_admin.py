"""Scenario tests: configuration changes and leadership transfers through the driver.

``Driver.submit_conf_change`` and ``Driver.transfer_leadership`` are what raft-node's
membership and transfer calls use; here the deterministic simulator runs the same
driver, and each test checks what the caller is told against what the cluster did.
Seeds are fixed and time is virtual, so a failure replays exactly.
"""

from __future__ import annotations

from typing import Any

from simtools import MessageCounter
from simtools_membership import (
    add_learner,
    caught_up,
    converge,
    is_leave_entry,
    make_cluster,
    propose_puts,
    wait_applied,
)

from raft_core.confchange import ChangeOp, ConfChange
from raft_core.driver import Failure, FailureCode
from raft_core.sim.node import SimNode
from raft_core.types import DropCode, Message, MessageType

ADD_VOTER, REMOVE = ChangeOp.ADD_VOTER, ChangeOp.REMOVE


class Answers:
    """The outcomes one caller was told, in order (the driver's token)."""

    def __init__(self) -> None:
        self.told: list[tuple[Any, Any] | Failure] = []

    def __call__(self, outcome: tuple[Any, Any] | Failure) -> None:
        self.told.append(outcome)

    def only(self) -> tuple[Any, Any] | Failure:
        assert len(self.told) == 1, f"expected exactly one answer, got {self.told}"
        return self.told[0]


def submit_change(node: SimNode, *changes: tuple[ChangeOp, str]) -> tuple[Answers, int, int]:
    """Submit a change at ``node`` through its driver; (answers, index, term) of the
    entry it appended."""
    answers = Answers()
    index, term = node.raw.last_index() + 1, node.term
    node.driver.submit_conf_change(ConfChange(list(changes)), answers)
    assert not answers.told, f"refused: {answers.told}"
    assert node.raw.log_term(index) == term, "the change must be in the leader's log"
    return answers, index, term


def test_a_voter_change_is_answered_once_its_joint_configuration_is_left():
    """Promoting a learner goes through a joint configuration. The caller is answered
    after the leave-joint entry is applied, with the steady configuration and the
    index of the change itself; never while the cluster is still joint."""
    c = make_cluster(301)
    add_learner(c, "n4")
    assert c.run_until(lambda: caught_up(c, "n4"), 5_000), c.dump()
    ld = c.leader()
    answers, index, _ = submit_change(ld, (ADD_VOTER, "n4"))
    seen_joint = []
    assert c.run_until(lambda: bool(answers.told) or seen_joint.append(ld.conf.joint), 5_000)
    assert any(seen_joint), "the change went through a joint configuration first"
    told_index, conf = answers.only()
    assert told_index == index
    assert not conf.joint and "n4" in conf.voters and conf == ld.conf
    leave = ld.raw.entry_at(ld.replica.applied_index)
    later = [ld.raw.entry_at(i) for i in range(index + 1, ld.replica.applied_index + 1)]
    assert any(is_leave_entry(e) for e in later), f"answered before leaving: {leave}"


def test_a_learner_change_is_answered_once_applied():
    """A change that touches only learners applies directly: one answer, no joint."""
    c = make_cluster(302)
    ld = c.leader()
    c.add_node("n4")
    answers, index, _ = submit_change(ld, (ChangeOp.ADD_LEARNER, "n4"))
    assert c.run_until(lambda: bool(answers.told), 5_000), c.dump()
    told_index, conf = answers.only()
    assert told_index == index and conf.learners == frozenset({"n4"})


def test_a_replaced_conf_change_is_answered_replaced():
    """The leader appends a change while cut off from the others; they elect a new
    leader, which commits its own entries at that index. When the old leader rejoins,
    its change is overwritten, and its caller is told REPLACED (not executed): the
    configuration never changed anywhere."""
    c = make_cluster(303)
    old = c.leader()
    rest = sorted(set(c.nodes) - {old.id})
    conf0 = old.conf
    converge(c, sorted(c.nodes))
    c.isolate(old.id)
    answers, index, term = submit_change(old, (REMOVE, rest[0]))
    new = c.wait_for_leader(among=set(rest))
    wait_applied(c, propose_puts(c, 5, prefix="z"), rest)
    assert not answers.told, "nothing is known while the old leader is cut off"
    c.heal()
    assert c.run_until(lambda: bool(answers.told), 5_000), c.dump()
    failure = answers.only()
    assert isinstance(failure, Failure) and failure.code is FailureCode.REPLACED
    assert not failure.indeterminate
    assert old.raw.log_term(index) == new.term != term
    converge(c, sorted(c.nodes))
    assert all(n.conf == conf0 for n in c.nodes.values())


def test_a_conf_change_skipped_by_a_snapshot_has_an_unknown_outcome():
    """As above, but the new leader compacts its log past the change's index before
    the old leader rejoins, so the old leader catches up by snapshot. It never sees
    the entry that replaced its change, so it cannot tell whether the change
    committed: the caller is told UNKNOWN (indeterminate), never "done"."""
    c = make_cluster(304, keep_entries=0)
    old = c.leader()
    rest = sorted(set(c.nodes) - {old.id})
    converge(c, sorted(c.nodes))
    c.isolate(old.id)
    answers, index, _ = submit_change(old, (REMOVE, rest[0]))
    new = c.wait_for_leader(among=set(rest))
    wait_applied(c, propose_puts(c, 8, prefix="z"), rest)
    snap = new.take_snapshot()
    assert snap is not None and snap.meta.index > index
    assert new.raw.first_index() > index, "the new leader no longer holds that index"
    c.heal()
    assert c.run_until(lambda: bool(answers.told), 5_000), c.dump()
    failure = answers.only()
    assert isinstance(failure, Failure) and failure.code is FailureCode.UNKNOWN
    assert failure.indeterminate
    assert c.events_named("snapshot_installed", node=old.id)


def test_a_second_change_while_one_is_in_flight_is_refused_at_once():
    c = make_cluster(305)
    ld = c.leader()
    first, _, _ = submit_change(ld, (REMOVE, sorted(set(c.nodes) - {ld.id})[0]))
    second = Answers()
    ld.driver.submit_conf_change(ConfChange([(REMOVE, ld.id)]), second)
    failure = second.only()
    assert isinstance(failure, Failure) and failure.code is FailureCode.REFUSED
    assert failure.drop is DropCode.CONF_CHANGE_IN_FLIGHT
    assert c.run_until(lambda: bool(first.told), 5_000)
    assert not isinstance(first.only(), Failure)


def test_a_leadership_transfer_is_answered_with_the_new_leader():
    c = make_cluster(306)
    ld = c.leader()
    converge(c, sorted(c.nodes))
    target = sorted(set(c.nodes) - {ld.id})[0]
    answers = Answers()
    ld.driver.transfer_leadership(target, answers)
    assert c.run_until(lambda: bool(answers.told), 5_000), c.dump()
    leader, term = answers.only()
    assert leader == target and c.nodes[target].raw.is_leader and term == c.nodes[target].term


def test_a_lost_timeout_now_is_sent_again_and_the_transfer_completes():
    """The leader's "campaign now" can be lost, or ignored by a target that has not
    yet applied the change that made it a voter (found by the process suite: a
    transfer right after a promotion aborted). The leader repeats it on the target's
    next acknowledgement, so the transfer still completes within its timeout."""
    c = make_cluster(309)
    ld = c.leader()
    converge(c, sorted(c.nodes))
    target = sorted(set(c.nodes) - {ld.id})[0]
    lost: list[Message] = []

    def lose_first_timeout_now(src: str, dst: str, msg: object) -> bool:
        if isinstance(msg, Message) and msg.type is MessageType.TIMEOUT_NOW and not lost:
            lost.append(msg)
            return True
        return False

    net = MessageCounter(c, drop=lose_first_timeout_now)
    answers = Answers()
    ld.driver.transfer_leadership(target, answers)
    assert c.run_until(lambda: bool(answers.told), 5_000), c.dump()
    leader, term = answers.only()
    assert lost and leader == target and c.nodes[target].raw.is_leader
    assert term == c.nodes[target].term
    assert net.count(MessageType.TIMEOUT_NOW, src=ld.id, dst=target) >= 1
    net.remove()


def test_a_transfer_to_an_unreachable_voter_is_answered_aborted():
    """The engine gives up on a transfer whose target does not take over within an
    election timeout; the caller is told ABORTED, and the leader keeps leading."""
    c = make_cluster(307)
    ld = c.leader()
    target = sorted(set(c.nodes) - {ld.id})[0]
    c.isolate(target)
    answers = Answers()
    ld.driver.transfer_leadership(target, answers)
    assert c.run_until(lambda: bool(answers.told), 5_000), c.dump()
    failure = answers.only()
    assert isinstance(failure, Failure) and failure.code is FailureCode.ABORTED
    assert ld.raw.is_leader and ld.raw.transferring_to is None


def test_a_transfer_asked_of_a_follower_is_refused_naming_the_leader():
    c = make_cluster(308)
    ld = c.leader()
    follower = c.nodes[sorted(set(c.nodes) - {ld.id})[0]]
    answers = Answers()
    follower.driver.transfer_leadership(ld.id, answers)
    failure = answers.only()
    assert isinstance(failure, Failure) and failure.drop is DropCode.NOT_LEADER
    assert failure.leader == ld.id
