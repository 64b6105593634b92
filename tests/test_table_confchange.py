"""Membership changes as a table: configuration, change -> configuration or refusal.

Configurations are written "voters/learners" with "voters|outgoing" while joint and a
trailing "*" for auto-leave; a change as "+v x" (add voter), "+l x" (add learner),
"-x" (remove), "leave" (leave the joint configuration).
"""

from __future__ import annotations

import pytest

from raft_core.confchange import ChangeOp, ConfChange, ConfChangeError, apply_change
from raft_core.types import ConfState


def parse_conf(spec: str) -> ConfState:
    auto = spec.endswith("*")
    voters, _, learners = spec.rstrip("*").partition("/")
    incoming, _, outgoing = voters.partition("|")
    return ConfState(
        voters=frozenset(incoming),
        voters_outgoing=frozenset(outgoing),
        learners=frozenset(learners),
        auto_leave=auto,
    )


def parse_change(spec: str) -> ConfChange:
    if spec == "leave":
        return ConfChange()
    ops = []
    for part in spec.split(","):
        part = part.strip()
        if part.startswith("+v "):
            ops.append((ChangeOp.ADD_VOTER, part[3:]))
        elif part.startswith("+l "):
            ops.append((ChangeOp.ADD_LEARNER, part[3:]))
        else:
            ops.append((ChangeOp.REMOVE, part[1:]))
    return ConfChange(ops)


# before, change, after (a configuration) or the start of the refusal
TABLE = [
    # the founding configuration of a new cluster: no quorum to protect yet
    ("", "+v a, +v b, +v c", "abc"),
    # learners never change a quorum: simple, not joint
    ("abc", "+l d", "abc/d"),
    ("abc/d", "-d", "abc"),
    # any voter change goes through a joint configuration, left automatically
    ("abc/d", "+v d", "abcd|abc*"),
    ("abc", "-c", "ab|abc*"),
    ("abc/d", "+v d, -a", "bcd|abc*"),
    ("abcd|abc*", "leave", "abcd"),
    ("ab|abc*", "leave", "ab"),
    # refusals
    ("abc", "leave", "not in a joint configuration"),
    ("abcd|abc*", "+l e", "a joint configuration is still in force"),
    ("abc", "+v a", "a is already a voter"),
    ("abc", "+l a", "a is a voter; demoting"),
    ("abc/d", "+l d", "d is already a learner"),
    ("abc", "-z", "z is not a member"),
    ("a", "-a", "the change would leave no voters"),
]


@pytest.mark.parametrize(("before", "change", "after"), TABLE)
def test_change(before: str, change: str, after: str) -> None:
    conf, cc = parse_conf(before), parse_change(change)
    if " " in after:  # a refusal, not a configuration
        with pytest.raises(ConfChangeError) as refused:
            apply_change(conf, cc)
        assert str(refused.value).startswith(after)
    else:
        assert apply_change(conf, cc) == parse_conf(after)


@pytest.mark.parametrize("change", ["+v a, +l b", "+l x", "-a, -b", "leave"])
def test_a_change_survives_encoding(change: str) -> None:
    cc = parse_change(change)
    assert ConfChange.decode(cc.encode()) == cc
