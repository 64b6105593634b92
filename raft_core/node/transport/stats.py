"""The transport's counters (exported as metrics)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TransportStats:
    """Counters for metrics. ``*_messages``/``*_bytes`` are keyed by message type name;
    ``dropped`` by reason: ``queue_full``, ``fault``, ``unknown_peer``, ``bad_sender``,
    ``unencodable``, ``oversize``, ``spoofed``, ``misaddressed``, ``peer_removed``,
    ``closed``."""

    sent_messages: Counter[str] = field(default_factory=Counter)
    sent_bytes: Counter[str] = field(default_factory=Counter)
    received_messages: Counter[str] = field(default_factory=Counter)
    received_bytes: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    connect_attempts: int = 0
    connect_failures: int = 0
    connections_established: int = 0
    connections_accepted: int = 0
    auth_failures: int = 0
    protocol_errors: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A plain, JSON-friendly copy (totals included)."""
        out: dict[str, Any] = {}
        for name in ("sent_messages", "sent_bytes", "received_messages", "received_bytes"):
            c: Counter[str] = getattr(self, name)
            out[name] = dict(c)
            out[name + "_total"] = sum(c.values())
        out["dropped"] = dict(self.dropped)
        out["dropped_total"] = sum(self.dropped.values())
        for name in (
            "connect_attempts",
            "connect_failures",
            "connections_established",
            "connections_accepted",
            "auth_failures",
            "protocol_errors",
        ):
            out[name] = getattr(self, name)
        return out
