"""Errors RaftNode raises to its callers, each with a code the API maps to HTTP.

Callers decide on ``code`` (an enum), never on the message text.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    NOT_LEADER = "not_leader"  # ask the leader named in ``extra``
    UNAVAILABLE = "unavailable"  # no quorum, overloaded, timed out, shutting down
    CONFLICT = "conflict"  # refused in the current state (e.g. a change in flight)
    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    INTERNAL = "internal"


class NodeError(Exception):
    code = ErrorCode.INTERNAL

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotLeader(NodeError):
    code = ErrorCode.NOT_LEADER


class Unavailable(NodeError):
    """No quorum, overloaded, or timed out; ``indeterminate`` if it may still commit."""

    code = ErrorCode.UNAVAILABLE


class Conflict(NodeError):
    code = ErrorCode.CONFLICT


class BadRequest(NodeError):
    code = ErrorCode.BAD_REQUEST


class Forbidden(NodeError):
    code = ErrorCode.FORBIDDEN
