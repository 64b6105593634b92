"""Wire codec for the values Raft nodes exchange (``raft_core.types``).

Layout (msgpack, positional; every container is an array, byte strings are msgpack
``bin``, node ids are msgpack ``str``)::

    Message   = [type, to, frm, term, log_term, index, entries, commit,
                 reject, reject_hint, context, chunk]
    Entry     = [index, term, type, data]
    chunk     = nil | [SnapshotMeta, offset, total, data, done]
    SnapshotMeta = [index, term, ConfState]
    ConfState = [voters, voters_outgoing, learners, auto_leave]   (id lists sorted)

Decoding is strict. Anything that is not exactly this shape, with these types and
within these limits, raises :class:`CodecError` (a ``ValueError``) whose message names
the offending field; no other exception type escapes ``decode_*``. Beyond the shape,
a few structural invariants are enforced because the engine relies on them:

* only peer message types (not HUP/BEAT/CHECK_QUORUM);
* indexes, terms, offsets are integers in ``[0, 2**63 - 1]`` (booleans are not ints);
* node ids are non-empty strings of at most 64 characters;
* only APP carries entries; they are contiguous starting at ``index + 1`` and their
  terms never decrease (starting from ``log_term``);
* SNAP carries a chunk and no other type does; ``offset + len(data) <= total`` and a
  ``done`` chunk ends exactly at ``total``;
* READ_INDEX and READ_INDEX_RESP carry a non-empty context (the read's tag);
* no duplicate ids inside a ConfState list; size limits below.

Encoding validates with the same rules (raising ``ValueError``), so anything
:func:`encode_message` accepts, :func:`decode_message` accepts too: one bad message can
never make a receiver drop a healthy connection.

Memory safety: inputs up to ``FAST_DECODE_LIMIT`` bytes are decoded in one
``msgpack.unpackb`` call (fast). Larger inputs are walked with a streaming unpacker that
only materialises containers where the layout has them, so a hostile peer cannot make
a 64 MiB frame expand into gigabytes of nested empty lists.
"""

from __future__ import annotations

from typing import Any

import msgpack

from raft_core.types import (
    LOCAL_MESSAGES,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotChunk,
    SnapshotMeta,
)

__all__ = [
    "FAST_DECODE_LIMIT",
    "MAX_CONTEXT_BYTES",
    "MAX_ENTRIES",
    "MAX_MEMBERS",
    "MAX_NODE_ID_LEN",
    "MAX_UINT",
    "CodecError",
    "decode_entry",
    "decode_message",
    "decode_snapshot_meta",
    "encode_entry",
    "encode_message",
    "encode_snapshot_meta",
]


class CodecError(ValueError):
    """Input that is not a well-formed encoding; the message names what was wrong."""


MAX_NODE_ID_LEN = 64
MAX_UINT = (1 << 63) - 1
MAX_ENTRIES = 1 << 18  # per APP message
MAX_MEMBERS = 4096  # per ConfState id list
MAX_CONTEXT_BYTES = 1 << 16
FAST_DECODE_LIMIT = 1 << 20  # above this, decode with the streaming walker

_MESSAGE_FIELDS = 12
_MAX_STR_BYTES = MAX_NODE_ID_LEN * 4  # UTF-8 worst case for a 64-character id

_PEER_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType if t not in LOCAL_MESSAGES}
_ENTRY_TYPES: dict[int, EntryType] = {int(t): t for t in EntryType}
# Decoding yields plain ints; encoding may see the enums themselves (msgpack packs an
# IntEnum as its integer value). Never bool: True == 1 would otherwise pass.
_ENTRY_TYPE_CLASSES = frozenset({int, EntryType})
_MESSAGE_TYPE_CLASSES = frozenset({int, MessageType})
_APP = int(MessageType.APP)
_SNAP = int(MessageType.SNAP)
_READS = frozenset({int(MessageType.READ_INDEX), int(MessageType.READ_INDEX_RESP)})
_NIL = 0xC0


# --------------------------------------------------------------------------- helpers


def _kind(v: Any) -> str:
    if v is None:
        return "nil"
    return type(v).__name__


def _uint(v: Any, what: str) -> None:
    if type(v) is not int:
        raise CodecError(f"{what}: expected a non-negative integer, got {_kind(v)}")
    if v < 0 or v > MAX_UINT:
        raise CodecError(f"{what}: {v} is out of range [0, 2**63-1]")


def _node_id(v: Any, what: str) -> None:
    if type(v) is not str:
        raise CodecError(f"{what}: expected a node id string, got {_kind(v)}")
    if not v or len(v) > MAX_NODE_ID_LEN:
        raise CodecError(f"{what}: node id must be 1..{MAX_NODE_ID_LEN} characters, got {len(v)}")


def _bytes(v: Any, what: str, limit: int | None = None) -> None:
    if type(v) is not bytes:
        raise CodecError(f"{what}: expected bytes, got {_kind(v)}")
    if limit is not None and len(v) > limit:
        raise CodecError(f"{what}: {len(v)} bytes exceeds the limit of {limit}")


def _bool(v: Any, what: str) -> None:
    if type(v) is not bool:
        raise CodecError(f"{what}: expected a boolean, got {_kind(v)}")


def _array(v: Any, what: str, n: int | None = None, limit: int | None = None) -> None:
    if type(v) is not list:
        raise CodecError(f"{what}: expected an array, got {_kind(v)}")
    if n is not None and len(v) != n:
        raise CodecError(f"{what}: expected {n} fields, got {len(v)}")
    if limit is not None and len(v) > limit:
        raise CodecError(f"{what}: {len(v)} items exceeds the limit of {limit}")


# ------------------------------------------------------------- validation (tree form)
#
# The "tree" is what msgpack yields for a valid encoding: nested lists of scalars.
# Encoding builds the tree, validates it, packs it; decoding unpacks it, validates it,
# builds the dataclasses. One set of rules for both directions.


def _check_entry(t: Any, what: str) -> None:
    _array(t, what, 4)
    _uint(t[0], f"{what}.index")
    _uint(t[1], f"{what}.term")
    ty = t[2]
    if ty.__class__ not in _ENTRY_TYPE_CLASSES or ty not in _ENTRY_TYPES:
        shown = ty if type(ty) is int else _kind(ty)
        raise CodecError(f"{what}.type: unknown entry type {shown}")
    _bytes(t[3], f"{what}.data")


def _check_entries(entries: list, prev_index: int, prev_term: int) -> None:
    """APP entries: well-formed, contiguous after ``prev_index``, terms non-decreasing."""
    types = _ENTRY_TYPES
    int_classes = _ENTRY_TYPE_CLASSES
    for pos, e in enumerate(entries):
        # Fast path: one combined test per entry; diagnose only when it fails.
        if type(e) is list and len(e) == 4:
            i, t, ty, d = e
            if (
                type(i) is int
                and i == prev_index + 1
                and type(t) is int
                and prev_term <= t <= MAX_UINT
                and ty.__class__ in int_classes
                and ty in types
                and type(d) is bytes
            ):
                prev_index, prev_term = i, t
                continue
        _diagnose_entry(e, pos, prev_index, prev_term)
    if prev_index > MAX_UINT:
        raise CodecError(f"message.entries: index {prev_index} is out of range [0, 2**63-1]")


def _diagnose_entry(e: Any, pos: int, prev_index: int, prev_term: int) -> None:
    what = f"message.entries[{pos}]"
    _check_entry(e, what)
    if e[0] != prev_index + 1:
        raise CodecError(f"{what}.index: {e[0]} does not follow {prev_index}")
    raise CodecError(f"{what}.term: {e[1]} is lower than preceding term {prev_term}")


def _check_conf(t: Any, what: str) -> None:
    _array(t, what, 4)
    for pos, name in enumerate(("voters", "voters_outgoing", "learners")):
        ids = t[pos]
        _array(ids, f"{what}.{name}", limit=MAX_MEMBERS)
        for i, v in enumerate(ids):
            _node_id(v, f"{what}.{name}[{i}]")
        if len(set(ids)) != len(ids):
            raise CodecError(f"{what}.{name}: duplicate node ids")
    _bool(t[3], f"{what}.auto_leave")


def _check_meta(t: Any, what: str) -> None:
    _array(t, what, 3)
    _uint(t[0], f"{what}.index")
    _uint(t[1], f"{what}.term")
    _check_conf(t[2], f"{what}.conf")


def _check_chunk(t: Any) -> None:
    _array(t, "chunk", 5)
    _check_meta(t[0], "chunk.meta")
    offset, total, data = t[1], t[2], t[3]
    _uint(offset, "chunk.offset")
    _uint(total, "chunk.total")
    _bytes(data, "chunk.data")
    _bool(t[4], "chunk.done")
    end = offset + len(data)
    if end > total:
        raise CodecError(f"chunk: offset {offset} + {len(data)} bytes exceeds total {total}")
    if t[4] and end != total:
        raise CodecError(f"chunk: done chunk ends at {end}, not at total {total}")


def _check_message(t: Any) -> None:
    # Fast path: one combined test for the scalar fields (most messages are small and
    # per-field calls would dominate); the field-by-field walk below runs only to
    # explain a failure.
    if type(t) is list and len(t) == _MESSAGE_FIELDS:
        mtype, to, frm, term, log_term, index, entries, commit, reject, hint, ctx, chunk = t
        if (
            mtype.__class__ in _MESSAGE_TYPE_CLASSES
            and mtype in _PEER_TYPES
            and type(to) is str
            and 0 < len(to) <= MAX_NODE_ID_LEN
            and type(frm) is str
            and 0 < len(frm) <= MAX_NODE_ID_LEN
            and type(term) is int
            and 0 <= term <= MAX_UINT
            and type(log_term) is int
            and 0 <= log_term <= MAX_UINT
            and type(index) is int
            and 0 <= index <= MAX_UINT
            and type(commit) is int
            and 0 <= commit <= MAX_UINT
            and type(reject) is bool
            and type(hint) is int
            and 0 <= hint <= MAX_UINT
            and type(ctx) is bytes
            and len(ctx) <= MAX_CONTEXT_BYTES
            and type(entries) is list
            and len(entries) <= MAX_ENTRIES
            and (chunk is None) != (mtype == _SNAP)
            and (not entries or mtype == _APP)
            and (ctx or mtype not in _READS)
        ):
            if entries:
                _check_entries(entries, index, log_term)
            if chunk is not None:
                _check_chunk(chunk)
            return
    _diagnose_message(t)
    raise CodecError("message: malformed")  # unreachable unless the two paths disagree


def _diagnose_message(t: Any) -> None:
    _array(t, "message", _MESSAGE_FIELDS)
    mtype = t[0]
    if mtype.__class__ not in _MESSAGE_TYPE_CLASSES or mtype not in _PEER_TYPES:
        shown = mtype if type(mtype) is int else _kind(mtype)
        raise CodecError(f"message.type: {shown} is not a peer message type")
    _node_id(t[1], "message.to")
    _node_id(t[2], "message.frm")
    _uint(t[3], "message.term")
    log_term = t[4]
    _uint(log_term, "message.log_term")
    index = t[5]
    _uint(index, "message.index")
    entries = t[6]
    _array(entries, "message.entries", limit=MAX_ENTRIES)
    if entries:
        if mtype != _APP:
            raise CodecError(f"message.entries: {_PEER_TYPES[mtype].name} cannot carry entries")
        _check_entries(entries, index, log_term)
    _uint(t[7], "message.commit")
    _bool(t[8], "message.reject")
    _uint(t[9], "message.reject_hint")
    _bytes(t[10], "message.context", MAX_CONTEXT_BYTES)
    if not t[10] and mtype in _READS:
        raise CodecError(f"message.context: {_PEER_TYPES[mtype].name} requires a context")
    chunk = t[11]
    if mtype == _SNAP:
        if chunk is None:
            raise CodecError("message.chunk: SNAP requires a snapshot chunk")
        _check_chunk(chunk)
    elif chunk is not None:
        raise CodecError(f"message.chunk: {_PEER_TYPES[mtype].name} cannot carry a chunk")


# ------------------------------------------------------------- tree <-> dataclasses


def _entry_tree(e: Entry) -> list:
    return [e.index, e.term, e.type, e.data]


def _conf_tree(c: ConfState) -> list:
    try:
        return [sorted(c.voters), sorted(c.voters_outgoing), sorted(c.learners), c.auto_leave]
    except TypeError:  # not iterable, or an unsortable mixture of id types
        raise CodecError("conf: voter/learner sets must hold node id strings") from None


def _meta_tree(m: SnapshotMeta) -> list:
    return [m.index, m.term, _conf_tree(m.conf)]


def _message_tree(m: Message) -> list:
    chunk = m.chunk
    return [
        m.type,
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        [[e.index, e.term, e.type, e.data] for e in m.entries],
        m.commit,
        m.reject,
        m.reject_hint,
        m.context,
        None
        if chunk is None
        else [_meta_tree(chunk.meta), chunk.offset, chunk.total, chunk.data, chunk.done],
    ]


def _build_conf(t: list) -> ConfState:
    return ConfState(
        voters=frozenset(t[0]),
        voters_outgoing=frozenset(t[1]),
        learners=frozenset(t[2]),
        auto_leave=t[3],
    )


def _build_meta(t: list) -> SnapshotMeta:
    return SnapshotMeta(index=t[0], term=t[1], conf=_build_conf(t[2]))


def _build_message(t: list) -> Message:
    c = t[11]
    et = _ENTRY_TYPES
    return Message(
        type=_PEER_TYPES[t[0]],
        to=t[1],
        frm=t[2],
        term=t[3],
        log_term=t[4],
        index=t[5],
        entries=[Entry(i, term, et[ty], d) for i, term, ty, d in t[6]],
        commit=t[7],
        reject=t[8],
        reject_hint=t[9],
        context=t[10],
        chunk=None
        if c is None
        else SnapshotChunk(meta=_build_meta(c[0]), offset=c[1], total=c[2], data=c[3], done=c[4]),
    )


# --------------------------------------------------------------------- msgpack layer


def _pack(tree: list) -> bytes:
    try:
        return msgpack.packb(tree, use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a lone surrogate in an id
        raise CodecError(f"cannot encode: {exc}") from None


def _as_buffer(b: Any) -> bytes | bytearray | memoryview:
    if not isinstance(b, bytes | bytearray | memoryview):
        raise CodecError(f"input: expected bytes, got {_kind(b)}")
    return b


def _why(exc: Exception) -> str:
    text = str(exc)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unpack_small(b: bytes | bytearray | memoryview, limit: int) -> Any:
    """One-shot unpack; containers capped at ``limit`` items, maps/exts refused."""
    try:
        return msgpack.unpackb(
            b,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=_MAX_STR_BYTES,
            max_bin_len=len(b),
            max_array_len=limit,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types; normalise them all
        raise CodecError(f"input: not a valid msgpack document ({_why(exc)})") from exc


class _Walker:
    """Streaming reader that materialises arrays only where the layout has them."""

    __slots__ = ("buf", "u")

    def __init__(self, b: bytes | bytearray | memoryview) -> None:
        self.buf = b
        # max_array_len=0: a scalar slot can never expand into a container (the empty
        # array is allowed and then rejected by validation). Array headers at known
        # positions are read with read_array_header, which does not apply that cap.
        self.u = msgpack.Unpacker(
            None,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_buffer_size=max(len(b), 1),
            max_str_len=_MAX_STR_BYTES,
            max_bin_len=len(b),
            max_array_len=0,
            max_map_len=0,
            max_ext_len=0,
        )
        self.u.feed(b)

    def scalar(self) -> Any:
        return self.u.unpack()

    def is_nil(self) -> bool:
        pos = self.u.tell()
        return pos < len(self.buf) and self.buf[pos] == _NIL

    def header(self, what: str, limit: int) -> int:
        try:
            n = self.u.read_array_header()
        except msgpack.OutOfData:
            raise CodecError("input: truncated msgpack document") from None
        except Exception as exc:
            raise CodecError(f"{what}: expected an array ({_why(exc)})") from exc
        if n > limit:
            raise CodecError(f"{what}: {n} items exceeds the limit of {limit}")
        return n

    def fixed(self, what: str, n: int) -> None:
        got = self.header(what, MAX_ENTRIES)
        if got != n:
            raise CodecError(f"{what}: expected {n} fields, got {got}")

    def conf(self) -> list:
        self.fixed("chunk.meta.conf", 4)
        out: list = []
        for name in ("voters", "voters_outgoing", "learners"):
            n = self.header(f"chunk.meta.conf.{name}", MAX_MEMBERS)
            out.append([self.scalar() for _ in range(n)])
        out.append(self.scalar())
        return out

    def chunk(self) -> list | None:
        if self.is_nil():
            return self.scalar()
        self.fixed("chunk", 5)
        self.fixed("chunk.meta", 3)
        meta = [self.scalar(), self.scalar(), self.conf()]
        return [meta, self.scalar(), self.scalar(), self.scalar(), self.scalar()]

    def message(self) -> list:
        self.fixed("message", _MESSAGE_FIELDS)
        t = [self.scalar() for _ in range(6)]
        n = self.header("message.entries", MAX_ENTRIES)
        entries = []
        for i in range(n):
            self.fixed(f"message.entries[{i}]", 4)
            entries.append([self.scalar(), self.scalar(), self.scalar(), self.scalar()])
        t.append(entries)
        t.extend(self.scalar() for _ in range(4))
        t.append(self.chunk())
        return t

    def finish(self) -> None:
        if self.u.tell() != len(self.buf):
            raise CodecError(f"input: {len(self.buf) - self.u.tell()} bytes of trailing data")


def _walk(b: bytes | bytearray | memoryview, read: str) -> list:
    w = _Walker(b)
    try:
        tree = getattr(w, read)()
        w.finish()
    except CodecError:
        raise
    except msgpack.OutOfData:
        raise CodecError("input: truncated msgpack document") from None
    except Exception as exc:
        raise CodecError(f"input: not a valid msgpack document ({_why(exc)})") from exc
    return tree


# ------------------------------------------------------------------------ public API


def encode_message(m: Message) -> bytes:
    """Encode a peer message. Raises ``ValueError`` (a ``CodecError``) for local
    message types (HUP/BEAT/CHECK_QUORUM) and for anything decode would refuse."""
    if not isinstance(m, Message):
        raise CodecError(f"encode_message: expected a Message, got {_kind(m)}")
    if isinstance(m.type, int) and m.type in LOCAL_MESSAGES:
        raise CodecError(f"message.type: {MessageType(m.type).name} is local, not a peer message")
    try:
        tree = _message_tree(m)
    except (AttributeError, TypeError) as exc:  # e.g. entries holding non-Entry values
        raise CodecError(f"message: malformed field ({exc})") from None
    _check_message(tree)
    return _pack(tree)


def decode_message(b: bytes | bytearray | memoryview) -> Message:
    """Decode a message; raises :class:`CodecError` (only) on any malformed input."""
    b = _as_buffer(b)
    tree = _unpack_small(b, MAX_ENTRIES) if len(b) <= FAST_DECODE_LIMIT else _walk(b, "message")
    _check_message(tree)
    return _build_message(tree)


def encode_entry(e: Entry) -> bytes:
    """Encode one log entry as ``[index, term, type, data]`` (for storage reuse)."""
    if not isinstance(e, Entry):
        raise CodecError(f"encode_entry: expected an Entry, got {_kind(e)}")
    tree = _entry_tree(e)
    _check_entry(tree, "entry")
    return _pack(tree)


def decode_entry(b: bytes | bytearray | memoryview) -> Entry:
    """Decode what :func:`encode_entry` produced; raises :class:`CodecError` only."""
    b = _as_buffer(b)
    tree = _unpack_small(b, 4)
    _check_entry(tree, "entry")
    return Entry(tree[0], tree[1], _ENTRY_TYPES[tree[2]], tree[3])


def encode_snapshot_meta(m: SnapshotMeta) -> bytes:
    """Encode snapshot metadata ``[index, term, ConfState]`` (for storage reuse)."""
    if not isinstance(m, SnapshotMeta) or not isinstance(m.conf, ConfState):
        raise CodecError(f"encode_snapshot_meta: expected a SnapshotMeta, got {_kind(m)}")
    tree = _meta_tree(m)
    _check_meta(tree, "meta")
    return _pack(tree)


def decode_snapshot_meta(b: bytes | bytearray | memoryview) -> SnapshotMeta:
    """Decode what :func:`encode_snapshot_meta` produced; raises :class:`CodecError` only."""
    b = _as_buffer(b)
    tree = _unpack_small(b, MAX_MEMBERS)
    _check_meta(tree, "meta")
    return _build_meta(tree)
