"""Fuzz targets shared by the short suite runs (tests/test_fuzz_*.py, hypothesis) and the
long hand runs (``python tests/fuzz_long.py TARGET --inputs N``).

Each target is a function ``check(data: bytes) -> None`` that feeds one input to one
decoder and returns normally when the decoder either accepted the input or refused it
with its documented error. Anything else (another exception type, a hang, a huge
allocation) escapes as an exception or shows up in the runner's timing and memory
figures. Each target also has a ``seeds()`` corpus of valid inputs for mutation, and an
optional ``fixup`` that repairs checksums after a mutation, so mutated inputs get past
the CRC and reach the parser behind it.

Targets:

* ``peer``: the peer byte stream: ``_read_frame`` (4-byte length prefix, limit) and
  :func:`raft_core.codec.decode_message` for every frame, as an accepted connection
  reads it after the handshake; plus the handshake frame decoder.
* ``wal``: :func:`raft_core.node.wal.scan_records` and the record payload decoders.
* ``snapshot``: :func:`raft_core.node.snapfile.decode_snapshot`.
* ``http``: the HTTP/1.1 request parser, driven through a real server connection
  object with a fake transport, input split at random points.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from raft_core.codec import CodecError, decode_message, encode_message
from raft_core.node import http_server as hs
from raft_core.node import wal
from raft_core.node.http_server.connection import Connection
from raft_core.node.snapfile import decode_snapshot, encode_snapshot
from raft_core.node.transport import handshake as tp
from raft_core.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotChunk,
    SnapshotMeta,
)

# A peer frame limit small enough that the fuzzer reaches it, large enough for seeds.
PEER_MAX_FRAME = 1 << 16


@dataclass(frozen=True)
class Target:
    name: str
    check: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    fixup: Callable[[bytes], bytes] | None = None


# --------------------------------------------------------------------------- peer


def _peer_seeds() -> list[bytes]:
    conf = ConfState(voters=frozenset({"n1", "n2", "n3"}), learners=frozenset({"n4"}))
    msgs = [
        Message(MessageType.VOTE, "n2", "n1", term=3, log_term=2, index=7),
        Message(MessageType.HEARTBEAT, "n2", "n1", term=3, commit=5, context=b"rd-1"),
        Message(
            MessageType.APP,
            "n2",
            "n1",
            term=3,
            log_term=2,
            index=7,
            commit=7,
            entries=[
                Entry(8, 3, EntryType.NORMAL, b"hello"),
                Entry(9, 3, EntryType.CONF_CHANGE, b"\x93\x01\x02\x03"),
            ],
        ),
        Message(MessageType.APP_RESP, "n1", "n2", term=3, index=9, reject=True, reject_hint=4),
        Message(MessageType.READ_INDEX, "n2", "n1", term=3, context=b"n2:7f3a:12"),
        Message(MessageType.READ_INDEX_RESP, "n2", "n1", term=3, index=9, context=b"n1:9c:4"),
        Message(
            MessageType.SNAP,
            "n2",
            "n1",
            term=3,
            chunk=SnapshotChunk(SnapshotMeta(10, 3, conf), 0, 6, b"abcdef", True),
        ),
    ]
    frames = [tp.frame(encode_message(m)) for m in msgs]
    hello = msgpack.packb([1, 1, None, "n1", "n2", b"\x00" * 32], use_bin_type=True)
    return [*frames, b"".join(frames), tp.frame(hello)]


class _Chan:
    """A reused event loop: creating one per input would dominate the run time."""

    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        if cls.loop is None:
            cls.loop = asyncio.new_event_loop()
        return cls.loop


async def _read_stream(data: bytes) -> None:
    reader = asyncio.StreamReader(limit=tp.STREAM_LIMIT)
    reader.feed_data(data)
    reader.feed_eof()
    while True:
        try:
            payload = await tp.read_frame(reader, PEER_MAX_FRAME)
        except (asyncio.IncompleteReadError, tp.ProtocolError):
            return
        with contextlib.suppress(CodecError):
            decode_message(payload)
        with contextlib.suppress(tp.ProtocolError, tp.HandshakeError):
            tp.unpack_handshake(payload, tp.HELLO, tp.HELLO_SHAPE)


def check_peer(data: bytes) -> None:
    _Chan.get().run_until_complete(_read_stream(data))


# --------------------------------------------------------------------------- WAL


def _wal_seeds() -> list[bytes]:
    header = wal.encode_header(wal.SegmentHeader(1, 1, HardState(2, "n1", 3), (0, 0)))
    batch = wal.encode_batch(
        HardState(3, "n2", 4),
        (5, 2, False),
        [Entry(1, 2, EntryType.NORMAL, b"x" * 10), Entry(2, 3, EntryType.CONF_CHANGE, b"")],
    )
    recs = [
        wal.frame(wal.RecordType.SEGMENT_HEADER, header) + header,
        wal.frame(wal.RecordType.BATCH, batch) + batch,
    ]
    empty = wal.encode_batch(None, None, [])
    recs.append(wal.frame(wal.RecordType.BATCH, empty) + empty)
    return [b"".join(recs), recs[0], recs[1] + recs[2]]


def _wal_fixup(data: bytes) -> bytes:
    """Rewrite each record header's CRC (and clamp its length) so payload decoders run."""
    out = bytearray(data)
    off = 0
    while off + wal.REC_HEADER_SIZE <= len(out):
        length, _crc, rtype = wal.REC_HEADER.unpack_from(out, off)
        length = max(1, min(length, len(out) - off - 8))
        body = bytes(out[off + wal.REC_HEADER_SIZE : off + 8 + length])
        crc = zlib.crc32(body, zlib.crc32(bytes([rtype])))
        wal.REC_HEADER.pack_into(out, off, length, crc, rtype)
        off += 8 + length
    return bytes(out)


_WAL_ERRORS = (ValueError, TypeError, KeyError, msgpack.UnpackException)


def check_wal(data: bytes) -> None:
    records, bad = wal.scan_records(data)
    if bad is not None:
        wal.describe_bad_record(data, bad)
        wal.find_valid_record(data, bad + 1)
    for _off, rtype, payload in records:
        decode = wal.decode_header if rtype == wal.RecordType.SEGMENT_HEADER else wal.decode_batch
        try:
            out = decode(payload)
        except _WAL_ERRORS:
            continue
        if isinstance(out, wal.Batch):
            for e in out.entries:
                assert type(e.term) is int and type(e.data) is bytes, e


# --------------------------------------------------------------------------- snapshot


def _snap_seeds() -> list[bytes]:
    conf = ConfState(voters=frozenset({"n1", "n2"}), learners=frozenset({"n3"}), auto_leave=True)
    return [
        encode_snapshot(Snapshot(SnapshotMeta(12, 3, conf), b"state" * 5)),
        encode_snapshot(Snapshot(SnapshotMeta(0, 0, ConfState()), b"")),
    ]


_SNAP_HEAD = struct.Struct("<8sIIQ")


def _snap_fixup(data: bytes) -> bytes:
    """Make the header's lengths match the input and recompute the trailing CRC."""
    if len(data) < _SNAP_HEAD.size + 4:
        return data
    magic, version, meta_len, _ = _SNAP_HEAD.unpack_from(data, 0)
    rest = len(data) - _SNAP_HEAD.size - 4
    meta_len = min(meta_len, rest)
    head = _SNAP_HEAD.pack(magic, version, meta_len, rest - meta_len)
    body = head + data[_SNAP_HEAD.size : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def check_snapshot(data: bytes) -> None:
    try:
        snap = decode_snapshot(data, "fuzz input")
    except wal.StorageCorruption:
        return
    meta = snap.meta
    assert type(meta.index) is int and type(meta.term) is int, meta
    assert isinstance(meta.conf, ConfState), meta
    for ids in (meta.conf.voters, meta.conf.voters_outgoing, meta.conf.learners):
        assert all(type(i) is str for i in ids), meta


# --------------------------------------------------------------------------- HTTP


def _http_seeds() -> list[bytes]:
    return [
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
        b'PUT /v1/kv/a%2Fb HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{"value":"1"}',
        b"GET /v1/kv/k?consistency=stale HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        b"GET /v1/status HTTP/1.1\r\n\r\n",
        b"POST /v1/kv/k/cas HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        b"GET http://h/v1/status HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n",
    ]


class _FakeTransport(asyncio.Transport):
    """Collects what the server writes; enough of the Transport API for a connection."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


class _HTTP:
    server: hs.HTTPServer | None = None

    @classmethod
    def get(cls) -> hs.HTTPServer:
        if cls.server is None:
            router = hs.Router(auth=hs.bearer_auth("t"))

            async def echo(req: hs.Request) -> hs.Response:
                if req.body:
                    req.json()
                return hs.json_response(200, {"path": req.path, "params": req.path_params})

            router.add("GET", "/v1/status", echo, public=True)
            for method in ("GET", "PUT", "DELETE"):
                router.add(method, "/v1/kv/{key}", echo)
            router.add("POST", "/v1/kv/{key}/cas", echo)
            cls.server = hs.HTTPServer(
                router,
                _Chan.get(),
                max_body=4096,
                max_header=1024,
                idle_timeout=0,
            )
        return cls.server


def check_http(data: bytes, splits: int | None = None) -> None:
    """Feed ``data`` in pieces; every response the server writes must be well formed."""
    server = _HTTP.get()
    loop = _Chan.get()
    conn = Connection(server)
    t = _FakeTransport()
    conn.connection_made(t)
    rng = random.Random(len(data) if splits is None else splits)
    pos = 0
    while pos < len(data) and not t.closed:
        step = rng.randint(1, max(1, len(data) - pos))
        conn.data_received(data[pos : pos + step])
        pos += step
        loop.run_until_complete(asyncio.sleep(0))
    conn.eof_received()
    for _ in range(3):
        loop.run_until_complete(asyncio.sleep(0))
    conn.connection_lost(None)
    for chunk in t.out:
        assert chunk.startswith(b"HTTP/1.1 "), chunk[:80]
        status = int(chunk[9:12])
        assert status == 100 or status in (200, 400, 401, 404, 405, 411, 413, 431, 505), chunk


TARGETS: dict[str, Target] = {
    "peer": Target("peer", check_peer, _peer_seeds),
    "wal": Target("wal", check_wal, _wal_seeds, _wal_fixup),
    "snapshot": Target("snapshot", check_snapshot, _snap_seeds, _snap_fixup),
    "http": Target("http", check_http, _http_seeds),
}


# --------------------------------------------------------------------------- mutation

_INTERESTING = [
    b"\x00",
    b"\xff",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"\xc0",
    b"\xdd\xff\xff\xff\xff",  # msgpack array32 of 4G items
    b"\xc6\xff\xff\xff\xff",  # msgpack bin32 of 4 GB
    b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00",  # msgpack float64 +inf
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # uint64 max
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b" ",
    b":",
    b"%",
    b"%ff",
    b"Content-Length: 99999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"\x80\xa1",
]


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """A few random edits: bit flips, byte sets, inserts/deletes, splices, magic values."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and buf:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 4:
            buf[pos:pos] = rng.choice(_INTERESTING)
        elif op == 5 and buf:
            magic = rng.choice(_INTERESTING)
            buf[pos : pos + len(magic)] = magic
        elif op == 6:
            other = rng.choice(corpus)
            a = rng.randint(0, len(other))
            buf[pos:pos] = other[a : a + rng.randint(1, 64)]
        else:
            buf = buf[:pos]
    return bytes(buf)


def generate(target: Target, rng: random.Random, corpus: list[bytes]) -> bytes:
    """One input: mostly mutated seeds (half with checksums repaired), some pure noise."""
    r = rng.random()
    if r < 0.1:
        return rng.randbytes(rng.randint(0, 256))
    data = mutate(rng.choice(corpus), rng, corpus)
    if target.fixup is not None and r < 0.6:
        data = target.fixup(data)
    return data
