"""Fuzz the HTTP/1.1 request parser through a real connection object.

Inputs arrive split at random points; every byte the server writes back must be a
well-formed response with one of the statuses the parser is documented to give, and
nothing may raise. Long runs: ``python tests/fuzz_long.py http``.
"""

from __future__ import annotations

from fuzz_strategies import inputs
from fuzz_targets import TARGETS, check_http
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs(TARGETS["http"]), st.integers(0, 1000))
@example(b"GET / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n", 0)
@example(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxx", 0)
@example(b"PUT /v1/kv/%ff%fe HTTP/1.1\r\n\r\n", 0)
@example(b"\r\n" * 5000, 0)
def test_http_parser_fails_cleanly(data: bytes, splits: int) -> None:
    check_http(data, splits)
