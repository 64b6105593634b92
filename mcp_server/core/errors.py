"""The manager's exceptions: every one says what went wrong and what to do next.

``Refused`` is a guardrail saying no (policy, quorum safety, a stale plan); the
operation was not attempted. ``ManagerError`` is an operation that was attempted and
failed (or could not start: the cluster is unreachable). ``InputError`` is a problem
with clusters.yaml or the command line. The CLI maps them to exit codes 1, 1 and 2;
the MCP server turns them into tool errors with the same text.
"""

from __future__ import annotations


class ManagerError(Exception):
    """An operation failed; ``reason`` says why, ``next_step`` what the operator can do."""

    code = "failed"
    exit_code = 1

    def __init__(
        self,
        reason: str,
        next_step: str | None = None,
        *,
        operation: str | None = None,
        reasons: list[str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.next_step = next_step
        self.operation = operation
        self.reasons = reasons or [reason]

    def __str__(self) -> str:
        text = self.reason
        if len(self.reasons) > 1:
            text += "".join(f"\n  - {r}" for r in self.reasons if r != self.reason)
        if self.next_step:
            text += f"\nnext: {self.next_step}"
        return text


class Refused(ManagerError):
    """A guardrail refused the request before anything was changed."""

    code = "refused"


class InputError(ManagerError):
    """clusters.yaml or the command line is wrong."""

    code = "config"
    exit_code = 2


class NodeRequestError(ManagerError):
    """A node answered an API call with an error (``status``/``error`` from the body)."""

    def __init__(
        self,
        reason: str,
        next_step: str | None = None,
        *,
        status: int | None = None,
        error: str | None = None,
        indeterminate: bool = False,
        node: str | None = None,
        body: dict | None = None,
        operation: str | None = None,
        reasons: list[str] | None = None,
    ) -> None:
        super().__init__(reason, next_step, operation=operation, reasons=reasons)
        self.body = body or {}
        self.status = status
        self.error = error
        self.indeterminate = indeterminate
        self.node = node


class Unreachable(ManagerError):
    """No member of the cluster (or not the one needed) answered."""

    code = "unreachable"


class NotSupported(ManagerError):
    """The cluster kind cannot do this (e.g. log digests on etcd)."""

    code = "not_supported"
