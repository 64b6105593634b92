"""Cluster adapters: one small interface, one implementation per cluster kind."""

from .base import ClusterAdapter, ConfResult, LogEntryDigest, LogSlice, NodeStatus, StateDigest

__all__ = [
    "ClusterAdapter",
    "ConfResult",
    "LogEntryDigest",
    "LogSlice",
    "NodeStatus",
    "StateDigest",
]
