"""Offline checkers for histories recorded by the simulator."""

from raft_core.checker.linearizability import (
    CheckResult,
    Operation,
    OpKind,
    Status,
    check_history,
    check_key,
)

__all__ = [
    "CheckResult",
    "OpKind",
    "Operation",
    "Status",
    "check_history",
    "check_key",
]
