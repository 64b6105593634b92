"""Wire codec: round trips, strictness, fuzzing, and the memory-safe large-input path."""

from __future__ import annotations

import contextlib
import tracemalloc

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from raft_core import codec
from raft_core.codec import (
    MAX_ENTRIES,
    MAX_NODE_ID_LEN,
    MAX_UINT,
    CodecError,
    decode_entry,
    decode_message,
    decode_snapshot_meta,
    encode_entry,
    encode_message,
    encode_snapshot_meta,
)
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

PEER_TYPES = [t for t in MessageType if t not in LOCAL_MESSAGES]

# ------------------------------------------------------------------------ strategies

node_ids = st.one_of(
    st.sampled_from(["n1", "n2", "node-3", "x" * MAX_NODE_ID_LEN]),
    # Any Unicode except lone surrogates (not representable in UTF-8).
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=MAX_NODE_ID_LEN),
)
uints = st.one_of(st.integers(0, 1000), st.integers(0, MAX_UINT), st.just(MAX_UINT))
small_bytes = st.binary(max_size=64)


@st.composite
def conf_states(draw):
    ids = st.frozensets(node_ids, max_size=5)
    return ConfState(
        voters=draw(ids),
        voters_outgoing=draw(ids),
        learners=draw(ids),
        auto_leave=draw(st.booleans()),
    )


@st.composite
def snapshot_metas(draw):
    return SnapshotMeta(index=draw(uints), term=draw(uints), conf=draw(conf_states()))


@st.composite
def chunks(draw):
    data = draw(small_bytes)
    offset = draw(st.integers(0, 10_000))
    done = draw(st.booleans())
    total = offset + len(data) + (0 if done else draw(st.integers(0, 10_000)))
    return SnapshotChunk(
        meta=draw(snapshot_metas()), offset=offset, total=total, data=data, done=done
    )


@st.composite
def app_entries(draw, index: int, log_term: int):
    n = draw(st.integers(0, 8))
    entries, term = [], log_term
    for i in range(n):
        term += draw(st.integers(0, 2))
        entries.append(
            Entry(
                index=index + 1 + i,
                term=term,
                type=draw(st.sampled_from(list(EntryType))),
                data=draw(small_bytes),
            )
        )
    return entries


ANY_PEER_TYPE = st.sampled_from(PEER_TYPES)
READ_TYPES = (MessageType.READ_INDEX, MessageType.READ_INDEX_RESP)


@st.composite
def messages(draw, types=ANY_PEER_TYPE):
    mtype = draw(types)
    index = draw(st.integers(0, 10**12))
    log_term = draw(st.integers(0, 10**6))
    return Message(
        type=mtype,
        to=draw(node_ids),
        frm=draw(node_ids),
        term=draw(uints),
        log_term=log_term,
        index=index,
        entries=draw(app_entries(index, log_term)) if mtype == MessageType.APP else [],
        commit=draw(uints),
        reject=draw(st.booleans()),
        reject_hint=draw(uints),
        context=draw(st.binary(min_size=1, max_size=64) if mtype in READ_TYPES else small_bytes),
        chunk=draw(chunks()) if mtype == MessageType.SNAP else None,
    )


# Arbitrary msgpack-representable values, used to corrupt fields of valid encodings.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=80),
    st.binary(max_size=80),
)
any_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
    ),
    max_leaves=10,
)


@contextlib.contextmanager
def streaming_decoder():
    """Force every decode through the streaming (large-input) path."""
    saved = codec.FAST_DECODE_LIMIT
    codec.FAST_DECODE_LIMIT = -1
    try:
        yield
    finally:
        codec.FAST_DECODE_LIMIT = saved


def decode_outcome(b: bytes) -> Message | type[CodecError]:
    """Decode with both paths; they must agree, and fail only with CodecError."""
    outcomes = []
    for ctx in (contextlib.nullcontext(), streaming_decoder()):
        with ctx:
            try:
                outcomes.append(decode_message(b))
            except CodecError as exc:
                # The fast validation path and the explaining path agree: every refusal
                # comes with a specific reason.
                assert str(exc) != "message: malformed"
                outcomes.append(CodecError)
    assert outcomes[0] == outcomes[1], outcomes
    m = outcomes[0]
    if isinstance(m, Message):
        # Anything the decoder accepts, the encoder accepts and reproduces...
        assert decode_message(encode_message(m)) == m
        # ...and the field-by-field rules accept it too.
        codec._diagnose_message(msgpack.unpackb(b, raw=False))
    return m


def sample_app(n: int = 3, size: int = 10) -> Message:
    return Message(
        MessageType.APP,
        to="b",
        frm="a",
        term=7,
        log_term=6,
        index=40,
        entries=[Entry(41 + i, 7, EntryType.NORMAL, bytes([i % 256]) * size) for i in range(n)],
        commit=39,
    )


def sample_snap() -> Message:
    conf = ConfState(
        voters=frozenset({"a", "b"}), voters_outgoing=frozenset({"a", "c"}), learners=frozenset()
    )
    meta = SnapshotMeta(index=100, term=4, conf=conf)
    return Message(
        MessageType.SNAP,
        to="b",
        frm="a",
        term=5,
        chunk=SnapshotChunk(meta=meta, offset=10, total=20, data=b"0123456789", done=True),
    )


def raw(m: Message) -> list:
    return msgpack.unpackb(encode_message(m), raw=False)


def pack(tree) -> bytes:
    return msgpack.packb(tree, use_bin_type=True)


# ------------------------------------------------------------------------ round trips


@settings(max_examples=400, deadline=None)
@given(messages())
def test_round_trip_every_peer_type(m: Message) -> None:
    b = encode_message(m)
    assert decode_outcome(b) == m
    with streaming_decoder():
        assert decode_message(b) == m


@pytest.mark.parametrize("mtype", PEER_TYPES, ids=lambda t: t.name)
def test_round_trip_each_type_explicitly(mtype: MessageType) -> None:
    @settings(max_examples=30, deadline=None)
    @given(messages(st.just(mtype)))
    def check(m: Message) -> None:
        out = decode_message(encode_message(m))
        assert out == m
        assert type(out.type) is MessageType and out.type == mtype
        assert all(type(e.type) is EntryType for e in out.entries)
        if out.chunk is not None:
            conf = out.chunk.meta.conf
            assert isinstance(conf.voters, frozenset) and isinstance(conf.learners, frozenset)

    check()


def test_wire_layout_is_positional_and_compact() -> None:
    hb = Message(MessageType.HEARTBEAT, to="n2", frm="n1", term=3, commit=9, context=b"rd")
    b = encode_message(hb)
    assert b[0] == 0x9C  # fixarray of 12: positional, no field names on the wire
    assert msgpack.unpackb(b, raw=False) == [16, "n2", "n1", 3, 0, 0, [], 9, False, 0, b"rd", None]
    assert len(b) <= 24
    assert raw(sample_app(1))[6] == [[41, 7, 0, b"\x00" * 10]]
    snap = raw(sample_snap())
    assert snap[11] == [[100, 4, [["a", "b"], ["a", "c"], [], False]], 10, 20, b"0123456789", True]
    # bytes are msgpack bin (0xc4..), not str
    assert b"\xc4\x02rd" in b


def test_entry_and_meta_helpers_round_trip() -> None:
    e = Entry(5, 2, EntryType.CONF_CHANGE, b"cc")
    assert decode_entry(encode_entry(e)) == e
    assert type(decode_entry(encode_entry(e)).type) is EntryType
    meta = sample_snap().chunk.meta
    assert decode_snapshot_meta(encode_snapshot_meta(meta)) == meta
    with pytest.raises(CodecError, match=r"entry\.term"):
        decode_entry(pack([1, -1, 0, b""]))
    with pytest.raises(CodecError, match=r"entry\.type"):
        decode_entry(pack([1, 1, 9, b""]))
    with pytest.raises(CodecError, match=r"trailing|msgpack"):
        decode_entry(encode_entry(e) + b"\x00")
    with pytest.raises(CodecError, match=r"meta\.conf\.voters"):
        decode_snapshot_meta(pack([1, 1, [["a", "a"], [], [], False]]))
    with pytest.raises(ValueError):
        encode_entry(Entry(-1, 0))


def test_large_app_round_trips_through_both_paths() -> None:
    m = sample_app(n=2000, size=1000)  # ~2 MB: above FAST_DECODE_LIMIT
    b = encode_message(m)
    assert len(b) > codec.FAST_DECODE_LIMIT
    assert decode_message(b) == m
    big = Message(
        MessageType.SNAP,
        to="b",
        frm="a",
        chunk=SnapshotChunk(
            SnapshotMeta(1, 1), offset=0, total=3 << 20, data=b"z" * (3 << 20), done=True
        ),
    )
    assert decode_message(encode_message(big)) == big


# ------------------------------------------------------------------------ encode refusals


@pytest.mark.parametrize("mtype", sorted(LOCAL_MESSAGES), ids=lambda t: t.name)
def test_local_messages_are_not_encodable(mtype: MessageType) -> None:
    with pytest.raises(ValueError, match="local"):
        encode_message(Message(mtype, to="a", frm="a"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(term=-1), "message.term"),
        (dict(term=True), "message.term"),
        (dict(term=2**63), "message.term"),
        (dict(index=1.5), "message.index"),
        (dict(to=""), "message.to"),
        (dict(frm="x" * 65), "message.frm"),
        (dict(to=7), "message.to"),
        (dict(reject=1), "message.reject"),
        (dict(context="text"), "message.context"),
        (dict(context=b"x" * (codec.MAX_CONTEXT_BYTES + 1)), "message.context"),
        (dict(entries=[Entry(42, 7)]), r"entries\[0\]\.index"),  # gap after index 40
        (dict(entries=[Entry(41, 5)]), r"entries\[0\]\.term"),  # below log_term 6
        (dict(entries=[Entry(41, 7), Entry(42, 6)]), r"entries\[1\]\.term"),
        (dict(entries=[Entry(41, 7, 5)]), r"entries\[0\]\.type"),  # type: ignore[arg-type]
        (dict(entries=["nope"]), "message"),
        (dict(chunk=sample_snap().chunk), "message.chunk"),
        (dict(type=99), "message.type"),
        (dict(type=MessageType.READ_INDEX, entries=[]), "message.context"),  # no tag
        (dict(type=MessageType.READ_INDEX_RESP, entries=[]), "message.context"),
        (dict(to="\ud800"), "encode"),
    ],
)
def test_encode_refuses_what_decode_would_refuse(change: dict, field: str) -> None:
    m = sample_app(0)
    for k, v in change.items():
        setattr(m, k, v)
    with pytest.raises(ValueError, match=field):
        encode_message(m)


def test_encode_refuses_bad_snapshots() -> None:
    m = sample_snap()
    m.chunk = None
    with pytest.raises(CodecError, match="requires a snapshot chunk"):
        encode_message(m)
    m = sample_snap()
    m.chunk.offset = 15  # 15 + 10 > total 20
    with pytest.raises(CodecError, match="exceeds total"):
        encode_message(m)
    m = sample_snap()
    m.chunk.total = 30  # done, but ends at 20
    with pytest.raises(CodecError, match="done chunk"):
        encode_message(m)
    m = sample_snap()
    m.chunk.meta.conf = ConfState(voters=frozenset({"a", 1}))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="conf"):
        encode_message(m)
    with pytest.raises(CodecError, match="entries"):
        encode_message(Message(MessageType.HEARTBEAT, "b", "a", entries=[Entry(1, 1)]))


# ------------------------------------------------------------------------ decode strictness


def _mutated(tree: list, path: tuple[int, ...], value) -> list:
    tree = msgpack.unpackb(pack(tree), raw=False)  # deep copy
    node = tree
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return tree


APP_TREE = raw(sample_app(2))
SNAP_TREE = raw(sample_snap())


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "msgpack"),
        (b"\xc1", "msgpack|expected an array"),  # never-used msgpack byte
        (b"\x9c", "msgpack"),  # truncated
        (encode_message(sample_app()) + b"\x00", "msgpack|trailing"),
        (pack({"type": 10}), "msgpack|message"),  # maps are refused outright
        (pack(APP_TREE[:11]), "expected 12 fields"),
        (pack([*APP_TREE, None]), "expected 12 fields"),
        (pack(_mutated(APP_TREE, (0,), 0)), "message.type: 0 is not a peer"),  # HUP
        (pack(_mutated(APP_TREE, (0,), 77)), "message.type: 77"),
        (pack(_mutated(APP_TREE, (0,), True)), "message.type"),
        (pack(_mutated(APP_TREE, (1,), "")), "message.to"),
        (pack(_mutated(APP_TREE, (2,), "y" * 65)), "message.frm"),
        (pack(_mutated(APP_TREE, (2,), b"a")), "message.frm"),
        (pack(_mutated(APP_TREE, (3,), -1)), "message.term"),
        (pack(_mutated(APP_TREE, (3,), 2**64 - 1)), "message.term"),
        (pack(_mutated(APP_TREE, (3,), 1.0)), "message.term"),
        (pack(_mutated(APP_TREE, (5,), -5)), "message.index"),
        (pack(_mutated(APP_TREE, (6,), None)), "message.entries"),
        (pack(_mutated(APP_TREE, (6, 0), [41, 7, 0])), r"entries\[0\]"),
        (pack(_mutated(APP_TREE, (6, 1, 0), 43)), r"entries\[1\]\.index"),
        (pack(_mutated(APP_TREE, (6, 1, 1), 1)), r"entries\[1\]\.term"),
        (pack(_mutated(APP_TREE, (6, 0, 2), 2)), r"entries\[0\]\.type: unknown entry type 2"),
        (pack(_mutated(APP_TREE, (6, 0, 3), "str")), r"entries\[0\]\.data"),
        (pack(_mutated(APP_TREE, (8,), 0)), "message.reject"),
        (pack(_mutated(APP_TREE, (10,), None)), "message.context"),
        (pack(_mutated(APP_TREE, (11,), SNAP_TREE[11])), "message.chunk"),
        (pack(_mutated(SNAP_TREE, (11,), None)), "message.chunk"),
        (pack(_mutated(SNAP_TREE, (6,), APP_TREE[6])), "message.entries: SNAP"),
        (pack(_mutated(SNAP_TREE, (11, 1), -1)), "chunk.offset"),
        (pack(_mutated(SNAP_TREE, (11, 2), 5)), "exceeds total"),
        (pack(_mutated(SNAP_TREE, (11, 4), 1)), "chunk.done"),
        (pack(_mutated(SNAP_TREE, (11, 0, 2, 0), ["a", ""])), r"chunk\.meta\.conf\.voters\[1\]"),
        (pack(_mutated(SNAP_TREE, (11, 0, 2, 2), ["b", "b"])), "duplicate"),
        (pack(_mutated(SNAP_TREE, (11, 0, 2, 3), None)), "auto_leave"),
        # absurd sizes: declared lengths far beyond the input or the limits
        (b"\x9c\x10\xa1b\xa1a" + b"\x00" * 3 + b"\xdd\xff\xff\xff\xff", "msgpack|entries"),
        (b"\xdd\x7f\xff\xff\xff", "msgpack|message"),
        (b"\x9c\x10\xa1b\xa1a\x00\x00\x00\x90\x00\xc2\x00\xc6\x7f\xff\xff\xff", "msgpack"),
    ],
)
def test_decode_rejects_with_a_message_naming_the_problem(data: bytes, field: str) -> None:
    for ctx in (contextlib.nullcontext(), streaming_decoder()):
        with ctx, pytest.raises(CodecError, match=field):
            decode_message(data)


@pytest.mark.parametrize("bad", [None, "text", 12, [1, 2]])
def test_decode_rejects_non_bytes(bad) -> None:
    with pytest.raises(CodecError, match="expected bytes"):
        decode_message(bad)  # type: ignore[arg-type]


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


def test_decode_accepts_buffers() -> None:
    b = encode_message(sample_app())
    assert decode_message(bytearray(b)) == decode_message(memoryview(b)) == sample_app()


def test_too_many_entries_refused() -> None:
    tree = _mutated(APP_TREE, (6,), [[41 + i, 7, 0, b""] for i in range(MAX_ENTRIES + 1)])
    for ctx in (contextlib.nullcontext(), streaming_decoder()):
        with ctx, pytest.raises(CodecError, match="entries"):
            decode_message(pack(tree))


def test_hostile_large_input_does_not_amplify_memory() -> None:
    # 8 MiB of one-byte empty arrays, in slots that hold scalars, each array within the
    # per-array limit: a one-shot unpack would materialise 8M lists (measured: ~500 MiB
    # peak). The streaming path used for large inputs refuses at the first container.
    k = 1 << 18
    inner = b"\xdd" + k.to_bytes(4, "big") + b"\x90" * k  # array32 of k empty arrays
    nested = b"\xdc" + (32).to_bytes(2, "big") + inner * 32  # 32 of those
    header = b"\x9c\x0a\xa1b\xa1a"  # [APP, "b", "a", ...
    hostile = [
        header + nested,  # in the term slot
        header + b"\x00\x00\x00" + b"\xdd" + k.to_bytes(4, "big") + b"\x90" * k * 32,  # entries
        header + b"\x00\x00\x00\x91\x94" + nested,  # inside an entry
    ]
    assert all(len(h) > codec.FAST_DECODE_LIMIT for h in hostile)
    tracemalloc.start()
    try:
        for data in hostile:
            with pytest.raises(CodecError):
                decode_message(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 << 20, peak


# ------------------------------------------------------------------------ fuzzing


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    decode_outcome(data)


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=1, max_size=40).map(lambda b: b"\x9c" + b))
def test_fuzz_random_bytes_behind_a_plausible_header(data: bytes) -> None:
    decode_outcome(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.data())
def test_fuzz_byte_mutations_of_valid_encodings(m: Message, data) -> None:
    b = bytearray(encode_message(m))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(len(b) - 1, 0)))
        if op == "flip" and b:
            b[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and b:
            b[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            b[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and b:
            del b[pos : pos + data.draw(st.integers(1, 4))]
        elif op == "truncate":
            del b[pos:]
    decode_outcome(bytes(b))


def _paths(tree, prefix=()):
    for i, v in enumerate(tree):
        yield (*prefix, i)
        if isinstance(v, list):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.data())
def test_fuzz_field_replacement(m: Message, data) -> None:
    tree = raw(m)
    path = data.draw(st.sampled_from(list(_paths(tree))))
    value = data.draw(any_values)
    try:
        b = msgpack.packb(_mutated(tree, path, value), use_bin_type=True)
    except (ValueError, OverflowError, TypeError):  # e.g. a lone surrogate
        assume(False)
    out = decode_outcome(b)
    if isinstance(out, Message):
        # Only type-preserving replacements can be accepted.
        assert type(value) not in (float, dict)
