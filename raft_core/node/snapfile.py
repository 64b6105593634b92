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

A snapshot read back (``read_snapshot_file``) keeps its data in the file: the CRC is
checked reading it in pieces, and the data is a ``FileImage``, read when a chunk of it
is sent or the state machine restores it (docs/design.md, "Snapshots off the loop").
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack

from raft_core.imagecopy import IMAGE_SYNC_BYTES, copy_range_paced, write_fully, write_paced
from raft_core.node.wal import StorageCorruption, fsync_dir
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


_PIECE = 1 << 20  # bytes read or written at a time when streaming a file image


class FileImage:
    """A region of a file (a snapshot's data), read on demand with ``os.pread``.

    The engine only takes a snapshot's length and slices chunks of it to send, which a
    file answers as well as memory does: a node then holds no copy of a large image
    on its heap, nor a mapping of it (mapped pages count in its resident set).
    ``bytes(image)`` reads it whole, for a state machine that restores from memory.
    """

    __slots__ = ("_fd", "_length", "_offset", "path")

    def __init__(self, path: Path, offset: int = 0, length: int | None = None) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._offset = offset
        self._length = os.fstat(self._fd).st_size - offset if length is None else length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key: slice) -> bytes:
        start, stop, step = key.indices(self._length)
        if step != 1:
            raise ValueError("a file image is read in contiguous slices")
        want = max(0, stop - start)
        parts = []
        while want:
            got = os.pread(self._fd, want, self._offset + start)
            if not got:
                raise OSError(f"{self.path} is shorter than its snapshot header says")
            parts.append(got)
            start += len(got)
            want -= len(got)
        return b"".join(parts)

    def __bytes__(self) -> bytes:
        return self[:]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FileImage | bytes | bytearray | memoryview):
            return len(self) == len(other) and bytes(self) == bytes(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def pieces(self) -> Iterator[bytes]:
        for start in range(0, self._length, _PIECE):
            yield self[start : start + _PIECE]

    def copy_into(self, fd: int) -> None:
        """Write the image to ``fd`` at its offset without reading it into this
        process (``copy_range_paced``)."""
        copy_range_paced(self._fd, self._offset, self._length, fd)

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.close(self._fd)


def pieces(data: bytes | FileImage) -> Iterator[bytes]:
    """``data`` in pieces: a file image streamed, anything else as it is."""
    if isinstance(data, FileImage):
        yield from data.pieces()
    elif len(data):
        yield data


def _meta_bytes(meta: SnapshotMeta) -> bytes:
    return msgpack.packb(
        {"index": meta.index, "term": meta.term, "conf": meta.conf.to_dict()},
        use_bin_type=True,
    )


def _head_and_meta(snapshot: Snapshot) -> tuple[bytes, bytes]:
    meta_bytes = _meta_bytes(snapshot.meta)
    return _HEAD.pack(MAGIC, VERSION, len(meta_bytes), len(snapshot.data)), meta_bytes


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The complete file image of ``snapshot`` (what :func:`decode_snapshot` reads)."""
    head, meta_bytes = _head_and_meta(snapshot)
    data = bytes(snapshot.data)
    crc = zlib.crc32(data, zlib.crc32(meta_bytes, zlib.crc32(head)))
    return b"".join([head, meta_bytes, data, _CRC.pack(crc)])


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of A+B from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's
    algorithm: apply ``len2`` zero bytes to ``crc1`` by squaring the GF(2) operator
    for one zero bit, then add ``crc2``). Microseconds, whatever ``len2``."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two
    odd = _gf2_square(even)  # four
    while True:
        even = _gf2_square(odd)  # one zero byte, then 4, 16...
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def write_snapshot_file(snap_dir: Path, snapshot: Snapshot, *, durable: bool) -> Path:
    """Write ``snapshot`` atomically; with ``durable`` it is on disk when this returns."""
    written = write_snapshot_file_with(
        snap_dir, snapshot.meta, lambda fd: write_paced(fd, pieces(snapshot.data)), durable=durable
    )
    return written.data.path  # type: ignore[attr-defined]


def write_snapshot_file_with(
    snap_dir: Path, meta: SnapshotMeta, write_data: Callable[[int], int], *, durable: bool
) -> Snapshot:
    """Write a snapshot file whose data ``write_data(fd)`` writes at the descriptor's
    current offset, returning the data's CRC-32 (any thread); returns the snapshot
    with its data left in the file.

    The data goes straight to its place in the file, so an image of a large state is
    written once (not to a scratch file, then copied) and never read back (see
    ``SnapshotFileBuilder``). Atomic as ``write_snapshot_file``: until the rename,
    there is no file.
    """
    path = snap_dir / snapshot_name(meta.index, meta.term)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    builder = SnapshotFileBuilder(tmp, meta)
    try:
        try:
            snap = builder.seal(write_data(builder.fd))
            if durable:
                os.fsync(builder.fd)
        finally:
            builder.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(snap_dir)
    snap.data.path = path  # type: ignore[attr-defined]
    return snap


class SnapshotFileBuilder:
    """A snapshot file written data first, then sealed: its data (appended, or
    written straight to ``fd``) goes to its place at once, and its length is known
    only at the end. So the header comes last, and the file's CRC (which covers the
    header first) is combined from the header's and the data's (``crc32_combine``):
    nothing is read back. A follower writes the chunks it receives this way, so the
    file it ends with is the snapshot file itself (``DiskStorage`` moves it in place)."""

    def __init__(self, path: Path, meta: SnapshotMeta) -> None:
        self.path = path
        self.meta = meta
        self._meta_bytes = _meta_bytes(meta)
        self.data_at = _HEAD.size + len(self._meta_bytes)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.lseek(self.fd, self.data_at, os.SEEK_SET)
        self._crc = 0
        self.size = 0
        self._flushed = 0  # bytes of data whose writeback was started

    def append(self, data: bytes) -> None:
        """Append data (the caller's thread: a follower's loop). Every IMAGE_SYNC_BYTES
        the kernel is told to start writing the last stretch out, without waiting
        for it: a gigabyte left dirty until the final fsync would hold every other
        sync on the disk behind its writeback (the members' loops stalled 200 ms)."""
        write_fully(self.fd, data)
        self._crc = zlib.crc32(data, self._crc)
        self.size += len(data)
        if self.size - self._flushed >= IMAGE_SYNC_BYTES:
            start = self.data_at + self._flushed
            os.posix_fadvise(self.fd, start, self.size - self._flushed, os.POSIX_FADV_DONTNEED)
            self._flushed = self.size

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` bytes of the data (what a sender announced, when
        it sent more): the one case where the data is read back, for its CRC."""
        os.ftruncate(self.fd, self.data_at + length)
        os.lseek(self.fd, self.data_at + length, os.SEEK_SET)
        crc = 0
        for start in range(0, length, _PIECE):
            crc = zlib.crc32(
                os.pread(self.fd, min(_PIECE, length - start), self.data_at + start), crc
            )
        self._crc, self.size = crc, length

    def seal(self, data_crc: int | None = None) -> Snapshot:
        """Write the header and the CRC (not synced); ``data_crc``: the CRC of data
        written to ``fd`` directly, else that of what was appended."""
        end = os.lseek(self.fd, 0, os.SEEK_CUR)
        length = end - self.data_at
        crc_data = self._crc if data_crc is None else data_crc
        head = _HEAD.pack(MAGIC, VERSION, len(self._meta_bytes), length)
        os.pwrite(self.fd, head + self._meta_bytes, 0)
        crc = crc32_combine(zlib.crc32(head + self._meta_bytes), crc_data, length)
        os.pwrite(self.fd, _CRC.pack(crc), end)
        return Snapshot(self.meta, FileImage(self.path, self.data_at, length))  # type: ignore[arg-type]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_snapshot_file(path: Path) -> Snapshot:
    """Verify a snapshot file and return it with its data left in the file (a
    ``FileImage``); raises StorageCorruption if it is damaged."""
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise StorageCorruption(f"snapshot file {path} is damaged: the file is missing") from None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, _HEAD.size, 0)
        meta_len, data_len = _check_head(head, size, where)
        crc = 0
        for start in range(0, size - _CRC.size, _PIECE):
            crc = zlib.crc32(os.pread(fd, min(_PIECE, size - _CRC.size - start), start), crc)
        (stored,) = _CRC.unpack(os.pread(fd, _CRC.size, size - _CRC.size))
        if crc != stored:
            raise _bad(where, "CRC mismatch")
        meta = _meta_of(os.pread(fd, meta_len, _HEAD.size), where)
    finally:
        os.close(fd)
    return Snapshot(meta=meta, data=FileImage(path, _HEAD.size + meta_len, data_len))  # type: ignore[arg-type]


def _bad(where: str, what: str) -> StorageCorruption:
    return StorageCorruption(f"snapshot file {where} is damaged: {what}")


def _check_head(head: bytes, size: int, where: str) -> tuple[int, int]:
    """``(meta_len, data_len)`` of a file of ``size`` bytes starting with ``head``."""
    if size < _HEAD.size + _CRC.size:
        raise _bad(where, f"only {size} bytes, shorter than the header")
    magic, version, meta_len, data_len = _HEAD.unpack_from(head, 0)
    if magic != MAGIC:
        raise _bad(where, f"bad magic {magic!r}")
    if version != VERSION:
        raise _bad(where, f"unsupported version {version}")
    expected = _HEAD.size + meta_len + data_len + _CRC.size
    if size != expected:
        raise _bad(where, f"size is {size} bytes, header says {expected} (truncated or padded)")
    return meta_len, data_len


def _meta_of(raw: bytes | memoryview, where: str) -> SnapshotMeta:
    try:
        return _decode_meta(msgpack.unpackb(raw, raw=False))
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise _bad(where, f"malformed metadata ({exc})") from None


def decode_snapshot(raw: bytes, where: str) -> Snapshot:
    """Verify and decode a snapshot file image; :class:`StorageCorruption` (naming
    ``where``) is the only error, whatever the bytes."""
    meta_len, _ = _check_head(raw[: _HEAD.size], len(raw), where)
    body = memoryview(raw)[: len(raw) - _CRC.size]
    (crc,) = _CRC.unpack_from(raw, len(raw) - _CRC.size)
    if zlib.crc32(body) != crc:
        raise _bad(where, "CRC mismatch")
    meta_end = _HEAD.size + meta_len
    return Snapshot(meta=_meta_of(body[_HEAD.size : meta_end], where), data=bytes(body[meta_end:]))


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
