"""The audit log: one JSON line per mutation, per plan and per refusal.

Each line: ``time`` (UTC, ISO 8601), ``cluster``, ``mode``, ``operation``,
``arguments`` (secrets redacted), ``plan_id``, ``outcome`` (``ok``, ``planned``,
``refused``, ``failed``), ``reason`` (for refused/failed), ``result`` (a short summary),
``user`` and ``pid``. Lines are appended with one ``write`` on an ``O_APPEND`` file, so
concurrent CLI invocations and the MCP server can share one log.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REDACTED = "[redacted]"
_SECRET_WORDS = ("token", "secret", "password", "passwd", "authorization", "credential")
_MAX_STR = 1000


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in _SECRET_WORDS) and not k.endswith(("_env", "_file"))


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of ``value`` with secret-looking keys and known secret strings removed."""
    known = [s for s in secrets if s]

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {
                str(k): (REDACTED if _is_secret_key(str(k)) else clean(x)) for k, x in v.items()
            }
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, str):
            for s in known:
                v = v.replace(s, REDACTED)
            return v if len(v) <= _MAX_STR else v[:_MAX_STR] + "..."
        if v is None or isinstance(v, bool | int | float):
            return v
        return clean(str(v))

    return clean(value)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    def __init__(self, path: Path | str, secrets: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.secrets = [s for s in secrets if s]

    def add_secret(self, secret: str | None) -> None:
        if secret:
            self.secrets.append(secret)

    def record(
        self,
        *,
        cluster: str,
        mode: str,
        operation: str,
        arguments: dict[str, Any],
        outcome: str,
        plan_id: str | None = None,
        reason: str | None = None,
        result: Any = None,
    ) -> dict:
        line = {
            "time": now_iso(),
            "cluster": cluster,
            "mode": mode,
            "operation": operation,
            "arguments": arguments,
            "plan_id": plan_id,
            "outcome": outcome,
            "reason": reason,
            "result": result,
            "user": current_user(),
            "pid": os.getpid(),
        }
        line = redact(line, self.secrets)
        data = (json.dumps(line, separators=(",", ":"), sort_keys=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return line

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
