"""The simulated disk: what survives a crash, written as real WAL records.

Every persisted batch is kept as the record ``DiskStorage`` would write (the WAL
format of ``raft_core/node/wal.py``). A restart recovers from those bytes through
the node's own recovery rules (``storage.replay_segment``), so the seeds exercise
them: a write in flight when the node crashed may leave a torn record at the tail
(it must be dropped), and the campaign may flip a byte inside acknowledged records
(the node must refuse to start rather than serve without them).

Records are encoded lazily, at recovery, so a run pays for them only per restart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..node.storage import replay_segment
from ..node.wal import RecordType, SegmentHeader, encode_batch, encode_header, frame
from ..rawnode import PersistedState, Ready
from ..types import Entry, HardState, Snapshot
from .invariants import InvariantViolation

_Batch = tuple[HardState | None, tuple[int, int, bool] | None, list[Entry]]


def _record(rtype: RecordType, payload: bytes) -> bytes:
    return frame(rtype, payload) + payload


class DiskMismatch(InvariantViolation):
    """Recovery from the WAL bytes disagrees with what was persisted."""


@dataclass
class Disk:
    """What survives a crash."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    # The WAL since its last rewrite: a header, then one batch per persisted Ready.
    _header: SegmentHeader | None = None
    _batches: list[_Batch] = field(default_factory=list)
    # A write that was on its way to the disk when the node crashed: its record is
    # cut short at this many bytes (the torn tail).
    _torn: tuple[_Batch, float] | None = None
    # (batch number, byte offset within its record) of a flipped byte.
    _flip: tuple[int, int] | None = None
    torn_tails_dropped: int = 0

    def __post_init__(self) -> None:
        self._rewrite()

    # -- writing ---------------------------------------------------------------

    def persist(self, rd: Ready) -> None:
        marker = None
        if rd.snapshot is not None:
            # An installed snapshot replaces the log (RaftLog.restore).
            self.snapshot = rd.snapshot
            self.entries = []
            marker = (rd.snapshot.meta.index, rd.snapshot.meta.term, True)
        if rd.entries:
            first = rd.entries[0].index
            base = self.snapshot.meta.index if self.snapshot else 0
            keep = first - base - 1
            if keep < 0:
                raise AssertionError(f"persisting entry {first} below snapshot {base}")
            del self.entries[keep:]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        self._batches.append((rd.hard_state, marker, list(rd.entries)))
        self._torn = None

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """A locally taken snapshot: the log before it is no longer needed on disk."""
        if not snapshot.supersedes(self.snapshot):
            return
        base = self.snapshot.meta.index if self.snapshot else 0
        self.entries = self.entries[snapshot.meta.index - base :]
        self.snapshot = snapshot
        self._rewrite()

    def _rewrite(self) -> None:
        """Start the WAL afresh from the current state (as a new segment would)."""
        snap = self.snapshot
        base = snap.meta.index if snap else 0
        self._header = SegmentHeader(
            1, base + 1, self.hard_state, (base, snap.meta.term) if snap else None
        )
        self._batches = [(None, None, list(self.entries))] if self.entries else []
        self._flip = None

    def last_index(self) -> int:
        base = self.snapshot.meta.index if self.snapshot else 0
        return base + len(self.entries)

    def term_at(self, index: int) -> int | None:
        """The term of the durable log entry at ``index``; None if there is none."""
        base = self.snapshot.meta.index if self.snapshot else 0
        k = index - base - 1
        return self.entries[k].term if 0 <= k < len(self.entries) else None

    def holds(self, index: int, term: int) -> bool:
        """Whether entry ``index`` of ``term`` is durable (in the log or a snapshot)."""
        base = self.snapshot.meta.index if self.snapshot else 0
        return index <= base or self.term_at(index) == term

    # -- faults ----------------------------------------------------------------

    def crash_during(self, rd: Ready, rng: random.Random) -> None:
        """The node crashed while ``rd`` was being written: maybe part of it landed."""
        if rng.random() < 0.5:
            marker = None
            if rd.snapshot is not None:
                marker = (rd.snapshot.meta.index, rd.snapshot.meta.term, True)
            self._torn = ((rd.hard_state, marker, list(rd.entries)), rng.random())

    def corrupt(self, rng: random.Random) -> bool:
        """Flip one byte of an acknowledged record that has another after it (so no
        crash could explain the damage); False if there is no such record."""
        if len(self._batches) < 2:
            return False
        self._flip = (rng.randrange(len(self._batches) - 1), rng.randrange(1 << 30))
        return True

    @property
    def damaged(self) -> bool:
        return self._flip is not None

    def repair(self) -> None:
        """What an operator restoring the damaged bytes does."""
        self._flip = None

    # -- recovery ----------------------------------------------------------------

    def image(self) -> bytes:
        """The WAL segment as ``DiskStorage`` would have it on disk now."""
        assert self._header is not None
        out = [_record(RecordType.SEGMENT_HEADER, encode_header(self._header))]
        for k, (hs, marker, entries) in enumerate(self._batches):
            rec = _record(RecordType.BATCH, encode_batch(hs, marker, entries))
            if self._flip is not None and self._flip[0] == k:
                damaged = bytearray(rec)
                damaged[self._flip[1] % len(rec)] ^= 0xFF
                rec = bytes(damaged)
            out.append(rec)
        if self._torn is not None:
            (hs, marker, entries), cut = self._torn
            rec = _record(RecordType.BATCH, encode_batch(hs, marker, entries))
            out.append(rec[: int(len(rec) * cut) or 1])
        return b"".join(out)

    def recovered(self) -> PersistedState:
        """Recover through the node's WAL rules (StorageCorruption if damaged)."""
        got = replay_segment(self.image(), Path("sim.wal"))
        base = self.snapshot.meta.index if self.snapshot else 0
        want_snap = (base, self.snapshot.meta.term) if self.snapshot else None
        if (got.hard_state, got.snapshot, got.entries) != (
            self.hard_state,
            want_snap,
            self.entries,
        ):
            raise DiskMismatch(
                f"WAL replay recovered hs={got.hard_state} snapshot={got.snapshot} "
                f"entries={[(e.index, e.term) for e in got.entries]}, but the disk holds "
                f"hs={self.hard_state} snapshot={want_snap} "
                f"entries={[(e.index, e.term) for e in self.entries]}"
            )
        if got.torn_at is not None:
            self.torn_tails_dropped += 1
            self._torn = None
        return PersistedState(
            HardState(self.hard_state.term, self.hard_state.vote, self.hard_state.commit),
            self.snapshot,
            list(self.entries),
        )
