"""Quorum arithmetic for simple majorities and joint configurations.

Kept apart from the protocol so that the rule "a joint configuration needs a
majority of the old voters AND a majority of the new voters" lives in exactly one
place, for commits, elections, check-quorum and read confirmation alike.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from enum import Enum

from .types import ConfState, NodeId

# An empty voter set places no constraint (it is the "outgoing" half of a
# non-joint configuration), so its committed index is unbounded.
UNBOUNDED = 1 << 62


class VoteResult(Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority_committed(voters: Collection[NodeId], match: Callable[[NodeId], int]) -> int:
    """Largest index acknowledged by a majority of ``voters``."""
    if not voters:
        return UNBOUNDED
    acked = sorted((match(v) for v in voters), reverse=True)
    return acked[len(acked) // 2]


def joint_committed(conf: ConfState, match: Callable[[NodeId], int]) -> int:
    return min(
        majority_committed(conf.voters, match),
        majority_committed(conf.voters_outgoing, match),
    )


def majority_vote(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    need = len(voters) // 2 + 1
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_vote(conf: ConfState, votes: Mapping[NodeId, bool]) -> VoteResult:
    incoming = majority_vote(conf.voters, votes)
    outgoing = majority_vote(conf.voters_outgoing, votes)
    if incoming is VoteResult.LOST or outgoing is VoteResult.LOST:
        return VoteResult.LOST
    if incoming is VoteResult.WON and outgoing is VoteResult.WON:
        return VoteResult.WON
    return VoteResult.PENDING


def joint_active(conf: ConfState, active: Collection[NodeId]) -> bool:
    """True when the nodes in ``active`` form a quorum of ``conf``."""
    votes = {v: True for v in conf.all_voters() if v in active}
    return joint_vote(conf, votes) is VoteResult.WON
