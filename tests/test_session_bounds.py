"""Client sessions cannot grow a node without bound.

A million one-shot client ids (each sends one command and is never heard from again),
applied straight into a :class:`Replica` (the in-process path every node applies
committed entries through): sessions and tombstones stay within their caps all along,
the survivors are exactly the most recently active clients, expiry costs O(expired),
and a replica restored from a snapshot midway evicts exactly the same ones.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from raft_core.statemachine import CommandError, Replica, encode_command
from raft_core.types import Entry, EntryType


class Null:
    """A state machine with no state: only the sessions are measured."""

    def apply(self, command: Any) -> Any:
        return command

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass

    def state_hash(self) -> str:
        return ""


def entry(i: int, client: str, seq: int = 1, ts_ms: int | None = None) -> Entry:
    ts = i if ts_ms is None else ts_ms
    return Entry(i, 1, EntryType.NORMAL, encode_command(1, client, seq, ts))


@pytest.mark.slow
def test_a_million_one_shot_clients_stay_within_the_caps() -> None:
    r = Replica(Null())  # the defaults a node runs with
    n = 1_000_000
    peak_sessions = peak_tombs = 0
    t0 = time.monotonic()
    for i in range(1, n + 1):
        # One command per millisecond of log time: ten minutes (the TTL) of clients
        # would be 600,000 sessions without the cap.
        r.apply(entry(i, f"client-{i}"))
        if i % 10_000 == 0:
            peak_sessions = max(peak_sessions, len(r.sessions))
            peak_tombs = max(peak_tombs, len(r.tombstones))
    took = time.monotonic() - t0
    assert peak_sessions == r.max_sessions and len(r.sessions) == r.max_sessions
    assert peak_tombs == r.max_tombstones and len(r.tombstones) == r.max_tombstones
    assert len(r._chains) <= 4096
    # The survivors are the most recently active clients, oldest first.
    assert next(iter(r.sessions)) == f"client-{n - r.max_sessions + 1}"
    assert list(r.tombstones)[-1] == f"client-{n - r.max_sessions}"
    print(f"1,000,000 one-shot clients applied in {took:.1f}s")


def test_caps_evict_deterministically_and_survive_a_snapshot() -> None:
    def make() -> Replica:
        return Replica(Null(), session_ttl_ms=1_000, max_sessions=100, max_tombstones=300)

    a = make()
    b: Replica | None = None
    for i in range(1, 5_001):
        # Mixed traffic: a few long-lived clients and many one-shot ones; time jumps now
        # and then so the TTL expiry runs too.
        client = f"steady-{i % 7}" if i % 3 == 0 else f"once-{i}"
        e = entry(i, client, seq=i, ts_ms=i * (50 if i % 500 else 900))
        res = a.apply(e)
        if b is not None:
            assert b.apply(e) == res
        if i == 2_500:
            b = make()
            b.restore(a.snapshot())
        assert len(a.sessions) <= 100 and len(a.tombstones) <= 300
    assert b is not None
    assert list(a.sessions) == list(b.sessions)
    assert a.tombstones == b.tombstones and list(a.tombstones) == list(b.tombstones)


def test_an_evicted_session_answers_a_retry_with_session_expired() -> None:
    r = Replica(Null(), max_sessions=2)
    r.apply(entry(1, "a", seq=5, ts_ms=1))
    r.apply(entry(2, "b", seq=1, ts_ms=2))
    r.apply(entry(3, "c", seq=1, ts_ms=3))  # evicts "a", the least recently active
    assert "a" not in r.sessions and r.tombstones["a"][0] == 5
    out = r.apply(entry(4, "a", seq=5, ts_ms=4))
    assert isinstance(out.error, CommandError) and out.error.code == "session_expired"
    # A new request of that client opens a fresh session above the old sequence.
    assert r.apply(entry(5, "a", seq=6, ts_ms=5)).error is None
