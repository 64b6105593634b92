"""Applying committed entries: client sessions, the applied-entries hash, snapshots.

An application supplies a ``StateMachine`` (apply / snapshot / restore), as with
hashicorp/raft's FSM. ``Replica`` wraps it with what every state machine needs and
none should write twice:

* **client sessions** (dissertation 6.3): a command carrying (client id, sequence
  number) is executed at most once; a retry gets the saved response. Sessions expire
  by time recorded in the log (the leader stamps each command), so every replica
  expires the same ones at the same entry. A session that expired leaves a small
  tombstone, so a late retry is answered "session expired" and never re-executed.
  Memory is bounded whatever the clients do: at most ``max_sessions`` sessions (at the
  cap, the least recently active one expires early, into a tombstone) and at most
  ``max_tombstones`` tombstones (the oldest go first; they are also forgotten after ten
  TTLs). Both are kept in activity order, so expiring costs O(expired), not a scan of
  every session, and every replica evicts the same ones at the same entry. A retry of a
  request whose tombstone is gone can no longer be recognised and executes again: the
  caps bound how long "exactly once" is remembered for clients that stopped talking.
* **the digest chain**: a running SHA-256 over every applied entry (index, term,
  type, payload), carried across snapshots, so two replicas can be compared at a
  common index even after both compacted their logs.

The host drives one contract whatever keeps the state (docs/design.md, "The on-disk
state machine"): ``apply`` entries in order, ``commit`` after each batch (where an
on-disk replica makes the batch durable with its applied index in one transaction),
``snapshot_writer`` on the event loop to capture a consistent view cheaply, then call
the writer it returns off the loop to put the image in a file, ``restore`` an image,
``close``. ``Replica`` keeps everything in memory; its writer serializes in a forked
child, so the parent's loop only pays for the fork. ``DiskReplica``
(raft_core/diskstate.py) keeps it in LMDB.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from .imagecopy import drain_paced, write_fully
from .types import Entry, EntryType

_ENTRY_HEADER = struct.Struct(">QQB")


class StateMachine(Protocol):
    def apply(self, command: Any) -> Any:
        """Execute a decoded command; return a msgpack-serialisable result."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...

    def state_hash(self) -> str:
        """A hash of the state itself (not its history), for consistency checks."""


class CommandError(Exception):
    """A command that was not executed; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode_command(
    payload: Any, client_id: str | None = None, seq: int | None = None, ts_ms: int = 0
) -> bytes:
    """The log payload of a client command: the command plus its session and time."""
    return msgpack.packb([payload, client_id, seq, ts_ms], use_bin_type=True)


def decode_command(data: bytes) -> tuple[Any, str | None, int | None, int]:
    payload, client_id, seq, ts_ms = msgpack.unpackb(data, raw=False)
    return payload, client_id, seq, ts_ms


@dataclass(slots=True)
class Session:
    last_active_ms: int
    # (index, term, result) of executed sequence numbers at or above ``floor``;
    # anything below the floor was forgotten, so it can no longer be answered safely.
    responses: dict[int, tuple[int, int, Any]] = field(default_factory=dict)
    floor: int = 0


@dataclass(slots=True)
class ApplyResult:
    index: int
    term: int
    value: Any = None
    error: CommandError | None = None


class Replica:
    """A state machine plus sessions and the digest chain, driven by committed entries."""

    def __init__(
        self,
        sm: StateMachine,
        *,
        session_ttl_ms: int = 10 * 60 * 1000,
        responses_per_session: int = 128,
        digest_history: int = 4096,
        max_sessions: int = 50_000,
        max_tombstones: int = 200_000,
    ) -> None:
        if max_sessions < 1 or max_tombstones < 1:
            raise ValueError("max_sessions and max_tombstones must be positive")
        self.sm = sm
        self.session_ttl_ms = session_ttl_ms
        self.responses_per_session = responses_per_session
        self.max_sessions = max_sessions
        self.max_tombstones = max_tombstones
        # Least recently active first (a touched session moves to the end). OrderedDict,
        # not dict: removing from the front of a plain dict leaves holes that make
        # every later next(iter(...)) slower until the next resize.
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        # client id -> (highest sequence number executed before its session expired,
        # clock at expiry); oldest first.
        self.tombstones: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.clock_ms = 0
        self.applied_index = 0
        self.applied_term = 0
        self.chain = bytes(32)
        self._digest_history = digest_history
        self._chains: OrderedDict[int, bytes] = OrderedDict()

    # -- applying ------------------------------------------------------------

    def apply(self, entry: Entry) -> ApplyResult:
        if entry.index != self.applied_index + 1:
            raise RuntimeError(
                f"applying entry {entry.index} after {self.applied_index}: entries must be "
                "applied in order, with no gaps"
            )
        h = hashlib.sha256(self.chain)
        h.update(_ENTRY_HEADER.pack(entry.index, entry.term, int(entry.type)))
        h.update(entry.data)
        self.chain = h.digest()
        self.applied_index, self.applied_term = entry.index, entry.term
        self._chains[entry.index] = self.chain
        if len(self._chains) > self._digest_history:
            self._chains.popitem(last=False)
        result = ApplyResult(entry.index, entry.term)
        if entry.type is EntryType.NORMAL and entry.data:
            try:
                # A duplicate answers with the original's index and term too.
                result.index, result.term, result.value = self._apply_command(entry)
            except CommandError as e:
                result.error = e
        return result

    def _apply_command(self, entry: Entry) -> tuple[int, int, Any]:
        data = entry.data
        try:
            payload, client_id, seq, ts_ms = decode_command(data)
        except (ValueError, TypeError, msgpack.ExtraData) as e:
            raise CommandError("bad_command", f"undecodable command: {e}") from e
        if ts_ms > self.clock_ms:
            self.clock_ms = ts_ms
            self._expire_sessions()
        if client_id is None or seq is None:
            return entry.index, entry.term, self.sm.apply(payload)
        session = self.sessions.get(client_id)
        if session is None:
            tomb = self.tombstones.get(client_id)
            if tomb is not None and seq <= tomb[0]:
                raise CommandError(
                    "session_expired",
                    f"session {client_id} expired; request {seq} may already have been "
                    "executed, so it was not executed again",
                )
            if len(self.sessions) >= self.max_sessions:
                self._bury(next(iter(self.sessions)))  # the least recently active
            session = self.sessions[client_id] = self._new_session()
            if tomb is not None:
                session.floor = tomb[0] + 1
                del self.tombstones[client_id]
        else:
            self.sessions.move_to_end(client_id)  # keep activity order
        session.last_active_ms = self.clock_ms
        if seq in session.responses:
            return session.responses[seq]
        if seq < session.floor:
            raise CommandError(
                "stale_sequence",
                f"request {seq} of {client_id} is older than the responses kept "
                f"(from {session.floor}); it was not executed",
            )
        response = (entry.index, entry.term, self.sm.apply(payload))
        session.responses[seq] = response
        if len(session.responses) > self.responses_per_session:
            oldest = min(session.responses)
            del session.responses[oldest]
            session.floor = max(session.floor, oldest + 1)
        return response

    def _new_session(self) -> Session:
        """A session starting now (DiskReplica's records which responses change)."""
        return Session(self.clock_ms)

    def _expire_sessions(self) -> None:
        deadline = self.clock_ms - self.session_ttl_ms
        sessions = self.sessions
        while sessions:
            cid = next(iter(sessions))
            if sessions[cid].last_active_ms >= deadline:
                break
            self._bury(cid)
        horizon = self.clock_ms - 10 * self.session_ttl_ms
        tombstones = self.tombstones
        while tombstones:
            cid = next(iter(tombstones))
            if tombstones[cid][1] >= horizon:
                break
            tombstones.popitem(last=False)

    def _bury(self, cid: str) -> None:
        """End a session, leaving a tombstone (dropping the oldest one at the cap)."""
        s = self.sessions.pop(cid)
        top = max(s.responses, default=s.floor - 1)
        self.tombstones[cid] = (top, self.clock_ms)
        if len(self.tombstones) > self.max_tombstones:
            self.tombstones.popitem(last=False)

    # -- consistency ---------------------------------------------------------

    def chain_at(self, index: int) -> bytes | None:
        if index == self.applied_index:
            return self.chain
        return self._chains.get(index)

    def digest(self) -> dict:
        fields, state_hash = self.digest_view()
        return {**fields, "state_hash": state_hash()}

    def digest_view(self) -> tuple[dict, Callable[[], str]]:
        """The digest's fields as of now, and a function that computes its state hash
        as of now on any thread. In memory there is no view to keep: the hash is
        taken here (an on-disk replica hashes a read transaction later)."""
        fields = {
            "applied_index": self.applied_index,
            "applied_term": self.applied_term,
            "chain": self.chain.hex(),
        }
        state_hash = self.sm.state_hash()
        return fields, lambda: state_hash

    # -- batches and lifetime -------------------------------------------------

    def commit(self) -> None:
        """The batch applied so far is complete (nothing to do in memory)."""

    def close(self) -> None:
        """Release what the replica holds (nothing in memory)."""

    # -- snapshots -----------------------------------------------------------

    # Whether the state is kept durably by the replica itself, so that a snapshot can
    # be a checkpoint (``checkpoint_writer``) instead of an image. Not in memory.
    checkpoints = False

    def checkpoint_writer(self, extra: Any = None) -> Callable[[], None]:
        raise NotImplementedError("an in-memory replica has no durable copy to checkpoint")

    def snapshot_writer(self, extra: Any = None) -> Callable[[int], int]:
        """Capture the state as of now; the returned function writes its image to a
        file descriptor, at its current offset, returns the image's CRC-32, and may
        run on another thread while entries keep being applied here.

        In memory the capture is a fork: the child holds a copy-on-write view of the
        state as of the fork and serializes it into a pipe; the caller's thread pays
        only for the fork itself (page tables), and the writer drains the pipe into
        the file (raft_core/imagecopy.py). Where fork is unavailable the image is
        serialized here and now.
        """
        if not hasattr(os, "fork"):
            image = self.snapshot(extra)

            def write_now(fd: int) -> int:
                write_fully(fd, image)
                return zlib.crc32(image)

            return write_now
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: serialize, write, leave without any cleanup
            code = 1
            try:
                os.close(r)
                write_fully(w, self.snapshot(extra))
                code = 0
            finally:
                os._exit(code)
        os.close(w)

        def write(fd: int) -> int:
            try:
                crc = drain_paced(r, fd)
            finally:
                os.close(r)
                _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise OSError("the process writing the snapshot image failed")
            return crc

        return write

    def snapshot(self, extra: Any = None) -> bytes:
        """An image of everything applied so far; ``extra`` is the driver's own data."""
        sessions = {
            cid: [s.last_active_ms, s.floor, list(s.responses.items())]
            for cid, s in self.sessions.items()
        }
        return msgpack.packb(
            {
                "v": 1,
                "index": self.applied_index,
                "term": self.applied_term,
                "chain": self.chain,
                "clock": self.clock_ms,
                "sessions": sessions,
                "tombstones": {c: list(t) for c, t in self.tombstones.items()},
                "sm": self.sm.snapshot(),
                "extra": extra,
            },
            use_bin_type=True,
        )

    def restore(self, data: bytes) -> Any:
        """Replace everything with a snapshot's image; returns the driver's ``extra``."""
        try:
            # bytes() reads a snapshot left in its file (a FileImage) whole.
            img = msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
            if img.get("v") != 1:
                raise ValueError(f"unknown snapshot version {img.get('v')!r}")
            self.sm.restore(img["sm"])
            sessions = {
                cid: Session(
                    last, {int(k): (int(i), int(t), v) for k, (i, t, v) in responses}, floor
                )
                for cid, (last, floor, responses) in img["sessions"].items()
            }
            tombstones = {c: (int(t[0]), int(t[1])) for c, t in img["tombstones"].items()}
            # Images keep activity order already; the stable sorts only matter for
            # images written before the order was kept, and give every replica the same.
            self.sessions = OrderedDict(
                sorted(sessions.items(), key=lambda kv: kv[1].last_active_ms)
            )
            self.tombstones = OrderedDict(sorted(tombstones.items(), key=lambda kv: kv[1][1]))
            self.applied_index = int(img["index"])
            self.applied_term = int(img["term"])
            self.chain = bytes(img["chain"])
            self.clock_ms = int(img["clock"])
        except (ValueError, TypeError, KeyError, msgpack.ExtraData) as e:
            raise ValueError(f"snapshot image is damaged or not ours: {e}") from e
        self._chains.clear()
        self._chains[self.applied_index] = self.chain
        return img.get("extra")
