"""The on-disk state machine: raft-node's KV store, kept in LMDB.

Why LMDB, and what was measured against SQLite: docs/design.md, "The on-disk state
machine". One LMDB file (``state.mdb``) holds these tables:

* ``kv``: the data (UTF-8 keys and values); reads come from here, never a dict copy.
  LMDB keys stop at 511 bytes and the API takes up to 1 KiB, so a longer key lives in
  ``long`` under its SHA-256, with the key itself stored before the value;
* ``sessions``, ``responses`` and ``tombs``: the client sessions (exactly-once,
  raft_core/statemachine.py), one row each with its place in activity order, their
  saved responses one row each (a command writes one, not its session's whole
  history), and the tombstones; keyed by a hash of the client id, which may be long;
* ``meta``: the applied index and term, the digest chain, the log clock, and the
  host's ``extra`` (member addresses) as of the latest snapshot.

Applied batches are committed in write transactions (``commit``; the node decides how
many batches one covers): the data, the sessions they touched and the applied index
become visible together or not at all, so a restart
resumes from the store's own applied index, replays the entries after it from the
Raft log, and rebuilds nothing in memory but the (bounded) session table. Commits are
not fsynced: the Raft WAL is the durable record, and a store that lost its latest
commits in a power failure replays them from the log, which is only compacted below a
snapshot, and a snapshot is taken from a committed, synced view.

A snapshot image is a compact copy of the file made from a read transaction on a
worker thread (``snapshot_writer``), while this thread keeps writing. Installing a
received image is split in two so that the event loop never writes the image: the disk
thread writes it next to the store (``stage``), the loop swaps the files (``restore``).
A crash at any step leaves either the old store or the new one; the WAL decides
(see ``RaftNode.start``).
"""

from __future__ import annotations

import ctypes
import hashlib
import heapq
import mmap
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from .imagecopy import copy_paced, write_paced
from .kv import KVStore, hash_items
from .node.snapfile import FileImage, pieces
from .statemachine import ApplyResult, Replica, Session
from .types import Entry

STORE_FILE = "state.mdb"
STAGED_SUFFIX = ".staged"
# Address space reserved for the map (not disk, not memory): LMDB never grows past it.
DEFAULT_MAP_SIZE = 1 << 40
_APPLIED = b"applied"
_EXTRA = b"extra"
_LMDB_MAGIC = (0xBEEFC0DE).to_bytes(4, "little")
# Environment variable naming a crash point (see ``crash_point``); raft-node sets it
# only with --allow-fault-injection.
CRASH_ENV = "RAFT_NODE_CRASH_AT"


def crash_point(name: str) -> None:
    """Die as kill -9 would, here, if the crash tests asked for it.

    ``RAFT_NODE_CRASH_AT=NAME`` (or ``NAME:N``, the N-th time the point is passed)
    arms one point through ``arm_crash_points``, which raft-node calls only with
    --allow-fault-injection; an unarmed process pays one comparison.
    """
    global _hits
    if _armed is None or _armed[0] != name:
        return
    _hits += 1
    if _hits >= _armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)


_armed: tuple[str, int] | None = None
_hits = 0


def arm_crash_points() -> str | None:
    """Arm the crash point named in the environment; its name, if any."""
    global _armed
    spec = os.environ.get(CRASH_ENV, "")
    if not spec:
        return None
    name, _, count = spec.partition(":")
    _armed = (name, int(count) if count else 1)
    return spec


class _Tracked(OrderedDict):
    """An OrderedDict that remembers which keys changed since the last commit, and
    each key's place in order (a counter taken when it moves to the end), so that the
    order survives a restart exactly: eviction order decides exactly-once answers."""

    def __init__(self, counter: list[int]) -> None:
        super().__init__()
        self.dirty: set[str] = set()
        self.place: dict[str, int] = {}
        self._counter = counter  # shared by sessions and tombstones, persisted in meta

    def _stamp(self, key: str) -> None:
        self._counter[0] += 1
        self.place[key] = self._counter[0]
        self.dirty.add(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self:
            self._stamp(key)
        else:
            self.dirty.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.place.pop(key, None)
        self.dirty.add(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.place.pop(key, None)
            self.dirty.add(key)
        return super().pop(key, *default)

    def popitem(self, last: bool = True) -> tuple[str, Any]:
        key, value = super().popitem(last)
        self.place.pop(key, None)
        self.dirty.add(key)
        return key, value

    def move_to_end(self, key: str, last: bool = True) -> None:
        super().move_to_end(key, last)
        self._stamp(key)

    def load(self, rows: list[tuple[int, str, Any]]) -> None:
        """Fill from stored ``(place, key, value)`` rows, in their order, clean."""
        super().clear()
        self.place.clear()
        self.dirty.clear()
        for place, key, value in sorted(rows, key=lambda r: r[0]):
            super().__setitem__(key, value)
            self.place[key] = place


_MAX_KEY = 511  # lmdb.Environment.max_key_size() for the default build


def _long_value(kb: bytes, vb: bytes) -> bytes:
    return len(kb).to_bytes(4, "big") + kb + vb


def _split_long(raw: bytes) -> tuple[bytes, bytes]:
    n = int.from_bytes(raw[:4], "big")
    return raw[4 : 4 + n], raw[4 + n :]


class _Responses(dict):
    """A session's saved responses, remembering which changed since the last commit.
    ``fresh``: the session is new, so rows an earlier session of the same client left
    must go."""

    def __init__(self, *args: Any, fresh: bool = False) -> None:
        super().__init__(*args)
        self.added: set[int] = set()
        self.removed: set[int] = set()
        self.fresh = fresh

    def __setitem__(self, seq: int, value: Any) -> None:
        super().__setitem__(seq, value)
        self.added.add(seq)
        self.removed.discard(seq)

    def __delitem__(self, seq: int) -> None:
        super().__delitem__(seq)
        self.removed.add(seq)
        self.added.discard(seq)


def _cid_key(cid: str) -> bytes:
    return hashlib.sha256(cid.encode()).digest()[:16]


class LmdbKV(KVStore):
    """The KV commands of ``KVStore``, executed on the store's open write transaction;
    reads see that transaction's writes (so a read served inside a batch is current),
    else the latest committed state."""

    def __init__(self, replica: DiskReplica) -> None:
        self._r = replica

    @property
    def data(self) -> dict[str, str]:  # type: ignore[override]
        raise AttributeError("the on-disk KV has no dict of its data; use get()")

    def _where(self, key: str) -> tuple[bytes, Any, bool]:
        """The LMDB key and table of ``key``, and whether it is a long one."""
        kb = key.encode()
        if len(kb) <= _MAX_KEY:
            return kb, self._r._kv, False
        return hashlib.sha256(kb).digest(), self._r._long, True

    def get(self, key: str) -> str | None:
        r = self._r
        k, db, long = self._where(key)
        if r._txn is not None:
            v = r._txn.get(k, db=db)
        else:
            with r._env.begin(db=db) as txn:
                v = txn.get(k)
        if v is None:
            return None
        return (_split_long(bytes(v))[1] if long else bytes(v)).decode()

    def _set(self, key: str, value: str) -> None:
        k, db, long = self._where(key)
        vb = value.encode()
        self._r._txn.put(k, _long_value(key.encode(), vb) if long else vb, db=db)  # type: ignore[union-attr]

    def _remove(self, key: str) -> bool:
        k, db, _ = self._where(key)
        return self._r._txn.delete(k, db=db)  # type: ignore[union-attr]

    def snapshot(self) -> bytes:
        raise NotImplementedError("DiskReplica snapshots the whole store file")

    def restore(self, data: bytes) -> None:
        raise NotImplementedError("DiskReplica restores the whole store file")

    def items(self) -> Iterator[tuple[str, str]]:
        """Every pair in key order, from one read transaction."""
        r = self._r
        r.commit()
        with r._env.begin(db=r._kv) as txn:
            yield from self.items_in(txn)

    def items_in(self, txn: lmdb.Transaction) -> Iterator[tuple[str, str]]:
        """Every pair in key order as ``txn`` sees them (any thread)."""
        r = self._r
        # Long keys are few (API keys over 511 bytes): sorted in memory, merged in.
        longs = sorted(_split_long(bytes(v)) for _, v in txn.cursor(db=r._long))
        pairs = ((bytes(k), bytes(v)) for k, v in txn.cursor(db=r._kv))
        for k, v in heapq.merge(pairs, longs):
            yield k.decode(), v.decode()

    def state_hash(self) -> str:
        """O(state): a diagnostic, compared by the consistency checks, not on a hot path."""
        return hash_items(self.items())


_PAGE = mmap.PAGESIZE
# A walk of the whole store (the state hash) releases the map this often.
_RELEASE_EVERY_ITEMS = 16_384
_MADV_DONTNEED = 4
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _map_address(path: Path) -> int | None:
    """Where LMDB mapped ``path`` in this process (``/proc/self/maps``: LMDB reports
    the address only for fixed maps); None where there is no such file."""
    target = os.path.realpath(path)
    best: tuple[int, int] | None = None  # (length, start)
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == target:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    if best is None or end - start > best[0]:
                        best = (end - start, start)
    except OSError:
        return None
    return best[1] if best else None


def _open_env(path: Path, map_size: int) -> lmdb.Environment:
    return lmdb.open(
        str(path),
        subdir=False,
        map_size=map_size,
        max_dbs=6,
        sync=False,  # the Raft WAL is the durable record: see the module docstring
        metasync=False,
        readahead=False,  # point reads of a store larger than memory
        max_readers=64,
    )


def is_store_image(data: bytes) -> bool:
    """Whether ``data`` is a DiskReplica image (an LMDB file), not a ``Replica`` one."""
    return len(data) >= 20 and bytes(data[16:20]) == _LMDB_MAGIC


class DiskReplica(Replica):
    """A ``Replica`` whose state machine, sessions, chain and applied index live in
    one LMDB file at ``path`` (created if missing)."""

    def __init__(self, path: Path, *, map_size: int = DEFAULT_MAP_SIZE, **limits: Any) -> None:
        self.path = Path(path)
        self._map_size = map_size
        self._txn: lmdb.Transaction | None = None
        # Held from a snapshot's capture until its image is written: the store file
        # must not be swapped or closed under a read view.
        self._view_lock = threading.Lock()
        # Held while the map is used from another thread (flush) or moved (restore).
        self._map_lock = threading.Lock()
        self._counter = [0]
        super().__init__(LmdbKV(self), **limits)
        self.kv: LmdbKV = self.sm  # type: ignore[assignment]
        self.sessions = _Tracked(self._counter)  # type: ignore[assignment]
        self.tombstones = _Tracked(self._counter)  # type: ignore[assignment]
        self.extra: Any = None
        self.path.with_name(self.path.name + STAGED_SUFFIX).unlink(missing_ok=True)
        self._open()

    # -- opening and loading --------------------------------------------------

    def _open(self) -> None:
        self._env = _open_env(self.path, self._map_size)
        self._map_at = _map_address(self.path)
        self._kv = self._env.open_db(b"kv")
        self._long = self._env.open_db(b"long")
        self._sessions = self._env.open_db(b"sessions")
        self._responses = self._env.open_db(b"responses")
        self._tombs = self._env.open_db(b"tombs")
        self._meta = self._env.open_db(b"meta")
        self._load()

    def _load(self) -> None:
        with self._env.begin() as txn:
            meta = txn.get(_APPLIED, db=self._meta)
            if meta is not None:
                index, term, chain, clock, counter = msgpack.unpackb(meta)
                self.applied_index, self.applied_term = index, term
                self.chain, self.clock_ms, self._counter[0] = bytes(chain), clock, counter
            else:
                self.applied_index = self.applied_term = self.clock_ms = self._counter[0] = 0
                self.chain = bytes(32)
            extra = txn.get(_EXTRA, db=self._meta)
            # Stored with the index it was taken at, for whoever inspects the file.
            self.extra = msgpack.unpackb(extra)[1] if extra else None
            responses: dict[bytes, _Responses] = {}
            for k, v in txn.cursor(db=self._responses):
                index, term, value = msgpack.unpackb(v, strict_map_key=False)
                rs = responses.setdefault(bytes(k[:16]), _Responses())
                dict.__setitem__(rs, int.from_bytes(k[16:], "big"), (index, term, value))
            sessions = []
            for k, v in txn.cursor(db=self._sessions):
                place, last, floor, cid = msgpack.unpackb(v)
                rs = responses.get(bytes(k), _Responses())
                sessions.append((place, cid, Session(last, rs, floor)))
            tombs = [
                (place, cid, (top, at))
                for v in txn.cursor(db=self._tombs).iternext(keys=False)
                for place, top, at, cid in [msgpack.unpackb(v)]
            ]
        self.sessions.load(sessions)  # type: ignore[attr-defined]
        self.tombstones.load(tombs)  # type: ignore[attr-defined]
        self._chains.clear()
        self._chains[self.applied_index] = self.chain

    # -- applying ---------------------------------------------------------------

    def apply(self, entry: Entry) -> ApplyResult:
        if entry.index <= self.applied_index:
            # Already in the store: a restart replays the log from the snapshot, and
            # the store was ahead of it (see the module docstring).
            return ApplyResult(entry.index, entry.term)
        if self._txn is None:
            self._txn = self._env.begin(write=True)
        return super().apply(entry)

    def commit(self) -> None:
        """Make the batch applied so far visible and crash-safe, in one transaction."""
        txn = self._txn
        if txn is None:
            return
        try:
            self._write_sessions(txn)
            self._write_tombstones(txn)
            meta = [self.applied_index, self.applied_term, self.chain, self.clock_ms]
            txn.put(_APPLIED, msgpack.packb([*meta, self._counter[0]]), db=self._meta)
            crash_point("store-commit")
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        finally:
            self._txn = None

    def _write_sessions(self, txn: lmdb.Transaction) -> None:
        table: _Tracked = self.sessions  # type: ignore[assignment]
        for cid in table.dirty:
            k = _cid_key(cid)
            s = table.get(cid)
            if s is None:
                txn.delete(k, db=self._sessions)
                self._drop_responses(txn, k)
                continue
            row = [table.place[cid], s.last_active_ms, s.floor, cid]
            txn.put(k, msgpack.packb(row), db=self._sessions)
            rs = s.responses
            if not isinstance(rs, _Responses):  # filled whole (an image converted)
                rs = s.responses = _Responses(rs, fresh=True)
                rs.added.update(rs)
            if rs.fresh:
                self._drop_responses(txn, k)
                rs.fresh = False
            for seq in rs.removed:
                txn.delete(k + seq.to_bytes(8, "big"), db=self._responses)
            for seq in rs.added:
                row = msgpack.packb(rs[seq], use_bin_type=True)
                txn.put(k + seq.to_bytes(8, "big"), row, db=self._responses)
            rs.added.clear()
            rs.removed.clear()
        table.dirty.clear()

    def _drop_responses(self, txn: lmdb.Transaction, k: bytes) -> None:
        cur = txn.cursor(db=self._responses)
        if cur.set_range(k):
            while cur.key()[:16] == k and cur.delete():
                pass

    def _write_tombstones(self, txn: lmdb.Transaction) -> None:
        table: _Tracked = self.tombstones  # type: ignore[assignment]
        for cid in table.dirty:
            t = table.get(cid)
            if t is None:
                txn.delete(_cid_key(cid), db=self._tombs)
            else:
                row = msgpack.packb([table.place[cid], t[0], t[1], cid])
                txn.put(_cid_key(cid), row, db=self._tombs)
        table.dirty.clear()

    def _new_session(self) -> Session:
        return Session(self.clock_ms, _Responses(fresh=True))

    def close(self) -> None:
        with self._view_lock, self._map_lock:
            self.commit()
            self._env.sync(True)
            self._env.close()

    # -- snapshots ----------------------------------------------------------------

    checkpoints = True

    def checkpoint_writer(self, extra: Any = None) -> Callable[[], None]:
        """Commit what was applied, with ``extra`` (the host's data as of this index);
        the returned function syncs the store (any thread). Once it returns the store
        holds everything through the applied index durably, and the log below it may
        go: a checkpoint costs a sync of the pages written since the last one, not a
        copy of the state."""
        self.commit()
        with self._env.begin(write=True) as txn:
            txn.put(_EXTRA, msgpack.packb([self.applied_index, extra]), db=self._meta)
        self.extra = extra

        def sync() -> None:
            with self._map_lock:
                self._env.sync(True)
            crash_point("checkpoint-synced")

        return sync

    def snapshot_writer(self, extra: Any = None) -> Callable[[int], int]:
        """Capture a read view as of the applied index (cheap: a transaction); the
        writer copies it (compacted) to a file descriptor at its current offset and
        returns its CRC-32, on any thread, while this one keeps applying. ``extra`` is
        stored with the view, so the image carries the host's data as of the same
        index."""
        self.commit()
        if not self._view_lock.acquire(blocking=False):
            raise RuntimeError("a snapshot image is already being written from this store")
        try:
            with self._env.begin(write=True) as txn:
                txn.put(_EXTRA, msgpack.packb([self.applied_index, extra]), db=self._meta)
            self.extra = extra
            view = self._env.begin()
        except BaseException:
            self._view_lock.release()
            raise
        env = self._env

        def write(fd: int) -> int:
            try:
                # The store's commits are not synced; once the snapshot lets the log go
                # below this index, a restart should find the store at least this far
                # (else it restores the snapshot): sync here, off the caller's loop.
                env.sync(True)
                # The copy reads every page through the map: let go of what it read as
                # it goes (the view lock keeps the map where it is), or a gigabyte
                # store's image puts the whole file in the resident set.
                crc = copy_paced(
                    lambda w: env.copyfd(w, compact=True, txn=view), fd, self._release_map
                )
                crash_point("snapshot-image")
                return crc
            finally:
                view.abort()
                self._view_lock.release()

        return write

    def snapshot(self, extra: Any = None) -> bytes:
        raise NotImplementedError("DiskReplica images are files: use snapshot_writer")

    def digest_view(self) -> tuple[dict, Callable[[], str]]:
        """The digest as of now; its state hash, O(state), from a read view on any
        thread (at a gigabyte, hashing on the loop would stall it for seconds)."""
        self.commit()
        view = self._env.begin()
        fields = {
            "applied_index": self.applied_index,
            "applied_term": self.applied_term,
            "chain": self.chain.hex(),
        }
        kv: LmdbKV = self.sm  # type: ignore[assignment]

        def state_hash() -> str:
            try:
                return hash_items(self._releasing(kv.items_in(view)))
            finally:
                view.abort()

        return fields, state_hash

    def flush(self) -> None:
        """Write the committed pages out now, then let go of the map's pages (any
        thread). Done every second, so that dirty pages never pile up until a
        snapshot's sync has to flush them all at once (on a shared disk that one flush
        stalls every WAL sync behind it), and so that the resident set holds the pages
        the node uses, not every page of the file it ever touched (see
        ``_release_map``)."""
        with self._map_lock:
            self._env.sync(True)
            self._release_map()

    def _releasing(self, items: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        """``items``, letting go of the map's pages every so often (a walk of the
        whole store would otherwise leave all of it resident)."""
        for n, item in enumerate(items, 1):
            yield item
            if n % _RELEASE_EVERY_ITEMS == 0:
                with self._map_lock:
                    self._release_map()

    def _release_map(self) -> None:
        """Unmap the store's pages from this process (``MADV_DONTNEED``); they stay
        in the page cache, and the next read maps them back without a disk read.

        LMDB maps the file read-only and shared, so this loses nothing. Without it a
        store of N bytes ends up with all N resident in the process: each page fault
        maps the cached pages around it too, and the map is never remapped (bbolt's
        is, as it grows). Under the map lock or the view lock (``restore``, which
        moves the map, takes both): the map must not move meanwhile."""
        if self._map_at is None:
            return
        length = -(-os.path.getsize(self.path) // _PAGE) * _PAGE
        if length:
            _libc.madvise(self._map_at, length, _MADV_DONTNEED)

    def stage(self, data: bytes) -> None:
        """Write a received image next to the store (any thread; waits for a snapshot
        image being written), so that ``restore`` only swaps files."""
        if not is_store_image(data):
            return  # a Replica image: restore converts it
        staged = self.path.with_name(self.path.name + STAGED_SUFFIX)
        tmp = staged.with_name(staged.name + ".tmp")
        with self._view_lock:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                if isinstance(data, FileImage):  # a received snapshot file: in the kernel
                    data.copy_into(fd)
                else:
                    write_paced(fd, pieces(data))
                os.fsync(fd)
            finally:
                os.close(fd)
            crash_point("install-staged")
            os.replace(tmp, staged)

    def restore(self, data: bytes) -> Any:
        """Replace the store by an image; returns the ``extra`` it carries.

        An image ``stage`` wrote is swapped in (O(1)); otherwise it is written here.
        A ``Replica`` image (msgpack) is converted, entry by entry: a cluster moving
        from in-memory nodes, or an old data directory.
        """
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        if not is_store_image(data):
            return self._convert(data)
        staged = self.path.with_name(self.path.name + STAGED_SUFFIX)
        if not staged.exists() or staged.stat().st_size != len(data):
            self.stage(data)
        if not self._view_lock.acquire(blocking=False):
            raise RuntimeError("cannot replace the store while a snapshot image is written")
        try:
            with self._map_lock:
                self._env.close()
                os.replace(staged, self.path)
                crash_point("install-swapped")
                _fsync_dir(self.path.parent)
                self._open()
        finally:
            self._view_lock.release()
        return self.extra

    def _convert(self, data: bytes) -> Any:
        mem = Replica(KVStore())
        extra = mem.restore(data)
        kv: KVStore = mem.sm  # type: ignore[assignment]
        txn = self._txn = self._env.begin(write=True)
        tables = (self._kv, self._long, self._sessions, self._responses, self._tombs)
        for db in (*tables, self._meta):
            txn.drop(db, delete=False)
        for k in sorted(kv.data):
            self.kv._set(k, kv.data[k])
        txn.put(_EXTRA, msgpack.packb([mem.applied_index, extra]), db=self._meta)
        self.sessions.load([])  # type: ignore[attr-defined]
        self.tombstones.load([])  # type: ignore[attr-defined]
        for cid, s in mem.sessions.items():
            self.sessions[cid] = s
        for cid, t in mem.tombstones.items():
            self.tombstones[cid] = t
        self.applied_index, self.applied_term = mem.applied_index, mem.applied_term
        self.chain, self.clock_ms = mem.chain, mem.clock_ms
        self.commit()  # one transaction: the whole image or nothing
        self.extra = extra
        self._chains.clear()
        self._chains[self.applied_index] = self.chain
        return extra


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
