"""A leader's view of one follower (Progress) as tables: state, event -> state.

A state is written "STATE match/next" plus, in replicate, the in-flight window
("replicate 5/9 [6 8]": messages ending at 6 and 8 are unacknowledged).
"""

from __future__ import annotations

import pytest

from raft_core.progress import Inflights, Progress, ProgressState
from raft_core.types import ConfState, Snapshot, SnapshotMeta

P, R, S = ProgressState.PROBE, ProgressState.REPLICATE, ProgressState.SNAPSHOT


def progress(state: ProgressState, match: int, nxt: int, window: int = 3) -> Progress:
    pr = Progress(match=match, next=nxt, inflights=Inflights(window, 0))
    pr.state = state
    return pr


def shape(pr: Progress) -> tuple:
    return (pr.state, pr.match, pr.next)


# state, event, -> state after, and whether the event counted (True) or was stale
EVENTS = [
    # a success moves match forward; next never goes below match + 1
    ((P, 0, 5), ("ack", 4), (P, 4, 5), True),
    ((P, 0, 5), ("ack", 7), (P, 7, 8), True),
    ((R, 6, 9), ("ack", 3), (R, 6, 9), False),  # a reordered older success
    # a rejection while probing: jump to the hint, only for the probe in flight
    ((P, 2, 9), ("reject", 8, 5), (P, 2, 5), True),
    ((P, 2, 9), ("reject", 6, 3), (P, 2, 9), False),  # not the probe we sent
    ((P, 4, 9), ("reject", 8, 1), (P, 4, 5), True),  # never below match + 1
    # a rejection while replicating: back to what is known to match
    ((R, 5, 9), ("reject", 7, 2), (R, 5, 6), True),
    ((R, 5, 9), ("reject", 4, 2), (R, 5, 9), False),  # already acknowledged
    # state changes
    ((P, 5, 3), ("become", R), (R, 5, 6), True),
    ((R, 5, 9), ("become", P), (P, 5, 6), True),
]


@pytest.mark.parametrize(("before", "event", "after", "counted"), EVENTS)
def test_event(before: tuple, event: tuple, after: tuple, counted: bool) -> None:
    pr = progress(*before)
    kind = event[0]
    if kind == "ack":
        got = pr.maybe_update(event[1])
    elif kind == "reject":
        got = pr.maybe_decrease_to(event[1], event[2])
    else:
        (pr.become_replicate if event[1] is R else pr.become_probe)()
        got = True
    assert (shape(pr), got) == (after, counted)


def test_leaving_a_snapshot_resumes_after_it() -> None:
    pr = progress(P, 3, 4)
    pr.become_snapshot(Snapshot(SnapshotMeta(20, 2, ConfState()), b"x"))
    assert pr.is_paused(), "nothing but the snapshot goes out while it is sent"
    pr.become_probe()
    assert shape(pr) == (P, 3, 21)


# Flow control: state, messages sent (last index of each) -> paused?
PAUSED = [
    ((P, 0, 1), [], False),
    ((P, 0, 1), [5], True),  # one probe at a time
    ((R, 0, 1), [2, 4], False),
    ((R, 0, 1), [2, 4, 6], True),  # window of 3 full
]


@pytest.mark.parametrize(("state", "sent", "paused"), PAUSED)
def test_paused(state: tuple, sent: list[int], paused: bool) -> None:
    pr = progress(*state)
    for last in sent:
        pr.sent_entries(last, 10)
    assert pr.is_paused() is paused


# The in-flight window: sent, acknowledged up to -> still in flight
WINDOW = [
    ([2, 4, 6], 4, 1),
    ([2, 4, 6], 1, 3),
    ([2, 4, 6], 6, 0),
]


@pytest.mark.parametrize(("sent", "acked", "left"), WINDOW)
def test_window(sent: list[int], acked: int, left: int) -> None:
    pr = progress(R, 0, 1)
    for last in sent:
        pr.sent_entries(last, 10)
    assert pr.next == sent[-1] + 1
    pr.inflights.free_le(acked)
    assert len(pr.inflights) == left
