"""Fuzz the peer byte stream: frame length prefixes, message and handshake decoding.

Every input must end in the documented errors (EOF, over-size frame, CodecError,
handshake protocol error), never another exception, and a huge length prefix must be
refused before anything is allocated for it. Long runs: ``python tests/fuzz_long.py peer``.
"""

from __future__ import annotations

import tracemalloc

from fuzz_strategies import inputs
from fuzz_targets import TARGETS, check_peer
from hypothesis import HealthCheck, example, given, settings

FOUR_GB_FRAME = b"\xff\xff\xff\xff" + b"x" * 16


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs(TARGETS["peer"]))
@example(FOUR_GB_FRAME)
@example(b"\x00\x00\x00\x05\xdd\xff\xff\xff\xff")  # a msgpack array claiming 4G items
@example(b"\x00\x00\x00\x06\xc6\xff\xff\xff\xff\x00")  # a bin claiming 4 GB
def test_peer_stream_fails_cleanly(data: bytes) -> None:
    check_peer(data)


def test_a_4gb_length_prefix_allocates_nothing_like_4gb() -> None:
    tracemalloc.start()
    try:
        check_peer(FOUR_GB_FRAME)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
