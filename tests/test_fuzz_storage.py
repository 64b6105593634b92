"""Fuzz the WAL reader and the snapshot file reader.

Inputs reach the payload decoders behind the CRCs (the mutator repairs checksums half
the time). A record or file with a valid checksum and a wrong shape must be refused
with the documented errors, never accepted with wrong types inside and never raising
something else. Long runs: ``python tests/fuzz_long.py wal|snapshot``.
"""

from __future__ import annotations

import struct
import zlib

import msgpack
from fuzz_strategies import inputs
from fuzz_targets import TARGETS, check_snapshot, check_wal
from hypothesis import HealthCheck, example, given, settings

from raft_core.node import wal


def record(rtype: wal.RecordType, obj: object) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return wal.frame(rtype, payload) + payload


def snapshot_file(meta: object, data: bytes = b"") -> bytes:
    m = msgpack.packb(meta, use_bin_type=True)
    body = struct.pack("<8sIIQ", b"RAFTSNAP", 1, len(m), len(data)) + m + data
    return body + struct.pack("<I", zlib.crc32(body))


HEADER = record(wal.RecordType.SEGMENT_HEADER, [1, 1, 1, [1, None, 0], None])
# Regressions found by the fuzzer (all CRC-valid):
# an entry whose data is an int, not bytes, was accepted and handed to the engine;
WAL_INT_DATA = HEADER + record(wal.RecordType.BATCH, [None, None, 1, [[1, 0, 0]]])
# a snapshot marker holding a float infinity raised OverflowError from int().
WAL_INF_SNAP = HEADER + record(wal.RecordType.BATCH, [None, [float("inf"), 1, False], 0, []])
WAL_INF_HEADER = record(wal.RecordType.SEGMENT_HEADER, [1, 1, 1, [1, None, 0], [1.5e308 * 10, 1]])
# A snapshot whose learners list holds an int was accepted as a ConfState;
SNAP_INT_LEARNER = snapshot_file({"index": 1, "term": 1, "conf": {"learners": [0]}})
# one whose conf is not a map raised AttributeError; one whose index is inf, OverflowError.
SNAP_CONF_INT = snapshot_file({"index": 1, "term": 1, "conf": 5})
SNAP_INF_INDEX = snapshot_file({"index": float("inf"), "term": 1, "conf": {}})
SNAP_LIST_META = snapshot_file([1, 2, 3])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs(TARGETS["wal"]))
@example(WAL_INT_DATA)
@example(WAL_INF_SNAP)
@example(WAL_INF_HEADER)
@example(b"\xff\xff\xff\xff" + b"\x00" * 5)  # a 4 GB record length
def test_wal_reader_fails_cleanly(data: bytes) -> None:
    check_wal(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs(TARGETS["snapshot"]))
@example(SNAP_INT_LEARNER)
@example(SNAP_CONF_INT)
@example(SNAP_INF_INDEX)
@example(SNAP_LIST_META)
def test_snapshot_reader_fails_cleanly(data: bytes) -> None:
    check_snapshot(data)
