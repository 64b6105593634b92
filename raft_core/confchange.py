"""Configuration changes: what a change entry says, and the configuration it yields.

Every change that alters the voter set goes through joint consensus (dissertation
chapter 4): the entry moves the cluster from C_old to C_old,new with ``auto_leave``
set, and once the leader has applied it, it proposes the empty change that moves to
C_new. Changes that only touch learners cannot affect any quorum and apply directly.

Configurations take effect when their entry is *applied* (etcd's choice), not when
it is appended (the dissertation's). That way a configuration never has to be
rolled back when an uncommitted entry is truncated, the snapshot's configuration is
simply the applied one, and the rule "one change in flight" is "no change proposed
while an earlier one is unapplied".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import msgpack

from .types import ConfState, NodeId


class ChangeOp(IntEnum):
    ADD_VOTER = 0  # also promotes an existing learner
    ADD_LEARNER = 1
    REMOVE = 2


class ConfChangeError(ValueError):
    """A change that cannot be applied to the current configuration."""


@dataclass(slots=True)
class ConfChange:
    """A set of changes applied together; no changes at all means "leave joint".

    ``context`` is opaque to the engine: the node server carries the new members'
    network addresses in it so that every node learns them from the log.
    """

    changes: list[tuple[ChangeOp, NodeId]] = field(default_factory=list)
    context: bytes = b""

    @property
    def is_leave_joint(self) -> bool:
        return not self.changes

    def encode(self) -> bytes:
        return msgpack.packb([[[int(op), node] for op, node in self.changes], self.context])

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        try:
            raw_changes, context = msgpack.unpackb(data)
            changes = [(ChangeOp(op), str(node)) for op, node in raw_changes]
        except (ValueError, TypeError, msgpack.ExtraData) as e:
            raise ConfChangeError(f"undecodable configuration change entry: {e}") from e
        return cls(changes, bytes(context))


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration that results from applying ``cc`` to ``conf``."""
    if cc.is_leave_joint:
        if not conf.joint:
            raise ConfChangeError("not in a joint configuration: nothing to leave")
        return ConfState(voters=conf.voters, learners=conf.learners)
    if conf.joint:
        raise ConfChangeError(
            "a joint configuration is still in force; wait until it is left before "
            "changing membership again"
        )
    voters = set(conf.voters)
    learners = set(conf.learners)
    for op, node in cc.changes:
        if op is ChangeOp.ADD_VOTER:
            if node in voters:
                raise ConfChangeError(f"{node} is already a voter")
            learners.discard(node)
            voters.add(node)
        elif op is ChangeOp.ADD_LEARNER:
            if node in voters:
                raise ConfChangeError(
                    f"{node} is a voter; demoting a voter to learner is not supported "
                    "(remove it, then add it back as a learner)"
                )
            if node in learners:
                raise ConfChangeError(f"{node} is already a learner")
            learners.add(node)
        else:
            if node not in voters and node not in learners:
                raise ConfChangeError(f"{node} is not a member")
            voters.discard(node)
            learners.discard(node)
    if not voters:
        raise ConfChangeError("the change would leave no voters")
    if voters == conf.voters or not conf.voters:
        # No voter changes, or the founding configuration of a new cluster: no
        # quorum exists yet that a joint configuration would have to protect.
        return ConfState(voters=frozenset(voters), learners=frozenset(learners))
    return ConfState(
        voters=frozenset(voters),
        voters_outgoing=conf.voters,
        learners=frozenset(learners),
        auto_leave=True,
    )
