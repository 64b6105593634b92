"""DiskStorage: round trips, overwrite semantics, rotation/compaction, torn tails versus
corruption, snapshots, a SIGKILL crash test and a model-based property test."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raft_core.node import storage as storage_mod
from raft_core.node.snapfile import snapshot_name, write_snapshot_file
from raft_core.node.storage import DiskStorage, StorageCorruption, StorageError
from raft_core.node.wal import RecordType, encode_batch, frame, scan_records
from raft_core.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

REPO = Path(__file__).resolve().parents[1]


def ents(first: int, last: int, term: int = 1, tag: str = "") -> list[Entry]:
    return [Entry(i, term, data=f"{tag}{i}".encode()) for i in range(first, last + 1)]


def snap(index: int, term: int, data: bytes = b"image") -> Snapshot:
    conf = ConfState(voters=frozenset({"a", "b", "c"}), learners=frozenset({"d"}))
    return Snapshot(SnapshotMeta(index, term, conf), data)


def segments(d: Path) -> list[Path]:
    return sorted((d / "wal").glob("*.wal"))


def record_offsets(path: Path) -> list[tuple[int, int]]:
    """(start, end) of every record in a segment."""
    data = path.read_bytes()
    records, bad = scan_records(data)
    assert bad is None
    out = []
    for off, _rtype, payload in records:
        out.append((off, off + 9 + len(payload)))
    return out


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def reopen(d: Path, **kw) -> DiskStorage:
    return DiskStorage.open(d, **kw)


# --------------------------------------------------------------------------- basics


def test_fresh_directory_layout(tmp_path: Path) -> None:
    d = tmp_path / "node"
    s = DiskStorage.open(d)
    assert s.fsync_mode == "always"
    assert (d / "snap").is_dir()
    assert [p.name for p in segments(d)] == ["0000000000000001-0000000000000001.wal"]
    assert s.recovered.hard_state == HardState()
    assert s.recovered.snapshot is None
    assert s.recovered.entries == []
    assert (s.last_index, s.snapshot_index) == (0, 0)
    s.close()
    s = reopen(d, fsync="never")
    assert s.fsync_mode == "never"
    assert s.recovered.entries == []
    s.close()


def test_round_trip(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    batch = [
        Entry(1, 1),  # leader no-op
        Entry(2, 1, EntryType.CONF_CHANGE, b"\x00conf\xff"),
        Entry(3, 2, data=bytes(range(256))),
    ]
    s.save(HardState(term=2, vote="n2", commit=1), batch)
    s.save(None, [Entry(4, 2, data=b"four")])
    s.save(HardState(term=2, vote="n2", commit=4), [])
    s.close()
    s = reopen(tmp_path)
    r = s.recovered
    assert r.hard_state == HardState(term=2, vote="n2", commit=4)
    assert r.snapshot is None
    assert r.entries == [*batch, Entry(4, 2, data=b"four")]
    assert isinstance(r.entries[1].type, EntryType)
    assert s.last_index == 4
    # A snapshot installed from the leader together with the entries that follow it.
    s.save(HardState(term=3, vote=None, commit=10), ents(11, 12, term=3), snapshot=snap(10, 3))
    s.close()
    s = reopen(tmp_path)
    r = s.recovered
    assert r.snapshot == snap(10, 3)
    assert r.hard_state == HardState(term=3, vote=None, commit=10)
    assert r.entries == ents(11, 12, term=3)
    s.close()


def test_empty_save_writes_nothing(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    before = segments(tmp_path)[0].stat().st_size
    s.save(None, [])
    assert segments(tmp_path)[0].stat().st_size == before
    s.close()


def test_overwrite_semantics_across_saves(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, "a", 0), ents(1, 10, term=1))
    s.save(HardState(2, "b", 0), ents(6, 8, term=2))  # conflicting suffix from a new leader
    assert s.last_index == 8
    s.save(None, ents(9, 9, term=2))
    s.save(None, ents(3, 3, term=3))  # and again, shorter
    s.close()
    s = reopen(tmp_path)
    assert s.recovered.entries == ents(1, 2, term=1) + ents(3, 3, term=3)
    assert s.recovered.hard_state == HardState(2, "b", 0)
    s.close()


def test_overwrite_across_segment_rotation(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path, segment_bytes=120)
    for i in range(1, 21):
        s.save(HardState(1, "a", 0), ents(i, i, term=1))
    assert len(segments(tmp_path)) >= 3
    s.save(HardState(2, "b", 0), ents(4, 6, term=2))  # lands in the newest segment
    for i in range(7, 10):
        s.save(None, ents(i, i, term=2))
    s.close()
    s = reopen(tmp_path, segment_bytes=120)
    assert s.recovered.entries == ents(1, 3, term=1) + ents(4, 9, term=2)
    s.close()


def test_save_validation(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(None, ents(1, 3))
    with pytest.raises(ValueError, match="gap"):
        s.save(None, ents(5, 6))
    with pytest.raises(ValueError, match="contiguous"):
        s.save(None, [Entry(4, 1), Entry(6, 1)])
    s.save_snapshot(snap(2, 1))
    with pytest.raises(ValueError, match="older"):
        s.save(None, [], snapshot=snap(1, 1))
    with pytest.raises(ValueError, match="does not match"):
        s.save_snapshot(snap(3, 9))
    with pytest.raises(ValueError, match="live snapshot"):
        s.compact(3)
    s.save(None, ents(1, 4, term=1))  # entries <= snapshot index are ignored
    s.close()
    s = reopen(tmp_path)
    assert s.recovered.entries == ents(3, 4)
    s.close()


def test_values_recovery_could_not_read_are_refused_up_front(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    size = segments(tmp_path)[0].stat().st_size
    with pytest.raises(TypeError):
        s.save(None, [Entry(1, 1, data="text, not bytes")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        s.save(HardState(1, 2, 0), [])  # type: ignore[arg-type]  # vote must be a str
    with pytest.raises(ValueError):
        s.save(None, [Entry(1, 1, 7)])  # type: ignore[arg-type]
    assert segments(tmp_path)[0].stat().st_size == size
    s.save(None, [Entry(1, 1, data=bytearray(b"ok"))])  # still usable
    s.close()
    with DiskStorage.open(tmp_path) as s:
        assert s.recovered.entries == [Entry(1, 1, data=b"ok")]


def test_snapshot_install_keeps_log_only_if_it_matches(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, "a", 3), ents(1, 10, term=1))
    s.save(None, [], snapshot=snap(5, 1))  # entry 5 has term 1: keep 6..10
    assert (s.snapshot_index, s.last_index) == (5, 10)
    s.save(None, [], snapshot=snap(7, 2))  # entry 7 has term 1, not 2: the log restarts
    assert (s.snapshot_index, s.last_index) == (7, 7)
    s.close()
    s = reopen(tmp_path)
    assert s.recovered.entries == []
    assert s.recovered.snapshot == snap(7, 2)
    s.save(None, [], snapshot=snap(20, 3))  # beyond the log
    s.save(None, ents(21, 22, term=3))
    s.close()
    s = reopen(tmp_path)
    assert s.recovered.snapshot == snap(20, 3)
    assert s.recovered.entries == ents(21, 22, term=3)
    assert s.recovered.hard_state.commit == 20  # a snapshot is committed by definition
    s.close()


def test_one_write_and_one_fsync_per_save(tmp_path: Path, monkeypatch) -> None:
    calls = {"writev": 0, "sync": 0}
    real_writev, real_sync = os.writev, storage_mod.datasync

    def writev(fd, bufs):
        calls["writev"] += 1
        return real_writev(fd, bufs)

    def sync(fd):
        calls["sync"] += 1
        real_sync(fd)

    durations: list[float] = []
    s = DiskStorage.open(tmp_path, on_fsync=durations.append)
    monkeypatch.setattr(os, "writev", writev)
    monkeypatch.setattr(storage_mod, "datasync", sync)
    for k in range(10):
        s.save(HardState(1, "a", k * 64), ents(k * 64 + 1, k * 64 + 64))
    assert calls == {"writev": 10, "sync": 10}
    assert len(durations) == 10 and all(d >= 0 for d in durations)
    s.close()


def test_fsync_never_still_writes_everything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(storage_mod, "datasync", lambda fd: pytest.fail("fsync in never mode"))
    durations: list[float] = []
    s = DiskStorage.open(tmp_path, fsync="never", segment_bytes=200, on_fsync=durations.append)
    assert s.fsync_mode == "never"
    for i in range(1, 30):
        s.save(HardState(1, "a", i - 1), ents(i, i))
    s.save_snapshot(snap(20, 1))
    s.compact(15)
    s.close()
    assert durations == []
    s = reopen(tmp_path, fsync="never")
    assert s.recovered.entries == ents(21, 29)
    assert s.recovered.hard_state == HardState(1, "a", 28)
    s.close()


def test_directory_is_locked(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    with pytest.raises(StorageError, match="in use"):
        DiskStorage.open(tmp_path)
    s.close()
    DiskStorage.open(tmp_path).close()


def test_failed_fsync_makes_storage_unusable(tmp_path: Path, monkeypatch) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, "a", 0), ents(1, 2))

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage_mod, "datasync", broken)
    with pytest.raises(StorageError, match="unusable"):
        s.save(None, ents(3, 3))
    monkeypatch.undo()
    with pytest.raises(StorageError, match="restart"):
        s.save(None, ents(3, 3))
    s.close()
    s = reopen(tmp_path)
    assert s.recovered.entries[:2] == ents(1, 2)
    s.close()


def test_commit_beyond_log_is_clamped(tmp_path: Path, caplog) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, "a", 100), ents(1, 5))
    s.close()
    with caplog.at_level(logging.WARNING):
        s = reopen(tmp_path)
    assert s.recovered.hard_state == HardState(1, "a", 5)
    assert "clamping" in caplog.text
    s.close()


# --------------------------------------------------------------------------- rotation


def test_rotation_compaction_keeps_latest_hard_state(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path, segment_bytes=150)
    s.save(HardState(7, "x", 0), [])  # the only hard state record, in segment 1
    for i in range(1, 41):
        s.save(None, ents(i, i, tag="e"))
    segs = segments(tmp_path)
    assert len(segs) >= 5
    names = [p.name for p in segs]
    assert names[0] == "0000000000000001-0000000000000001.wal"
    # File names carry the sequence number and the first index of the segment.
    assert [int(n.split("-")[0]) for n in names] == list(range(1, len(names) + 1))
    with pytest.raises(ValueError):
        s.compact(1)  # nothing covered by a snapshot yet
    s.save_snapshot(snap(30, 1))
    deleted = s.compact(30 - 5)
    assert deleted > 0
    remaining = segments(tmp_path)
    assert len(remaining) == len(segs) - deleted
    assert remaining[-1] == segs[-1]  # the active segment is never deleted
    assert "0000000000000001-0000000000000001.wal" not in [p.name for p in remaining]
    s.close()
    s = reopen(tmp_path, segment_bytes=150)
    assert s.recovered.hard_state == HardState(7, "x", 30)  # commit raised to the snapshot
    assert s.recovered.snapshot == snap(30, 1)
    assert s.recovered.entries == ents(31, 40, tag="e")
    # Compacting everything the snapshot covers still leaves a recoverable log.
    s.save_snapshot(snap(40, 1))
    s.compact(40)
    assert len(segments(tmp_path)) == 1
    s.save(None, ents(41, 42, tag="e"))
    s.close()
    s = reopen(tmp_path, segment_bytes=150)
    assert s.recovered.hard_state.term == 7
    assert s.recovered.entries == ents(41, 42, tag="e")
    s.close()


@pytest.mark.parametrize("snap_at", range(1, 31))
def test_compaction_never_drops_entries_after_the_snapshot(tmp_path: Path, snap_at: int) -> None:
    # Wherever the snapshot falls relative to segment boundaries, compacting through it
    # must keep the segment that holds snap_at + 1 (even though it *starts* <= snap_at).
    s = DiskStorage.open(tmp_path, segment_bytes=100)
    for i in range(1, 31, 3):
        s.save(HardState(1, "a", 0), ents(i, i + 2))
    s.save_snapshot(snap(snap_at, 1))
    s.compact(snap_at)
    s.close()
    s = DiskStorage.open(tmp_path)
    assert s.recovered.snapshot == snap(snap_at, 1)
    assert s.recovered.entries == ents(snap_at + 1, 30)
    s.close()


def test_keeps_newest_two_snapshot_files(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(None, ents(1, 50))
    for idx in (10, 20, 30, 40):
        s.save_snapshot(snap(idx, 1, data=b"at %d" % idx))
    names = sorted(p.name for p in (tmp_path / "snap").iterdir())
    assert names == [snapshot_name(30, 1), snapshot_name(40, 1)]
    s.close()
    s = reopen(tmp_path)
    assert s.recovered.snapshot == snap(40, 1, data=b"at 40")
    s.close()


# --------------------------------------------------------------------------- torn tails


def _build_with_last_record(d: Path) -> tuple[Path, int, int]:
    """Segment with a few records; returns (segment, start, end) of the last record."""
    s = DiskStorage.open(d)
    s.save(HardState(1, "a", 0), ents(1, 5))
    s.save(HardState(2, "b", 3), ents(6, 8, term=2))
    s.close()
    seg = segments(d)[0]
    start = seg.stat().st_size
    s = DiskStorage.open(d)
    s.save(HardState(3, "c", 8), ents(9, 12, term=3))
    s.close()
    return seg, start, seg.stat().st_size


def _assert_state_before_last_save(s: DiskStorage) -> None:
    assert s.recovered.hard_state == HardState(2, "b", 3)
    assert s.recovered.entries == ents(1, 5) + ents(6, 8, term=2)


def test_torn_tail_at_every_offset_of_last_record(tmp_path: Path, caplog) -> None:
    base = tmp_path / "base"
    seg, start, end = _build_with_last_record(base)
    assert end - start > 40
    for cut in range(start, end):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(base, d)
        target = d / "wal" / seg.name
        os.truncate(target, cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="raft_core.node.storage"):
            s = DiskStorage.open(d)
        _assert_state_before_last_save(s)
        assert target.stat().st_size == start
        if cut > start:
            assert str(target) in caplog.text
            assert f"byte offset {start}" in caplog.text
            assert f"dropping {cut - start} bytes" in caplog.text
        else:
            assert caplog.text == ""
        # The log continues normally after the repair.
        s.save(HardState(4, "d", 8), ents(9, 9, term=4))
        s.close()
        s = DiskStorage.open(d)
        assert s.recovered.entries[-1] == Entry(9, 4, data=b"9")
        s.close()
        shutil.rmtree(d)


@pytest.mark.parametrize("fill", ["zeros", "garbage"])
def test_torn_last_record_with_damaged_payload(tmp_path: Path, fill: str, caplog) -> None:
    # Length header on disk but the payload's later sectors never made it: the record
    # fails its CRC and nothing valid follows, so it is a torn write.
    seg, start, end = _build_with_last_record(tmp_path)
    raw = bytearray(seg.read_bytes())
    cut = start + 20
    raw[cut:end] = bytes(end - cut) if fill == "zeros" else os.urandom(end - cut)
    seg.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        s = DiskStorage.open(tmp_path)
    _assert_state_before_last_save(s)
    assert f"byte offset {start}" in caplog.text
    s.close()


def test_zero_filled_tail_is_torn(tmp_path: Path, caplog) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(HardState(1, "a", 2), ents(1, 3))
    s.close()
    seg = segments(tmp_path)[0]
    good = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(bytes(4096))  # preallocated / torn extent
    with caplog.at_level(logging.WARNING):
        s = DiskStorage.open(tmp_path)
    assert s.recovered.entries == ents(1, 3)
    assert "zero-filled" in caplog.text and f"byte offset {good}" in caplog.text
    assert seg.stat().st_size == good
    s.close()


def test_headerless_newest_segment_is_dropped(tmp_path: Path, caplog) -> None:
    s = DiskStorage.open(tmp_path, fsync="never", segment_bytes=100)
    for i in range(1, 6):
        s.save(HardState(1, "a", i), ents(i, i))
    s.close()
    segs = segments(tmp_path)
    nxt = tmp_path / "wal" / f"{len(segs) + 1:016d}-{6:016d}.wal"
    nxt.write_bytes(segs[-1].read_bytes()[:5])  # crash while creating the next segment
    with caplog.at_level(logging.WARNING):
        s = DiskStorage.open(tmp_path)
    assert s.recovered.entries == ents(1, 5)
    assert not nxt.exists() and "no complete header" in caplog.text
    s.close()


# --------------------------------------------------------------------------- corruption


@pytest.mark.parametrize("field_offset", [0, 2, 4, 7, 8, 9, 15, -1], ids=lambda o: f"byte{o}")
def test_corrupt_middle_record_refuses_to_start(tmp_path: Path, field_offset: int) -> None:
    s = DiskStorage.open(tmp_path)
    for k in range(5):
        s.save(HardState(1, "a", k), ents(k * 3 + 1, k * 3 + 3))
    s.close()
    seg = segments(tmp_path)[0]
    rec_start, rec_end = record_offsets(seg)[2]  # header, batch, [batch], batch, ...
    flip(seg, rec_start + field_offset if field_offset >= 0 else rec_end - 1)
    damaged = seg.read_bytes()
    with pytest.raises(StorageCorruption) as info:
        DiskStorage.open(tmp_path)
    msg = str(info.value)
    assert str(seg) in msg
    assert f"byte offset {rec_start}" in msg
    assert "refuses to start" in msg and "snapshot" in msg
    assert seg.read_bytes() == damaged  # nothing was "repaired" (truncated)


def test_corruption_is_not_mistaken_for_a_torn_tail(tmp_path: Path) -> None:
    # A length field damaged so that the record seems to run past EOF looks like a torn
    # write, but a valid record follows, so this must still refuse to start.
    s = DiskStorage.open(tmp_path)
    for k in range(4):
        s.save(HardState(1, "a", k), ents(k * 2 + 1, k * 2 + 2))
    s.close()
    seg = segments(tmp_path)[0]
    start, _ = record_offsets(seg)[1]
    raw = bytearray(seg.read_bytes())
    raw[start : start + 4] = (10_000_000).to_bytes(4, "little")
    seg.write_bytes(bytes(raw))
    size = seg.stat().st_size
    with pytest.raises(StorageCorruption, match=f"byte offset {start}.*followed by a valid"):
        DiskStorage.open(tmp_path)
    assert seg.stat().st_size == size


def _multi_segment(d: Path) -> list[Path]:
    s = DiskStorage.open(d, segment_bytes=120)
    for i in range(1, 25):
        s.save(HardState(1, "a", i - 1), ents(i, i))
    s.close()
    segs = segments(d)
    assert len(segs) >= 4
    return segs


def test_corruption_in_non_last_segment(tmp_path: Path) -> None:
    segs = _multi_segment(tmp_path)
    target = segs[1]
    start, end = record_offsets(target)[-1]  # even the tail of an older segment
    flip(target, end - 2)
    with pytest.raises(StorageCorruption) as info:
        DiskStorage.open(tmp_path)
    assert str(target) in str(info.value)
    assert f"byte offset {start}" in str(info.value)
    assert "not the newest" in str(info.value)


def test_truncated_non_last_segment(tmp_path: Path) -> None:
    segs = _multi_segment(tmp_path)
    os.truncate(segs[0], segs[0].stat().st_size - 3)
    with pytest.raises(StorageCorruption, match=str(segs[0])):
        DiskStorage.open(tmp_path)


def test_missing_middle_segment(tmp_path: Path) -> None:
    segs = _multi_segment(tmp_path)
    segs[2].unlink()
    with pytest.raises(StorageCorruption, match="sequence number 3 are missing"):
        DiskStorage.open(tmp_path)


def test_missing_oldest_segment_without_snapshot(tmp_path: Path) -> None:
    segs = _multi_segment(tmp_path)
    segs[0].unlink()
    with pytest.raises(StorageCorruption, match=r"log entries 1\.\.\d+ are missing"):
        DiskStorage.open(tmp_path)


def test_batch_that_skips_indexes_is_corruption(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(None, ents(1, 3))
    s.close()
    seg = segments(tmp_path)[0]
    payload = encode_batch(None, None, ents(7, 8))  # valid CRC, but 4..6 never written
    start = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(frame(RecordType.BATCH, payload) + payload)
    with pytest.raises(StorageCorruption, match=rf"offset {start}: log entries 4\.\.6 are missing"):
        DiskStorage.open(tmp_path)


# --------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "missing"])
def test_damaged_live_snapshot_refuses_to_start(tmp_path: Path, damage: str) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(None, ents(1, 10))
    s.save_snapshot(snap(5, 1, data=b"x" * 1000))
    s.close()
    path = tmp_path / "snap" / snapshot_name(5, 1)
    if damage == "flip":
        flip(path, 500)
    elif damage == "truncate":
        os.truncate(path, path.stat().st_size - 1)
    elif damage == "magic":
        flip(path, 0)
    else:
        path.unlink()
    with pytest.raises(StorageCorruption) as info:
        DiskStorage.open(tmp_path)
    assert str(path) in str(info.value) and "live snapshot" in str(info.value)


def test_damaged_older_snapshot_is_ignored(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(None, ents(1, 10))
    s.save_snapshot(snap(5, 1))
    s.save_snapshot(snap(8, 1))
    s.close()
    flip(tmp_path / "snap" / snapshot_name(5, 1), 3)
    s = DiskStorage.open(tmp_path)
    assert s.recovered.snapshot == snap(8, 1)
    s.close()


def test_stale_tmp_and_unrecorded_snapshot_files_removed(tmp_path: Path, caplog) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(None, ents(1, 10))
    s.save_snapshot(snap(5, 1))
    s.close()
    stale = tmp_path / "snap" / (snapshot_name(7, 1) + ".tmp")
    stale.write_bytes(b"half a snapshot")
    wal_tmp = tmp_path / "wal" / "0000000000000002-0000000000000011.wal.tmp"
    wal_tmp.write_bytes(b"half a header")
    # Renamed into place, but the crash came before the WAL record naming it.
    orphan = write_snapshot_file(tmp_path / "snap", snap(9, 1), durable=True)
    with caplog.at_level(logging.WARNING):
        s = DiskStorage.open(tmp_path)
    assert not stale.exists() and not wal_tmp.exists() and not orphan.exists()
    assert str(stale) in caplog.text and str(orphan) in caplog.text
    assert s.recovered.snapshot == snap(5, 1)
    s.close()


def test_wal_lost_but_snapshots_present(tmp_path: Path) -> None:
    s = DiskStorage.open(tmp_path)
    s.save(None, ents(1, 10))
    s.save_snapshot(snap(5, 1))
    s.close()
    for p in segments(tmp_path):
        p.unlink()
    with pytest.raises(StorageCorruption, match="WAL was lost"):
        DiskStorage.open(tmp_path)


# --------------------------------------------------------------------------- crash test

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from raft_core.node.storage import DiskStorage
    from raft_core.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta

    def payload(i):
        return b"%d;" % i * (1 + i % 13)

    st = DiskStorage.open(Path(sys.argv[1]), fsync="always", segment_bytes=int(sys.argv[2]))
    term = st.recovered.hard_state.term + 1
    nxt = st.last_index + 1
    k = 0
    while True:
        n = 1 + (k * 7) % 23
        batch = [Entry(i, term, data=payload(i)) for i in range(nxt, nxt + n)]
        st.save(HardState(term, "n1", nxt - 1), batch)
        nxt += n
        print(nxt - 1, flush=True)  # acknowledged: save() returned
        k += 1
        if k % 40 == 0:
            at = nxt - 10
            st.save_snapshot(Snapshot(SnapshotMeta(at, term, ConfState()), b"upto %d" % at))
            st.compact(at - 50)
    """
)


def _payload(i: int) -> bytes:
    return b"%d;" % i * (1 + i % 13)


@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_entries(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    acked_total = 0
    for round_no, kill_after in enumerate([1, 25, 120, 400, 7], start=1):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(data), "8192"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        acked: list[int] = []
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= kill_after:
                proc.send_signal(signal.SIGKILL)
                break
        acked.extend(int(line) for line in proc.stdout)  # acked before the kill landed
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
        assert acked, "child acknowledged nothing"
        highest = max(acked)
        s = DiskStorage.open(data)
        r = s.recovered
        assert r.hard_state.term == round_no
        assert s.last_index >= highest
        first = 1
        if r.snapshot is not None:
            assert r.snapshot.data == b"upto %d" % r.snapshot.meta.index
            first = r.snapshot.meta.index + 1
        assert [e.index for e in r.entries] == list(range(first, s.last_index + 1))
        for e in r.entries:
            assert e.data == _payload(e.index)
        acked_total += len(acked)
        s.close()
    assert acked_total > 500


# --------------------------------------------------------------------------- property


class Model:
    """The log semantics DiskStorage promises, in memory."""

    def __init__(self) -> None:
        self.hs = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    @property
    def snap_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot else 0

    @property
    def last(self) -> int:
        return self.snap_index + len(self.entries)

    def term_at(self, i: int) -> int | None:
        if self.snapshot and i == self.snap_index:
            return self.snapshot.meta.term
        if self.snap_index < i <= self.last:
            return self.entries[i - self.snap_index - 1].term
        return None

    def install(self, s: Snapshot) -> None:
        if self.snapshot and (s.meta.index, s.meta.term) == (
            self.snap_index,
            self.snapshot.meta.term,
        ):
            return  # the same snapshot again: storage keeps the one it has
        keep = self.term_at(s.meta.index) == s.meta.term
        drop = s.meta.index - self.snap_index
        self.entries = self.entries[drop:] if keep else []
        self.snapshot = s

    def append(self, batch: list[Entry]) -> None:
        first = batch[0].index
        self.entries = self.entries[: first - self.snap_index - 1] + batch


_append = st.tuples(
    st.just("append"), st.integers(0, 4), st.integers(1, 6), st.booleans(), st.booleans()
)
ops = st.lists(
    st.one_of(
        _append,
        _append,
        _append,
        st.tuples(st.just("install"), st.integers(-2, 6), st.booleans()),
        st.tuples(st.just("local_snapshot"), st.integers(0, 8)),
        st.tuples(st.just("local_snapshot"), st.integers(0, 8)),
        st.tuples(st.just("compact"), st.sampled_from([0, 0, 1, 3, 6])),
        st.tuples(st.just("compact"), st.sampled_from([0, 0, 1, 3, 6])),
        st.tuples(st.just("reopen"), st.sampled_from([b"", b"\x00" * 13, b"\x07garbage"])),
        st.tuples(st.just("crash_mid_save"), st.floats(0.0, 1.0)),
    ),
    min_size=10,
    max_size=60,
)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=ops, segment_bytes=st.sampled_from([64, 150, 400, 1 << 20]))
def test_random_operations_match_model(ops, segment_bytes: int) -> None:
    def reopen_and_check() -> DiskStorage:
        st_ = DiskStorage.open(d, fsync="never", segment_bytes=segment_bytes)
        r = st_.recovered
        assert r.entries == model.entries
        assert r.snapshot == model.snapshot
        hs = model.hs
        assert r.hard_state == HardState(hs.term, hs.vote, max(hs.commit, model.snap_index))
        return st_

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model = Model()
        before_last_save: Model | None = None  # to undo the last save when it is torn
        s = DiskStorage.open(d, fsync="never", segment_bytes=segment_bytes)
        counter = 0
        try:
            for op in ops:
                kind = op[0]
                undo = copy.deepcopy(model)
                wal_before = [(p.name, p.stat().st_size) for p in segments(d)]
                if kind == "append":
                    _, back, n, bump, with_hs = op
                    # Never rewrite committed entries (a Raft invariant the engine keeps).
                    first = max(model.last + 1 - back, model.hs.commit + 1, model.snap_index + 1)
                    term = model.hs.term + (1 if bump else 0) or 1
                    counter += 1
                    batch = [
                        Entry(i, term, data=f"{i}/{counter}".encode())
                        for i in range(first, first + n)
                    ]
                    hs = None
                    if with_hs or term != model.hs.term:
                        commit = (model.hs.commit + first - 1) // 2 if first > 1 else 0
                        hs = HardState(term, f"n{counter % 3}", max(model.hs.commit, commit))
                    s.save(hs, batch)
                    model.append(batch)
                    if hs is not None:
                        model.hs = hs
                elif kind == "install":
                    _, offset, same_term = op
                    index = max(model.snap_index, model.hs.commit, 1, model.last + offset)
                    term = model.term_at(index) if same_term else None
                    term = term if term is not None else model.hs.term + 1
                    counter += 1
                    snapshot = snap(index, term, data=b"install %d" % counter)
                    hs = HardState(max(model.hs.term, term), None, index)
                    s.save(hs, [], snapshot=snapshot)
                    model.install(snapshot)
                    model.hs = hs
                elif kind == "local_snapshot":
                    _, back = op
                    index = model.last - back
                    if index < max(model.snap_index, 1):
                        continue
                    counter += 1
                    snapshot = snap(index, model.term_at(index), data=b"local %d" % counter)
                    s.save_snapshot(snapshot)
                    model.install(snapshot)
                elif kind == "compact":
                    s.compact(max(0, model.snap_index - op[1]))
                elif kind == "reopen":
                    s.close()
                    if op[1]:
                        with segments(d)[-1].open("ab") as f:
                            f.write(op[1])  # an unacknowledged torn write
                    s = reopen_and_check()
                elif before_last_save is not None:  # crash_mid_save, right after a save
                    s.close()
                    last = segments(d)[-1]
                    start, end = record_offsets(last)[-1]
                    os.truncate(last, start + 1 + int(op[1] * (end - start - 2)))
                    model = before_last_save
                    s = reopen_and_check()
                wrote = wal_before != [(p.name, p.stat().st_size) for p in segments(d)]
                saved = kind in ("append", "install", "local_snapshot") and wrote
                before_last_save = undo if saved else None
                assert (s.last_index, s.snapshot_index) == (model.last, model.snap_index)
            s.close()
            s = reopen_and_check()
        finally:
            s.close()


def test_crc32_combine_agrees_with_zlib_over_the_whole() -> None:
    """A snapshot file's CRC covers its header before its data, and the header (with
    the data's length) is known only after the data is written: the CRCs combine."""
    import random
    import zlib

    from raft_core.node.snapfile import crc32_combine

    rng = random.Random(7)
    for _ in range(200):
        a = rng.randbytes(rng.randrange(0, 64))
        b = rng.randbytes(rng.choice([0, 1, 7, rng.randrange(0, 70_000)]))
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_a_snapshot_file_built_elsewhere_is_moved_in_not_copied(tmp_path: Path) -> None:
    """A follower builds the snapshot file it receives chunk by chunk in another
    directory; saving it renames that file (same inode) instead of copying the image,
    and it reads back whole after a restart."""
    from raft_core.node.snapfile import SnapshotFileBuilder

    s = DiskStorage.open(tmp_path / "node")
    s.save(HardState(1, "a", 3), ents(1, 3))
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    meta = snap(9, 2).meta
    built = SnapshotFileBuilder(incoming / snapshot_name(9, 2), meta)
    image = os.urandom(3 << 20)
    for at in range(0, len(image), 1 << 20):
        built.append(image[at : at + (1 << 20)])
    received = built.seal()
    built.close()
    inode = os.stat(received.data.path).st_ino
    s.save(None, [], snapshot=received)
    moved = tmp_path / "node" / "snap" / snapshot_name(9, 2)
    assert os.stat(moved).st_ino == inode and not list(incoming.iterdir())
    assert bytes(received.data) == image  # the open image follows the file
    s.close()
    again = reopen(tmp_path / "node")
    assert again.recovered.snapshot is not None and bytes(again.recovered.snapshot.data) == image
    again.close()


def test_a_builder_keeps_what_the_sender_announced_and_copies_in_the_kernel(
    tmp_path: Path,
) -> None:
    """More data than announced (a peer speaking garbage) is cut to the announced
    length, checksummed again; a file image copies into another file without passing
    through the process (copy_file_range), byte for byte."""
    from raft_core.node.snapfile import SnapshotFileBuilder, read_snapshot_file

    built = SnapshotFileBuilder(tmp_path / snapshot_name(4, 1), snap(4, 1).meta)
    built.append(b"a" * 1000 + b"garbage")
    built.truncate(1000)
    built.seal()
    built.close()
    back = read_snapshot_file(tmp_path / snapshot_name(4, 1))  # checks the CRC
    assert bytes(back.data) == b"a" * 1000
    fd = os.open(tmp_path / "copy", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"head")
        back.data.copy_into(fd)
        os.write(fd, b"tail")
    finally:
        os.close(fd)
    assert (tmp_path / "copy").read_bytes() == b"head" + b"a" * 1000 + b"tail"


def test_a_received_snapshot_starts_its_writeback_as_it_grows(tmp_path: Path, monkeypatch) -> None:
    """The chunks a follower receives are not left dirty until the final fsync: every
    IMAGE_SYNC_BYTES the kernel is told to start writing them (without waiting)."""
    from raft_core.imagecopy import IMAGE_SYNC_BYTES
    from raft_core.node import snapfile

    started: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def fadvise(fd, offset, length, advice):
        started.append((offset, length))
        return real(fd, offset, length, advice)

    monkeypatch.setattr(snapfile.os, "posix_fadvise", fadvise)
    built = snapfile.SnapshotFileBuilder(tmp_path / snapshot_name(3, 1), snap(3, 1).meta)
    chunk = b"c" * (1 << 20)
    for _ in range(3 * IMAGE_SYNC_BYTES // len(chunk) + 1):
        built.append(chunk)
    built.seal()
    built.close()
    assert len(started) == 3
    assert [o for o, _ in started] == [built.data_at + k * IMAGE_SYNC_BYTES for k in range(3)]
