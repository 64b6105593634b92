"""The Raft log as tables: a log, an operation -> the log and commit index after.

A log is written as the terms of its entries from index 1 ("1123" is entries 1..4
with terms 1, 1, 2, 3); after a compaction a leading "|" marks where the kept log
starts, preceded by the terms compacted away ("11|23": entries 1..2 compacted).
"""

from __future__ import annotations

import pytest

from raft_core.log import LogInvariantError, RaftLog
from raft_core.types import ConfState, Entry, Snapshot, SnapshotMeta


def entries(first: int, terms: str) -> list[Entry]:
    return [Entry(first + i, int(t)) for i, t in enumerate(terms)]


def make_log(spec: str, committed: int = 0) -> RaftLog:
    gone, _, kept = spec.rpartition("|")
    snap = None
    if gone:
        snap = Snapshot(SnapshotMeta(len(gone), int(gone[-1]), ConfState()), b"")
    return RaftLog(snap, entries(len(gone) + 1, kept), committed)


def shape(lg: RaftLog) -> str:
    kept = "".join(str(e.term) for e in lg.entries)
    return f"{lg.offset}|{kept}" if lg.offset else kept


# The AppendEntries receiver rule (maybe_append):
# log, commit, (prev index, prev term, leader commit, entry terms from prev+1)
#   -> result (last new index or None for a rejection), log after, commit after
APPEND = [
    # a plain append; the commit index follows the leader's, up to the last new entry
    ("11", 0, (2, 1, 3, "22"), 4, "1122", 3),
    # the leader's commit index beyond what this append carries is not trusted
    ("11", 0, (2, 1, 9, "2"), 3, "112", 3),
    # stale entries of an old term after the vouched ones are not committed
    ("1111", 1, (1, 1, 4, "1"), 2, "1111", 2),
    # a conflict truncates from the first differing entry, then appends
    ("1122", 1, (2, 1, 2, "33"), 4, "1133", 2),
    # a duplicate (or reordered older) append never truncates
    ("1122", 0, (1, 1, 0, "1"), 2, "1122", 0),
    # a prev entry we do not hold: rejected, nothing changes
    ("11", 1, (3, 1, 3, "1"), None, "11", 1),
    ("112", 1, (3, 1, 3, "1"), None, "112", 1),
    # right after a compacted prefix: the snapshot's last entry is the prev entry
    ("11|22", 2, (2, 1, 4, "22"), 4, "2|22", 4),
    # an entry the snapshot replaced is unknown: the engine answers such appends with
    # its commit index before the log is asked (Raft._handle_append)
    ("11|22", 2, (1, 1, 4, "122"), None, "2|22", 2),
]


@pytest.mark.parametrize(("log", "commit", "msg", "result", "after", "commit_after"), APPEND)
def test_append(log, commit, msg, result, after, commit_after) -> None:
    lg = make_log(log, commit)
    prev, prev_term, leader_commit, terms = msg
    assert lg.maybe_append(prev, prev_term, leader_commit, entries(prev + 1, terms)) == result
    assert (shape(lg), lg.committed) == (after, commit_after)


# Conflict hints (find_conflict_by_term): log, (index, term) -> (index, term)
HINTS = [
    ("1123", (4, 3), (4, 3)),  # the entry itself qualifies
    ("1123", (4, 2), (3, 2)),  # back over a whole term at once
    ("1123", (4, 1), (2, 1)),
    ("1123", (9, 5), (4, 3)),  # beyond the end: from the last entry
    ("1123", (4, 0), (0, 0)),  # nothing qualifies
    ("11|23", (4, 1), (2, 1)),  # down to the snapshot
]


@pytest.mark.parametrize(("log", "query", "want"), HINTS)
def test_conflict_hint(log: str, query: tuple[int, int], want: tuple[int, int]) -> None:
    assert make_log(log).find_conflict_by_term(*query) == want


# Compaction at an applied index, keeping some entries: log, applied, (index, keep) -> log
COMPACT = [
    ("1122", 4, (3, 0), "3|2"),
    ("1122", 4, (3, 1), "2|22"),
    ("1122", 4, (3, 5), "1122"),  # nothing old enough to drop
    ("1122", 2, (2, 0), "2|22"),
]


@pytest.mark.parametrize(("log", "applied", "snap", "after"), COMPACT)
def test_compact(log: str, applied: int, snap: tuple[int, int], after: str) -> None:
    lg = make_log(log, applied)
    lg.applied = lg.applying = applied
    index, keep = snap
    lg.compact(Snapshot(SnapshotMeta(index, lg.term(index) or 0, ConfState()), b""), keep)
    assert shape(lg) == after


# Misuse the log refuses (bugs, not conditions): log, commit, operation
REFUSED = [
    ("1122", 3, lambda lg: lg.append(entries(3, "3")), "truncating committed entry 3"),
    ("11", 0, lambda lg: lg.append(entries(4, "1")), "gap: appending 4 after 2"),
    ("11", 0, lambda lg: lg.commit_to(3), "commit 3 beyond last index 2"),
    ("1122", 2, lambda lg: lg.compact(Snapshot(SnapshotMeta(4, 2)), 0), "snapshot at 4 beyond"),
]


@pytest.mark.parametrize(("log", "commit", "op", "error"), REFUSED)
def test_refused(log, commit, op, error) -> None:
    lg = make_log(log, commit)
    lg.applied = lg.applying = commit
    with pytest.raises(LogInvariantError, match=error):
        op(lg)
