"""Writing a snapshot image into a file at a pace the disk can absorb.

An image is hundreds of megabytes. Written at once and synced at the end, its dirty
pages sit in the page cache until that sync, and every WAL sync on the same disk
queues behind their writeback (measured on this project's 2-core machine: 300 MB
written at once held a concurrent 4 KiB fdatasync up to 109 ms; synced every 16 MiB,
under 9 ms). Producers (LMDB's copy, a forked serializer) write into a pipe; the
snapshot thread drains it into the file and syncs as it goes.
"""

from __future__ import annotations

import errno
import os
import threading
import zlib
from collections.abc import Callable, Iterable

# The image's file is synced every this many bytes as it is written.
IMAGE_SYNC_BYTES = 16 << 20
_READ = 1 << 20


def write_fully(fd: int, data: bytes) -> None:
    out = memoryview(data)
    while out:
        out = out[os.write(fd, out) :]


def write_paced(
    dst: int, pieces: Iterable[bytes], every: Callable[[], object] | None = None
) -> int:
    """Write ``pieces`` to ``dst`` at its current offset, syncing every
    IMAGE_SYNC_BYTES (and calling ``every``, if given, as often); returns the CRC-32
    of what it wrote (a snapshot file's checksum, without reading it back)."""
    crc = unsynced = 0
    for piece in pieces:
        write_fully(dst, piece)
        crc = zlib.crc32(piece, crc)
        unsynced += len(piece)
        if unsynced >= IMAGE_SYNC_BYTES:
            os.fdatasync(dst)
            unsynced = 0
            if every is not None:
                every()
    return crc


def drain_paced(src: int, dst: int, every: Callable[[], object] | None = None) -> int:
    """Copy everything readable from ``src`` to ``dst`` at its current offset,
    syncing ``dst`` every IMAGE_SYNC_BYTES; returns the CRC-32 of what it copied."""
    return write_paced(dst, iter(lambda: os.read(src, _READ), b""), every)


def copy_paced(
    produce: Callable[[int], None], dst: int, every: Callable[[], object] | None = None
) -> int:
    """Run ``produce(write_fd)`` on a thread of its own and drain what it writes into
    ``dst`` (see ``drain_paced``; ``every`` runs at each sync, while the producer
    goes on); returns the CRC-32 of what it copied; re-raises what ``produce`` raised."""
    r, w = os.pipe()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            produce(w)
        except BaseException as e:  # re-raised below, once the pipe is drained
            failed.append(e)
        finally:
            os.close(w)

    producer = threading.Thread(target=run, name="image-producer", daemon=True)
    producer.start()
    try:
        crc = drain_paced(r, dst, every)
    finally:
        os.close(r)
        producer.join()
    if failed:
        raise failed[0]
    return crc


def copy_range_paced(src: int, offset: int, length: int, dst: int) -> None:
    """Copy ``length`` bytes of ``src`` from ``offset`` to ``dst`` at its current
    offset, inside the kernel (``copy_file_range``: the bytes never pass through this
    process), syncing every IMAGE_SYNC_BYTES. Falls back to reading and writing where
    the kernel cannot (another filesystem, an old kernel)."""
    out = os.lseek(dst, 0, os.SEEK_CUR)
    done = 0
    try:
        while done < length:
            step = min(IMAGE_SYNC_BYTES, length - done)
            n = os.copy_file_range(src, dst, step, offset + done, out + done)
            if n <= 0:
                raise OSError(f"the source ended {length - done} bytes early")
            done += n
            os.fdatasync(dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        rest = range(offset + done, offset + length, _READ)
        pieces = (os.pread(src, min(_READ, offset + length - at), at) for at in rest)
        os.lseek(dst, out + done, os.SEEK_SET)
        write_paced(dst, pieces)
    os.lseek(dst, out + length, os.SEEK_SET)
