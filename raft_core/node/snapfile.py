"""Snapshot files: ``snap/<index>-<term>.snap``, written atomically.

Layout (little-endian)::

    8s   magic      b"RAFTSNAP"
    u32  version    1
    u32  meta_len
    u64  data_len
    ...  meta       msgpack {"index", "term", "conf": ConfState.to_dict()}
    ...  data       opaque state machine image
    u32  crc32      zlib.crc32 over every byte before it

Written as ``<name>.tmp``, fsynced, renamed over ``<name>``, then the directory is
fsynced, so a reader sees either no file or a complete one.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import msgpack

from raft_core.node.wal import StorageCorruption, fsync_dir, write_all
from raft_core.types import ConfState, Snapshot, SnapshotMeta

MAGIC = b"RAFTSNAP"
VERSION = 1
_HEAD = struct.Struct("<8sIIQ")
_CRC = struct.Struct("<I")
SNAP_SUFFIX = ".snap"
TMP_SUFFIX = ".tmp"
_SNAP_RE = re.compile(r"^(\d{16})-(\d{16})\.snap$")


def snapshot_name(index: int, term: int) -> str:
    return f"{index:016d}-{term:016d}{SNAP_SUFFIX}"


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    """``(index, term)`` for a snapshot file name, else None."""
    m = _SNAP_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _file_parts(snapshot: Snapshot) -> list[bytes]:
    meta = snapshot.meta
    meta_bytes = msgpack.packb(
        {"index": meta.index, "term": meta.term, "conf": meta.conf.to_dict()},
        use_bin_type=True,
    )
    data = snapshot.data
    head = _HEAD.pack(MAGIC, VERSION, len(meta_bytes), len(data))
    crc = zlib.crc32(data, zlib.crc32(meta_bytes, zlib.crc32(head)))
    return [head, meta_bytes, data, _CRC.pack(crc)]


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The complete file image of ``snapshot`` (what :func:`decode_snapshot` reads)."""
    return b"".join(_file_parts(snapshot))


def write_snapshot_file(snap_dir: Path, snapshot: Snapshot, *, durable: bool) -> Path:
    """Write ``snapshot`` atomically; with ``durable`` it is on disk when this returns."""
    meta = snapshot.meta
    parts = _file_parts(snapshot)
    path = snap_dir / snapshot_name(meta.index, meta.term)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            write_all(fd, parts)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(snap_dir)
    return path


def read_snapshot_file(path: Path) -> Snapshot:
    """Load and verify a snapshot file; raises StorageCorruption if it is damaged."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StorageCorruption(f"snapshot file {path} is damaged: the file is missing") from None
    return decode_snapshot(raw, str(path))


def decode_snapshot(raw: bytes, where: str) -> Snapshot:
    """Verify and decode a snapshot file image; :class:`StorageCorruption` (naming
    ``where``) is the only error, whatever the bytes."""

    def bad(what: str) -> StorageCorruption:
        return StorageCorruption(f"snapshot file {where} is damaged: {what}")

    if len(raw) < _HEAD.size + _CRC.size:
        raise bad(f"only {len(raw)} bytes, shorter than the header")
    magic, version, meta_len, data_len = _HEAD.unpack_from(raw, 0)
    if magic != MAGIC:
        raise bad(f"bad magic {magic!r}")
    if version != VERSION:
        raise bad(f"unsupported version {version}")
    expected = _HEAD.size + meta_len + data_len + _CRC.size
    if len(raw) != expected:
        raise bad(f"size is {len(raw)} bytes, header says {expected} (truncated or padded)")
    body = memoryview(raw)[: expected - _CRC.size]
    (crc,) = _CRC.unpack_from(raw, expected - _CRC.size)
    if zlib.crc32(body) != crc:
        raise bad("CRC mismatch")
    meta_end = _HEAD.size + meta_len
    try:
        snap_meta = _decode_meta(msgpack.unpackb(body[_HEAD.size : meta_end], raw=False))
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise bad(f"malformed metadata ({exc})") from None
    return Snapshot(meta=snap_meta, data=bytes(body[meta_end:]))


def _decode_meta(meta: object) -> SnapshotMeta:
    """Strict: exact types (a CRC-valid file with the wrong shape is still damaged)."""
    if type(meta) is not dict:
        raise ValueError("metadata is not a map")
    index, term, conf = meta["index"], meta["term"], meta["conf"]
    if type(index) is not int or type(term) is not int or index < 0 or term < 0:
        raise ValueError("index and term must be non-negative integers")
    if type(conf) is not dict:
        raise ValueError("conf is not a map")
    for name in ("voters", "voters_outgoing", "learners"):
        ids = conf.get(name, ())
        if type(ids) is not list or any(type(i) is not str for i in ids):
            raise ValueError(f"conf.{name} must be a list of node ids")
    if type(conf.get("auto_leave", False)) is not bool:
        raise ValueError("conf.auto_leave must be a boolean")
    return SnapshotMeta(index=index, term=term, conf=ConfState.from_dict(conf))
