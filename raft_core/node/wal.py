"""Write-ahead log segments: record framing, record payloads, and the torn-tail scan.

A segment file is a sequence of records::

    u32 length   little-endian, number of bytes that follow the CRC (type + payload)
    u32 crc32    zlib.crc32(type byte + payload)
    u8  type     RecordType
    ...payload   msgpack, length - 1 bytes

Payloads (msgpack arrays; hs = [term, vote, commit])::

    SEGMENT_HEADER (1)  [version=1, seq, first_index, hs, [snap_index, snap_term] | nil]
    BATCH (2)           [hs | nil, [snap_index, snap_term, reset_log] | nil,
                         first_index, [[term, type, data], ...]]   # entries contiguous

A segment is named ``<seq:016d>-<first_index:016d>.wal``; ``first_index`` is the index
the next appended entry had when the segment was created, and its header repeats the
hard state and live snapshot then current, so older segments can be deleted freely.

Every segment starts with a SEGMENT_HEADER record; every ``DiskStorage.save`` call
appends exactly one BATCH record (snapshot marker, entries, hard state) and then
fsyncs. Because a save is a single record, a crash can tear at most the last record of
the last segment, and nothing valid can follow a torn record. That is what lets
recovery tell a torn write (truncate it) from corruption (refuse to start): see
``find_valid_record``.

This module knows the byte format only; the replay rules live in ``storage.py``.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import msgpack

from raft_core.types import Entry, EntryType, HardState

FORMAT_VERSION = 1


class StorageError(Exception):
    """The storage cannot be used (locked by another process, failed write, misuse)."""


class DiskFull(StorageError):
    """A write failed with ENOSPC: nothing is damaged, the disk at ``path`` is full."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class StorageCorruption(StorageError):
    """On-disk state is damaged in a way that recovery must not paper over."""


class RecordType(IntEnum):
    SEGMENT_HEADER = 1
    BATCH = 2


REC_HEADER = struct.Struct("<IIB")  # length, crc32, type
REC_HEADER_SIZE = REC_HEADER.size  # 9
MAX_RECORD_LENGTH = 0xFFFF_FFFF
_TYPES = frozenset(int(t) for t in RecordType)
_CRC_SEED = {int(t): zlib.crc32(bytes([t])) for t in RecordType}
# Positions p such that data[p + 8] is a known record type: the only places a record can
# start. Used to look for valid records after a bad one without a Python loop per byte.
_CANDIDATE = re.compile(
    b"(?=[\\x00-\\xff]{8}[" + b"".join(re.escape(bytes([t])) for t in sorted(_TYPES)) + b"])"
)

SEGMENT_SUFFIX = ".wal"
_SEGMENT_RE = re.compile(r"^(\d{16})-(\d{16})\.wal$")


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016d}-{first_index:016d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """``(seq, first_index)`` for a segment file name, else None."""
    m = _SEGMENT_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


# --------------------------------------------------------------------------- framing


def frame(rtype: RecordType, payload: bytes) -> bytes:
    """The 9-byte record header for ``payload`` (write it followed by the payload)."""
    length = len(payload) + 1
    if length > MAX_RECORD_LENGTH:
        raise ValueError(f"WAL record of {length} bytes exceeds the 4 GiB record limit")
    return REC_HEADER.pack(length, zlib.crc32(payload, _CRC_SEED[rtype]), rtype)


def record_at(data: bytes | memoryview, off: int) -> tuple[int, int] | None:
    """``(type, end_offset)`` if a complete record with a valid CRC starts at ``off``."""
    size = len(data)
    if off + REC_HEADER_SIZE > size:
        return None
    length, crc, rtype = REC_HEADER.unpack_from(data, off)
    end = off + 8 + length
    if length < 1 or rtype not in _TYPES or end > size:
        return None
    if zlib.crc32(memoryview(data)[off + REC_HEADER_SIZE : end], _CRC_SEED[rtype]) != crc:
        return None
    return rtype, end


def describe_bad_record(data: bytes | memoryview, off: int) -> str:
    """Why ``record_at(data, off)`` is None, in words for an operator."""
    size = len(data)
    if off + REC_HEADER_SIZE > size:
        return f"truncated record header ({size - off} of {REC_HEADER_SIZE} bytes)"
    length, _crc, rtype = REC_HEADER.unpack_from(data, off)
    if length == 0 and not any(memoryview(data)[off : off + REC_HEADER_SIZE]):
        return "zero-filled bytes where a record should start"
    if length < 1:
        return "record length 0"
    if rtype not in _TYPES:
        return f"unknown record type {rtype}"
    if off + 8 + length > size:
        return f"record length {length} runs past the end of the file ({size - off - 8} bytes left)"
    return "CRC mismatch"


def scan_records(data: bytes | memoryview) -> tuple[list[tuple[int, int, memoryview]], int | None]:
    """Split ``data`` into ``(offset, type, payload)`` records.

    Returns the records up to the first one that is not complete and valid, and the
    offset of that bad record (None when the data ends exactly after a valid record).
    """
    view = memoryview(data)
    records: list[tuple[int, int, memoryview]] = []
    off = 0
    size = len(view)
    while off < size:
        found = record_at(view, off)
        if found is None:
            return records, off
        rtype, end = found
        records.append((off, rtype, view[off + REC_HEADER_SIZE : end]))
        off = end
    return records, None


def find_valid_record(data: bytes | memoryview, start: int) -> int | None:
    """Offset of the first complete, CRC-valid record starting at or after ``start``.

    This is the torn-vs-corrupt test. Each save is one record followed by an fsync, so
    a crash can only damage the last record of the last segment (cut short, or with
    some of its sectors never written), possibly followed by zeros or garbage from block
    allocation. A valid record after a bad one means the bad bytes were once
    acknowledged data that has since been damaged.
    """
    view = memoryview(data)
    if start >= len(view) or view[start:].tobytes().count(0) == len(view) - start:
        return None
    for m in _CANDIDATE.finditer(view, start):
        if record_at(view, m.start()) is not None:
            return m.start()
    return None


# --------------------------------------------------------------------------- payloads


@dataclass(slots=True, frozen=True)
class SegmentHeader:
    """First record of every segment: enough state to replay from this segment alone."""

    seq: int
    first_index: int  # index the first entry appended to this segment would have
    hard_state: HardState
    snapshot: tuple[int, int] | None  # (index, term) of the live snapshot


@dataclass(slots=True)
class Batch:
    """One ``save`` call."""

    hard_state: HardState | None
    snapshot: tuple[int, int, bool] | None  # (index, term, reset_log)
    entries: list[Entry]


def _hs_out(hs: HardState) -> list:
    if type(hs.term) is not int or type(hs.commit) is not int:
        raise TypeError(f"hard state term and commit must be int: {hs!r}")
    if hs.vote is not None and type(hs.vote) is not str:
        raise TypeError(f"hard state vote must be a str node id or None: {hs!r}")
    return [hs.term, hs.vote, hs.commit]


def _hs_in(raw: object) -> HardState:
    term, vote, commit = raw  # type: ignore[misc]
    if type(term) is not int or type(commit) is not int:
        raise ValueError("hard state term/commit must be integers")
    if vote is not None and type(vote) is not str:
        raise ValueError("hard state vote must be a string or nil")
    return HardState(term, vote, commit)


def _uint(v: object, what: str) -> int:
    # type() rather than isinstance(): a bool is not an index, and int() of a float
    # (inf, NaN) would raise something other than ValueError.
    if type(v) is not int or v < 0:
        raise ValueError(f"{what} must be a non-negative integer, not {type(v).__name__}")
    return v


def encode_header(header: SegmentHeader) -> bytes:
    snap = list(header.snapshot) if header.snapshot is not None else None
    return msgpack.packb(
        [FORMAT_VERSION, header.seq, header.first_index, _hs_out(header.hard_state), snap],
        use_bin_type=True,
    )


def decode_header(payload: bytes | memoryview) -> SegmentHeader:
    version, seq, first_index, hs, snap = msgpack.unpackb(payload, raw=False)
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported WAL format version {version!r}")
    if not (isinstance(seq, int) and isinstance(first_index, int) and first_index >= 1):
        raise ValueError("bad sequence number or first index")
    snapshot = None
    if snap is not None:
        s_index, s_term = snap
        snapshot = (_uint(s_index, "snapshot index"), _uint(s_term, "snapshot term"))
    return SegmentHeader(seq, first_index, _hs_in(hs), snapshot)


_ENTRY_TYPES = {int(t): t for t in EntryType}


def encode_batch(
    hard_state: HardState | None,
    snapshot: tuple[int, int, bool] | None,
    entries: Sequence[Entry],
) -> bytes:
    # Entries are contiguous, so only the first index is stored.
    raw = [[e.term, e.type, e.data] for e in entries]
    for term, etype, data in raw:
        # Refuse here what decode_batch would reject: better a failed save than a WAL
        # that refuses to start.
        if type(term) is not int or etype not in _ENTRY_TYPES or type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)) or type(term) is not int:
                raise TypeError(f"entry needs an int term and bytes data: {term!r}, {data!r}")
            if etype not in _ENTRY_TYPES:
                raise ValueError(f"unknown entry type {etype!r}")
    return msgpack.packb(
        [
            _hs_out(hard_state) if hard_state is not None else None,
            list(snapshot) if snapshot is not None else None,
            entries[0].index if entries else 0,
            raw,
        ],
        use_bin_type=True,
    )


def decode_batch(payload: bytes | memoryview) -> Batch:
    hs, snap, first, raw_entries = msgpack.unpackb(payload, raw=False)
    snapshot = None
    if snap is not None:
        s_index, s_term, reset = snap
        if type(reset) is not bool:
            raise ValueError("snapshot reset flag must be a boolean")
        snapshot = (_uint(s_index, "snapshot index"), _uint(s_term, "snapshot term"), reset)
    if type(first) is not int or (raw_entries and first < 1):
        raise ValueError("bad first entry index")
    types = _ENTRY_TYPES
    entries = [
        Entry(first + k, term, types[etype], data)
        for k, (term, etype, data) in enumerate(raw_entries)
    ]
    for e in entries:
        # A record with a valid CRC but a wrong shape is corruption, not something to
        # hand to the engine.
        if type(e.term) is not int or e.term < 0 or type(e.data) is not bytes:
            raise ValueError(f"entry {e.index} needs an integer term and bytes data")
    return Batch(_hs_in(hs) if hs is not None else None, snapshot, entries)


# --------------------------------------------------------------------------- file helpers


def write_all(fd: int, buffers: Sequence[bytes | memoryview]) -> None:
    """``os.writev`` all buffers, continuing after short writes."""
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


datasync = getattr(os, "fdatasync", os.fsync)
