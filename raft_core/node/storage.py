"""Durable storage for one Raft node: a segmented write-ahead log plus snapshot files.

Directory layout::

    <data_dir>/LOCK                               flock'd while a DiskStorage is open
    <data_dir>/wal/<seq:016d>-<first:016d>.wal    WAL segments (format: wal.py)
    <data_dir>/snap/<index:016d>-<term:016d>.snap snapshot files (format: snapfile.py)

Contract with the driver:

* ``save(hard_state, entries, snapshot)`` persists one ready batch with a single WAL
  record and a single fsync (group commit). When it returns, everything is durable
  (``fsync="always"``) and the driver may send the messages that depend on it.
* ``entries`` must be contiguous and start at most one past the last index. Entries
  starting at or below the last index replace everything from that index on (a
  follower truncating a conflicting suffix). Entries at or below the snapshot index
  are ignored.
* A snapshot replaces the log through its index. Entries after it are kept only if the
  log holds the snapshot's own entry with the same term (Raft paper, section 7);
  otherwise the log restarts right after the snapshot.
* ``compact(upto)`` deletes whole old segments whose entries are all ``<= upto``; it
  refuses to go past the live snapshot, which would lose committed entries.

Not thread-safe: one driver thread owns a DiskStorage.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

import msgpack

from raft_core.node.snapfile import (
    TMP_SUFFIX,
    parse_snapshot_name,
    read_snapshot_file,
    snapshot_name,
    write_snapshot_file,
    write_snapshot_file_with,
)
from raft_core.node.wal import (
    Batch,
    DiskFull,
    RecordType,
    SegmentHeader,
    StorageCorruption,
    StorageError,
    datasync,
    decode_batch,
    decode_header,
    describe_bad_record,
    encode_batch,
    encode_header,
    find_valid_record,
    frame,
    fsync_dir,
    parse_segment_name,
    scan_records,
    segment_name,
    write_all,
)
from raft_core.types import Entry, HardState, Snapshot, SnapshotMeta

__all__ = [
    "DiskFull",
    "DiskStorage",
    "FsyncMode",
    "RecoveredState",
    "ReplayedSegment",
    "StorageCorruption",
    "StorageError",
    "replay_segment",
]

log = logging.getLogger(__name__)

FsyncMode = Literal["always", "never"]
MiB = 1 << 20
DEFAULT_SEGMENT_BYTES = 64 * MiB
KEEP_SNAPSHOTS = 2

_REFUSE = (
    "The node refuses to start so that it does not lose or rewrite committed data. "
    "To recover: restore this data directory from a backup, or move it aside and let the "
    "node catch up from the leader via a snapshot, starting from an empty data directory "
    "(a wiped node has forgotten its term and vote: prefer removing it from the cluster "
    "configuration and adding it back, and never do this to a majority of the nodes)."
)
_MALFORMED = (ValueError, TypeError, KeyError, msgpack.UnpackException)


def _corrupt(path: Path, offset: int, what: str) -> StorageCorruption:
    return StorageCorruption(f"WAL segment {path}, byte offset {offset}: {what}. {_REFUSE}")


@dataclass(slots=True)
class RecoveredState:
    """What ``DiskStorage.open`` found on disk, ready to seed the Raft engine."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]  # exactly the entries after the snapshot index, contiguous


@dataclass(slots=True)
class _Segment:
    seq: int
    first_index: int
    path: Path
    max_index: int = 0  # highest entry index ever written to this segment (0: none)


class _Replay:
    """Log state while replaying the WAL.

    Mirrors the writer, except that after compaction it may only know a suffix of the
    log (``log_start`` > snapshot index + 1) until a later snapshot covers the rest.
    """

    __slots__ = ("entries", "hs", "log_start", "snap")

    def __init__(self, header: SegmentHeader) -> None:
        self.hs = header.hard_state
        self.snap = header.snapshot
        self.log_start = header.first_index
        self.entries: list[Entry] = []

    @property
    def next_index(self) -> int:
        return self.log_start + len(self.entries)

    @property
    def snap_index(self) -> int:
        return self.snap[0] if self.snap is not None else 0

    def apply(self, batch: Batch, path: Path, offset: int) -> None:
        if batch.snapshot is not None:
            s_index, s_term, reset = batch.snapshot
            if s_index < self.snap_index:
                raise _corrupt(
                    path,
                    offset,
                    f"snapshot marker {s_index} is older than the live snapshot {self.snap_index}",
                )
            if reset:
                self.entries = []
                self.log_start = s_index + 1
            elif s_index >= self.log_start:
                del self.entries[: s_index - self.log_start + 1]
                self.log_start = s_index + 1
            self.snap = (s_index, s_term)
        if batch.entries:
            first = batch.entries[0].index
            nxt = self.log_start + len(self.entries)
            if first == nxt:  # the common case: a plain append (log_start > snap_index)
                self.entries.extend(batch.entries)
            else:
                self._overwrite(batch.entries, first, nxt, path, offset)
        if batch.hard_state is not None:
            self.hs = batch.hard_state

    def _overwrite(
        self, entries: list[Entry], first: int, nxt: int, path: Path, offset: int
    ) -> None:
        if first > nxt:
            raise _corrupt(
                path,
                offset,
                f"log entries {nxt}..{first - 1} are missing (a batch starts at index "
                f"{first} but the log before it ends at {nxt - 1})",
            )
        if first <= self.snap_index:
            raise _corrupt(
                path,
                offset,
                f"a batch rewrites entry {first}, which the snapshot at "
                f"{self.snap_index} already covers",
            )
        if first >= self.log_start:
            del self.entries[first - self.log_start :]
        else:  # the log before `first` lives in compacted segments
            self.entries = []
            self.log_start = first
        self.entries.extend(entries)


def read_segment(
    data: bytes, path: Path, *, newest: bool
) -> tuple[list[tuple[int, int, memoryview]], int | None]:
    """The valid records of one segment, and where a torn tail starts (None: none).

    Every save is one record followed by a sync, so a crash can damage only the last
    record of the newest segment, with nothing valid after it: that is a torn write,
    never acknowledged, and is dropped. Damage anywhere else is corruption of data
    that was acknowledged: refuse (StorageCorruption) rather than serve without it.
    """
    records, bad = scan_records(data)
    if bad is None:
        return records, None
    reason = describe_bad_record(data, bad)
    if not newest:
        raise _corrupt(path, bad, f"{reason} in a segment that is not the newest one")
    after = find_valid_record(data, bad + 1)
    if after is not None:
        raise _corrupt(
            path,
            bad,
            f"{reason}, followed by a valid record at byte offset {after} "
            "(not a torn write at the tail)",
        )
    return records, bad


def decode_records(
    records: list[tuple[int, int, memoryview]], path: Path
) -> Iterator[tuple[int, SegmentHeader | Batch]]:
    """Decode a segment's records: its header first, then batches."""
    for i, (off, rtype, payload) in enumerate(records):
        try:
            if rtype == RecordType.SEGMENT_HEADER:
                if i != 0:
                    raise _corrupt(path, off, "segment header in mid-segment")
                record: SegmentHeader | Batch = decode_header(payload)
            else:
                if i == 0:
                    raise _corrupt(path, off, "segment does not start with a header")
                record = decode_batch(payload)
        except _MALFORMED as exc:
            name = RecordType(rtype).name.lower()
            raise _corrupt(
                path, off, f"malformed {name} record with a valid checksum ({exc})"
            ) from None
        yield off, record


def _finish_replay(state: _Replay, oldest: Path, oldest_first_index: int) -> None:
    """Drop what the live snapshot covers; refuse if entries after it are missing."""
    s = state.snap_index
    if s >= state.log_start:
        del state.entries[: s - state.log_start + 1]
        state.log_start = s + 1
    if state.log_start != s + 1:
        raise StorageCorruption(
            f"log entries {s + 1}..{state.log_start - 1} are missing: the oldest WAL "
            f"segment {oldest} starts at index {oldest_first_index} and "
            f"the live snapshot only covers up to index {s}. {_REFUSE}"
        )


@dataclass(slots=True)
class ReplayedSegment:
    """What one self-contained segment holds (see ``replay_segment``)."""

    hard_state: HardState
    snapshot: tuple[int, int] | None  # (index, term) of the live snapshot
    entries: list[Entry]
    torn_at: int | None  # where a torn tail started (it was dropped)


def replay_segment(data: bytes, path: Path) -> ReplayedSegment:
    """Recover a WAL made of this one segment, by the rules ``DiskStorage.open``
    applies (torn tail dropped, corruption refused). The simulator's disk writes the
    same records, so its crashes and damage go through this code under the seeds."""
    records, torn = read_segment(data, path, newest=True)
    state: _Replay | None = None
    for off, record in decode_records(records, path):
        if isinstance(record, SegmentHeader):
            state = _Replay(record)
        else:
            assert state is not None
            state.apply(record, path, off)
    if state is None:
        raise StorageCorruption(f"{path} has no header record. {_REFUSE}")
    _finish_replay(state, path, state.log_start)
    return ReplayedSegment(state.hs, state.snap, state.entries, torn)


def _copy_hs(hs: HardState) -> HardState:
    return HardState(term=hs.term, vote=hs.vote, commit=hs.commit)


def write_failure(where: Path, exc: OSError) -> StorageError:
    """The error for a failed write, phrased for the operator. A full disk is the common
    case and has a clear remedy: the write that failed was never acknowledged, and on
    restart recovery drops its torn tail, so nothing acknowledged is lost."""
    if exc.errno == errno.ENOSPC:
        return DiskFull(
            f"disk full: no space left on the device holding {where}; acknowledged writes are "
            "safe. Free space on that disk: the node restarts by itself once there is room "
            "(or restart it; it recovers its log on start)",
            where,
        )
    return StorageError(
        f"writing to {where} failed ({exc}); the storage is unusable until the node "
        "restarts and recovers"
    )


class DiskStorage:
    """A node's durable log, hard state and snapshots. Create with ``DiskStorage.open``."""

    def __init__(
        self,
        data_dir: Path,
        fsync: FsyncMode,
        segment_bytes: int,
        on_fsync: Callable[[float], None] | None,
    ) -> None:
        self._dir = data_dir
        self._wal_dir = data_dir / "wal"
        self._snap_dir = data_dir / "snap"
        self._fsync: FsyncMode = fsync
        self._durable = fsync == "always"
        self._segment_bytes = segment_bytes
        self._on_fsync = on_fsync
        # Fault injection (a slow disk): seconds slept before every WAL sync. Read by
        # whichever thread runs ``save``; a float store is atomic, so the API thread
        # may change it at any time.
        self.sync_delay_s = 0.0
        self._lock_fd: int | None = None
        self._fd: int | None = None  # active segment, O_APPEND
        self._active_size = 0
        self._segments: list[_Segment] = []
        self._hs = HardState()
        self._snap: tuple[int, int] | None = None
        self._terms = array("q")  # terms of entries snap_index+1 .. last_index
        self._failed: BaseException | None = None
        self._closed = False
        self.recovered = RecoveredState(HardState(), None, [])

    # ------------------------------------------------------------------ public API

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        *,
        fsync: FsyncMode = "always",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        on_fsync: Callable[[float], None] | None = None,
    ) -> DiskStorage:
        """Create the layout in ``data_dir`` if it is new, else recover it.

        Raises StorageCorruption if the data cannot be recovered without risking the
        loss of acknowledged data, StorageError if another process has it open.
        ``on_fsync`` is called with the duration in seconds of every WAL fsync in save.
        """
        if fsync not in ("always", "never"):
            raise ValueError(f"fsync must be 'always' or 'never', not {fsync!r}")
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        self = cls(Path(data_dir), fsync, segment_bytes, on_fsync)
        try:
            self._open()
        except BaseException:
            self._release()
            raise
        return self

    @property
    def fsync_mode(self) -> FsyncMode:
        return self._fsync

    @property
    def data_dir(self) -> Path:
        return self._dir

    @property
    def snapshot_index(self) -> int:
        """Index of the live snapshot (0 if none)."""
        return self._snap[0] if self._snap is not None else 0

    @property
    def last_index(self) -> int:
        """Index of the last entry on disk (the snapshot index if the log is empty)."""
        return self.snapshot_index + len(self._terms)

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        *,
        sync: bool = True,
    ) -> None:
        """Persist one ready batch: snapshot file first, then one WAL record, one fsync.

        ``sync=False`` writes without the fsync: for batches whose loss in a machine
        crash is harmless (a new commit index alone). A snapshot is always synced.
        """
        self._check_usable()
        snap_index = self.snapshot_index
        next_index = self.last_index + 1
        marker: tuple[int, int, bool] | None = None
        if snapshot is not None and (snapshot.meta.index, snapshot.meta.term) == self._snap:
            snapshot = None  # already the live snapshot: same index and term, same state
        if snapshot is not None:
            s_index, s_term = snapshot.meta.index, snapshot.meta.term
            if s_index < 1:
                raise ValueError(f"snapshot index must be positive, not {s_index}")
            if s_index < snap_index:
                raise ValueError(
                    f"snapshot at index {s_index} is older than the live snapshot at {snap_index}"
                )
            reset = self._term_at(s_index) != s_term
            marker = (s_index, s_term, reset)
            snap_index = s_index
            if reset:
                next_index = s_index + 1
        if entries and entries[0].index <= snap_index:
            entries = [e for e in entries if e.index > snap_index]
        if entries:
            first = entries[0].index
            if type(first) is not int:
                raise TypeError(f"entry index must be int, not {first!r}")
            if first > next_index:
                raise ValueError(
                    f"entries start at {first} but the log ends at {next_index - 1}: "
                    "saving them would leave a gap"
                )
            for k, e in enumerate(entries):
                if e.index != first + k:
                    raise ValueError(f"entries are not contiguous: {e.index} after {first + k - 1}")
        if hard_state is None and not entries and snapshot is None:
            return
        # Raises TypeError/ValueError on values recovery could not read back.
        payload = encode_batch(hard_state, marker, entries)
        header = frame(RecordType.BATCH, payload)
        fsync_seconds = None
        if snapshot is not None and not self._in_place(snapshot):
            # Nothing references the file until the WAL record below is durable, so a
            # failure here leaves the storage usable.
            try:
                if self._named_for(snapshot):  # a snapshot file built elsewhere: moved
                    self._move_in(snapshot)
                else:
                    write_snapshot_file(self._snap_dir, snapshot, durable=self._durable)
            except OSError as exc:
                raise write_failure(self._snap_dir, exc) from exc
        try:
            if self._active_size >= self._segment_bytes:
                self._rotate()
            assert self._fd is not None
            write_all(self._fd, (header, payload))
            self._active_size += len(header) + len(payload)
            if self._durable and (sync or snapshot is not None):
                t0 = time.perf_counter()
                self._sync_wal()
                fsync_seconds = time.perf_counter() - t0
        except OSError as exc:
            # After a failed write or fsync the file contents are unknown (the kernel may
            # have dropped dirty pages): stop, and let recovery sort it out on restart.
            self._failed = exc
            raise write_failure(self._wal_dir, exc) from exc
        if marker is not None:
            s_index, s_term, reset = marker
            if reset:
                self._terms = array("q")
            else:
                del self._terms[: s_index - self.snapshot_index]
            self._snap = (s_index, s_term)
        if entries:
            del self._terms[entries[0].index - self.snapshot_index - 1 :]
            self._terms.extend(e.term for e in entries)
            seg = self._segments[-1]
            seg.max_index = max(seg.max_index, entries[-1].index)
        if hard_state is not None:
            self._hs = _copy_hs(hard_state)
        if snapshot is not None:
            self._prune_snapshots()
        if fsync_seconds is not None and self._on_fsync is not None:
            self._on_fsync(fsync_seconds)

    def _sync_wal(self) -> None:
        """Make the active segment durable; slowed by ``sync_delay_s`` when a slow-disk
        fault is injected (inside the timed region, so the fsync metric shows it)."""
        delay = self.sync_delay_s
        if delay > 0:
            time.sleep(delay)
        assert self._fd is not None
        datasync(self._fd)

    def write_snapshot_file(self, meta: SnapshotMeta, write_data: Callable[[int], int]) -> Snapshot:
        """Write a local snapshot's file, its data from ``write_data(fd)``, without
        recording it (any thread: this touches nothing the WAL's thread does). Saving
        the snapshot returned then only writes its WAL record; a crash before that
        leaves a file the next open removes, as one the WAL never named."""
        try:
            return write_snapshot_file_with(self._snap_dir, meta, write_data, durable=self._durable)
        except OSError as exc:
            raise write_failure(self._snap_dir, exc) from exc

    def _named_for(self, snapshot: Snapshot) -> bool:
        """Whether ``snapshot``'s data lies in a snapshot file of its own name (written
        by SnapshotFileBuilder, here or in another directory of the same disk)."""
        path = getattr(snapshot.data, "path", None)
        meta = snapshot.meta
        return path is not None and path.name == snapshot_name(meta.index, meta.term)

    def _in_place(self, snapshot: Snapshot) -> bool:
        """Whether ``snapshot``'s data already is its file here (write_snapshot_file)."""
        return self._named_for(snapshot) and snapshot.data.path.parent == self._snap_dir  # type: ignore[attr-defined]

    def _move_in(self, snapshot: Snapshot) -> None:
        """Sync a snapshot file built elsewhere (a received one, in ``incoming``) and
        rename it into the snapshot directory: saving it copies nothing."""
        image = snapshot.data
        path = self._snap_dir / image.path.name  # type: ignore[attr-defined]
        if self._durable:
            fd = os.open(image.path, os.O_RDONLY)  # type: ignore[attr-defined]
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(image.path, path)  # type: ignore[attr-defined]
        if self._durable:
            fsync_dir(self._snap_dir)
        image.path = path  # type: ignore[attr-defined]

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot the local state machine took; entries after it are kept."""
        self._check_usable()
        index, term = snapshot.meta.index, snapshot.meta.term
        if self._term_at(index) != term:
            raise ValueError(
                f"local snapshot at index {index} term {term} does not match the log "
                f"(log has term {self._term_at(index)} there)"
            )
        self.save(None, [], snapshot)

    def compact(self, upto_index: int) -> int:
        """Delete the oldest segments whose entries are all ``<= upto_index``.

        Never deletes the active segment, never goes past the live snapshot. Returns the
        number of segment files deleted.
        """
        self._check_usable()
        if upto_index > self.snapshot_index:
            raise ValueError(
                f"cannot compact through {upto_index}: the live snapshot only covers "
                f"{self.snapshot_index}"
            )
        deleted = 0
        # Only a prefix: deleting from the middle would leave a sequence gap.
        while len(self._segments) > 1 and self._segments[0].max_index <= upto_index:
            self._segments[0].path.unlink()
            self._segments.pop(0)
            if self._durable:  # in order, so a crash can never leave a gap
                fsync_dir(self._wal_dir)
            deleted += 1
        return deleted

    def close(self) -> None:
        self._closed = True
        self._release()

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError("storage is closed")
        if self._failed is not None:
            raise StorageError(
                f"an earlier write failed ({self._failed}); restart the node to recover"
            )

    def _term_at(self, index: int) -> int | None:
        snap_index = self.snapshot_index
        if self._snap is not None and index == snap_index:
            return self._snap[1]
        if snap_index < index <= self.last_index:
            return self._terms[index - snap_index - 1]
        return None

    def _release(self) -> None:
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)

    def _open(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self._dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(f"{self._dir} is in use by another DiskStorage") from None
        created = False
        for sub in (self._wal_dir, self._snap_dir):
            if not sub.exists():
                sub.mkdir()
                created = True
        if created and self._durable:
            fsync_dir(self._dir)
        self._remove_tmp_files()

        replayed = self._replay_wal()
        if replayed is None:
            leftovers = sorted(p.name for p in self._snap_dir.iterdir())
            if leftovers:
                raise StorageCorruption(
                    f"{self._wal_dir} has no WAL segments but {self._snap_dir} holds "
                    f"{leftovers[:3]}: the WAL was lost. {_REFUSE}"
                )
            self._segments = []
            self._fd, self._active_size = self._create_segment(1, 1)
            self.recovered = RecoveredState(HardState(), None, [])
            return
        state, self._segments = replayed

        snapshot = None
        if state.snap is not None:
            path = self._snap_dir / snapshot_name(*state.snap)
            try:
                snapshot = read_snapshot_file(path)
            except StorageCorruption as exc:
                raise StorageCorruption(
                    f"{exc}; the WAL names it as the live snapshot. {_REFUSE}"
                ) from None
            if (snapshot.meta.index, snapshot.meta.term) != state.snap:
                raise StorageCorruption(
                    f"snapshot file {path} holds index {snapshot.meta.index} term "
                    f"{snapshot.meta.term}, not what its name says. {_REFUSE}"
                )
        self._snap = state.snap

        hs = _copy_hs(state.hs)
        last = state.next_index - 1
        if hs.commit > last:
            log.warning(
                "%s: recovered commit index %d is beyond the last index on disk %d; "
                "clamping it (this indicates a bug or a lost end of the WAL)",
                self._dir,
                hs.commit,
                last,
            )
            hs.commit = last
        if hs.commit < self.snapshot_index:
            hs.commit = self.snapshot_index  # a snapshot only ever holds committed entries
        self._hs = hs
        self._terms = array("q", (e.term for e in state.entries))
        self.recovered = RecoveredState(_copy_hs(hs), snapshot, state.entries)
        self._prune_snapshots(at_open=True)

        active = self._segments[-1]
        self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        self._active_size = os.fstat(self._fd).st_size

    def _remove_tmp_files(self) -> None:
        for sub in (self._wal_dir, self._snap_dir):
            for p in sorted(sub.iterdir()):
                if p.name.endswith(TMP_SUFFIX):
                    log.warning("removing stale temporary file %s (left by a crash)", p)
                    p.unlink()

    def _list_segments(self) -> list[_Segment]:
        """The WAL's segments in order; refuses a gap in their sequence numbers."""
        found: list[_Segment] = []
        for p in self._wal_dir.iterdir():
            parsed = parse_segment_name(p.name)
            if parsed is None:
                log.warning("ignoring unexpected file %s in the WAL directory", p)
                continue
            found.append(_Segment(parsed[0], parsed[1], p))
        found.sort(key=lambda s: s.seq)
        for prev, cur in pairwise(found):
            if cur.seq != prev.seq + 1:
                missing = f"{prev.seq + 1}..{cur.seq - 1}"
                if cur.seq == prev.seq + 2:
                    missing = str(prev.seq + 1)
                raise StorageCorruption(
                    f"WAL segment(s) with sequence number {missing} are missing between "
                    f"{prev.path} and {cur.path}. {_REFUSE}"
                )
        return found

    def _replay_wal(self) -> tuple[_Replay, list[_Segment]] | None:
        found = self._list_segments()
        if not found:
            return None
        state: _Replay | None = None
        segments: list[_Segment] = []
        for k, seg in enumerate(found):
            data = seg.path.read_bytes()
            records, torn = read_segment(data, seg.path, newest=k == len(found) - 1)
            if not records:
                if k != len(found) - 1:
                    raise _corrupt(seg.path, 0, "segment has no header record")
                self._drop_headerless_segment(seg, len(data))
                if state is None and seg.seq == 1:
                    return None  # a brand-new directory that never got its first segment
                if state is None:
                    raise StorageCorruption(
                        f"{seg.path} was the only WAL segment and had no header. {_REFUSE}"
                    )
                break
            state = self._replay_segment(state, seg, records)
            if torn is not None:
                log.warning(
                    "WAL segment %s: torn write at the tail (%s at byte offset %d); "
                    "truncating the file to %d bytes, dropping %d bytes that were never "
                    "acknowledged",
                    seg.path,
                    describe_bad_record(data, torn),
                    torn,
                    torn,
                    len(data) - torn,
                )
                self._truncate(seg.path, torn)
            segments.append(seg)
        assert state is not None
        _finish_replay(state, segments[0].path, segments[0].first_index)
        return state, segments

    def _drop_headerless_segment(self, seg: _Segment, size: int) -> None:
        """The newest segment was torn while it was being created: nothing in it was
        acknowledged, so it goes."""
        log.warning(
            "WAL segment %s has no complete header (%d bytes, torn when it was "
            "created); removing it",
            seg.path,
            size,
        )
        seg.path.unlink()
        if self._durable:
            fsync_dir(self._wal_dir)

    def _replay_segment(
        self, state: _Replay | None, seg: _Segment, records: list[tuple[int, int, memoryview]]
    ) -> _Replay:
        for off, record in decode_records(records, seg.path):
            if isinstance(record, SegmentHeader):
                state = self._enter_segment(state, seg, record, off)
            else:
                assert state is not None
                state.apply(record, seg.path, off)
                if record.entries:
                    seg.max_index = max(seg.max_index, record.entries[-1].index)
        assert state is not None
        return state

    @staticmethod
    def _enter_segment(
        state: _Replay | None, seg: _Segment, header: SegmentHeader, off: int
    ) -> _Replay:
        if (header.seq, header.first_index) != (seg.seq, seg.first_index):
            raise _corrupt(
                seg.path,
                off,
                f"header says sequence {header.seq} first index {header.first_index}, "
                "which does not match the file name",
            )
        if state is None:
            return _Replay(header)
        if header.first_index != state.next_index:
            raise _corrupt(
                seg.path,
                off,
                f"segment starts at index {header.first_index} but the previous segments "
                f"end at {state.next_index - 1}"
                + (
                    f" (entries {state.next_index}..{header.first_index - 1} are missing)"
                    if header.first_index > state.next_index
                    else ""
                ),
            )
        if header.snapshot != state.snap:
            raise _corrupt(
                seg.path,
                off,
                f"header names snapshot {header.snapshot} but the previous segments end "
                f"with snapshot {state.snap}",
            )
        state.hs = header.hard_state
        return state

    def _truncate(self, path: Path, size: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            if self._durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _create_segment(self, seq: int, first_index: int) -> tuple[int, int]:
        """Create a segment atomically (tmp + fsync + rename); returns (fd, size)."""
        payload = encode_header(SegmentHeader(seq, first_index, _copy_hs(self._hs), self._snap))
        header = frame(RecordType.SEGMENT_HEADER, payload)
        path = self._wal_dir / segment_name(seq, first_index)
        tmp = path.with_name(path.name + TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            write_all(fd, (header, payload))
            if self._durable:
                os.fsync(fd)
            os.replace(tmp, path)
            if self._durable:
                fsync_dir(self._wal_dir)
        except BaseException:
            os.close(fd)
            raise
        self._segments.append(_Segment(seq, first_index, path))
        return fd, len(header) + len(payload)

    def _rotate(self) -> None:
        fd, size = self._create_segment(self._segments[-1].seq + 1, self.last_index + 1)
        assert self._fd is not None
        os.close(self._fd)
        self._fd, self._active_size = fd, size

    def _prune_snapshots(self, *, at_open: bool = False) -> None:
        """Keep the live snapshot and the newest older one; drop the rest.

        At open, also drop files newer than the live snapshot: they were written but the
        WAL record naming them never became durable, so nothing was acknowledged.
        """
        live = self._snap
        older: list[tuple[int, int, Path]] = []
        for p in self._snap_dir.iterdir():
            parsed = parse_snapshot_name(p.name)
            if parsed is None:
                if at_open:
                    log.warning("ignoring unexpected file %s in the snapshot directory", p)
                continue
            if parsed == live:
                continue
            if live is None or parsed > live:
                if at_open:
                    log.warning("removing snapshot %s that the WAL never recorded", p)
                    p.unlink()
                continue
            older.append((parsed[0], parsed[1], p))
        older.sort(reverse=True)
        for _, _, p in older[KEEP_SNAPSHOTS - 1 :]:
            p.unlink()
