"""The replicated log as one node sees it: compacted prefix, entries, and cursors.

Cursors, always ``snapshot_index <= applied <= applying <= committed <= last_index``
except that ``committed`` may run ahead of ``stable`` (entries persisted):

* ``stable``: entries up to here are on disk; later ones go out in the next Ready.
* ``committed``: known committed; never decreases, not even across restarts.
* ``applying``: handed to the driver for applying; ``applied`` once it confirmed.
"""

from __future__ import annotations

from .types import Entry, Snapshot, SnapshotMeta


class LogInvariantError(RuntimeError):
    """A bug: an operation would break a Raft log invariant."""


class RaftLog:
    __slots__ = (
        "applied",
        "applying",
        "committed",
        "entries",
        "offset",
        "pending_snapshot",
        "snapshot",
        "snapshot_term",
        "stable",
    )

    def __init__(
        self,
        snapshot: Snapshot | None = None,
        entries: list[Entry] | None = None,
        committed: int = 0,
    ) -> None:
        meta = snapshot.meta if snapshot is not None else SnapshotMeta()
        self.offset = meta.index  # index of the last compacted entry
        self.snapshot_term = meta.term
        self.entries: list[Entry] = list(entries or [])
        if self.entries and self.entries[0].index != self.offset + 1:
            raise LogInvariantError(
                f"log starts at {self.entries[0].index}, expected {self.offset + 1}"
            )
        self.stable = self.last_index()
        self.committed = max(min(committed, self.last_index()), self.offset)
        self.applied = self.offset
        self.applying = self.offset
        # The latest snapshot this node holds (sent to followers that fell behind).
        self.snapshot: Snapshot | None = snapshot
        # A snapshot received from the leader that the driver has not persisted yet.
        self.pending_snapshot: Snapshot | None = None

    # -- reading -------------------------------------------------------------

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when compacted away or beyond the end."""
        if index == self.offset:
            return self.snapshot_term
        i = index - self.offset - 1
        if i < 0 or i >= len(self.entries):
            return None
        return self.entries[i].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.offset - 1]

    def slice(self, lo: int, hi: int, max_bytes: int = 0) -> list[Entry]:
        """Entries [lo, hi), at least one, then as many as fit in ``max_bytes``."""
        if lo <= self.offset:
            raise LogInvariantError(f"slice from {lo} but entries up to {self.offset} compacted")
        a, b = lo - self.offset - 1, min(hi, self.last_index() + 1) - self.offset - 1
        if max_bytes <= 0:
            return self.entries[a:b]
        out: list[Entry] = []
        size = 0
        for e in self.entries[a:b]:
            size += e.size()
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The vote rule: the candidate's log is at least as up to date as ours."""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, with that term.

        Terms never decrease along a log, so a binary search suffices. Used on both
        sides of fast backtracking: the follower computes the hint, the leader
        jumps to where its own log can possibly match.
        """
        index = min(index, self.last_index())
        if index <= self.offset:
            return index, (self.snapshot_term if index == self.offset else 0)
        lo, hi = self.offset + 1, index  # answer is in [offset, index]
        if self.entry(index).term <= term:
            return index, self.entry(index).term
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.entry(mid).term <= term:
                lo = mid + 1
            else:
                hi = mid - 1
        found = hi
        return found, (self.term(found) or 0)

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stable - self.offset :]

    def next_committed(self, max_bytes: int, max_entries: int) -> list[Entry]:
        """Committed entries not yet handed out for applying (at least one, at most
        ``max_entries`` and, past the first, ``max_bytes``)."""
        if self.committed <= self.applying:
            return []
        hi = min(self.committed, self.applying + max_entries) + 1
        return self.slice(self.applying + 1, hi, max_bytes)

    # -- writing -------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append entries, truncating any existing suffix from entries[0].index on."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise LogInvariantError(f"truncating committed entry {first} (commit {self.committed})")
        if first > self.last_index() + 1:
            raise LogInvariantError(f"gap: appending {first} after {self.last_index()}")
        del self.entries[first - self.offset - 1 :]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: list[Entry]
    ) -> int | None:
        """The AppendEntries receiver rule. Returns the new last matching index or None.

        Only entries from the first one that conflicts are written: a duplicated or
        reordered older message never truncates entries a later one appended.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for i, e in enumerate(entries):
            t = self.term(e.index)
            if t != e.term:
                if e.index <= self.offset:
                    continue  # covered by our snapshot: committed, hence identical
                self.append(entries[i:])
                break
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise LogInvariantError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Leader commit: only an entry of the current term commits by counting (Fig. 8)."""
        if index > self.committed and self.term(index) == term:
            self.committed = index
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        if self.term(index) == term and index > self.stable:
            self.stable = index

    def restore(self, snapshot: Snapshot) -> None:
        """Install a snapshot received from the leader, replacing the whole log.

        The engine only gets here when our log does not hold the snapshot's last
        entry (Figure 13, step 7); when it does, it keeps its log and just commits
        (see Raft._handle_snapshot). The driver persists the snapshot as the new
        start of the log, so a crash cannot resurrect the entries discarded here.
        """
        meta = snapshot.meta
        self.entries = []
        self.offset = meta.index
        self.snapshot_term = meta.term
        self.stable = meta.index
        self.committed = max(self.committed, meta.index)
        self.applied = self.applying = meta.index
        self.snapshot = snapshot
        self.pending_snapshot = snapshot

    def compact(self, snapshot: Snapshot, keep: int) -> None:
        """Adopt a locally taken snapshot and drop entries up to index - keep."""
        meta = snapshot.meta
        if meta.index > self.applied:
            raise LogInvariantError(f"snapshot at {meta.index} beyond applied {self.applied}")
        if snapshot.supersedes(self.snapshot):
            self.snapshot = snapshot
        cut = min(meta.index - keep, self.applied)
        if cut <= self.offset:
            return
        term = self.term(cut)
        assert term is not None
        del self.entries[: cut - self.offset]
        self.offset = cut
        self.snapshot_term = term
