"""Quorum arithmetic as a table: configuration, acknowledgements -> result.

Voters are written as a string of node names ("abc" is {a, b, c}); a joint
configuration as "incoming|outgoing". Match indexes and votes are per node.
"""

from __future__ import annotations

import pytest

from raft_core.quorum import UNBOUNDED, VoteResult, joint_committed, joint_vote
from raft_core.types import ConfState


def conf(spec: str) -> ConfState:
    incoming, _, outgoing = spec.partition("|")
    return ConfState(voters=frozenset(incoming), voters_outgoing=frozenset(outgoing))


# configuration, match index per node (missing: 0), committed index
COMMIT = [
    ("a", {"a": 5}, 5),  # a single voter commits alone
    ("abc", {"a": 5, "b": 3, "c": 1}, 3),  # the median of three
    ("abc", {"a": 5}, 0),  # one of three is no majority
    ("abcd", {"a": 9, "b": 7, "c": 5, "d": 1}, 5),  # four voters need three
    ("abcde", {"a": 9, "b": 9, "c": 2, "d": 2, "e": 2}, 2),
    ("abcde", {"a": 9, "b": 9, "c": 9, "d": 2, "e": 2}, 9),
    # joint: the smaller of the two majorities
    ("abc|cde", {"a": 9, "b": 9, "c": 9, "d": 1, "e": 1}, 1),
    ("abc|cde", {"a": 9, "b": 9, "c": 9, "d": 9, "e": 1}, 9),
    ("ab|c", {"a": 7, "b": 7, "c": 4}, 4),
    # an empty half constrains nothing
    ("|", {}, UNBOUNDED),
]


@pytest.mark.parametrize(("spec", "match", "want"), COMMIT)
def test_committed_index(spec: str, match: dict[str, int], want: int) -> None:
    assert joint_committed(conf(spec), lambda n: match.get(n, 0)) == want


W, L, P = VoteResult.WON, VoteResult.LOST, VoteResult.PENDING
# configuration, votes ("y" granted, "n" refused, absent: no answer yet), result
VOTES = [
    ("a", "", P),
    ("a", "ay", W),
    ("a", "an", L),
    ("abc", "ay", P),
    ("abc", "ay by", W),
    ("abc", "an bn", L),
    ("abc", "ay bn", P),
    ("abcd", "ay by", P),  # two of four is not a majority
    ("abcd", "ay by cy", W),
    ("abcd", "an bn", L),  # three can no longer say yes
    # joint: both halves must win; either losing loses
    ("abc|cde", "ay by", P),
    ("abc|cde", "ay by cy dy", W),
    ("abc|cde", "ay by dn en", L),
    ("ab|cd", "ay by cy", P),
]


@pytest.mark.parametrize(("spec", "votes", "want"), VOTES)
def test_vote_result(spec: str, votes: str, want: VoteResult) -> None:
    answers = {v[0]: v[1] == "y" for v in votes.split()}
    assert joint_vote(conf(spec), answers) is want
