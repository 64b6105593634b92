"""A small client for etcd's v3 JSON gateway (``POST /v3/...`` on a member's client URL).

The gateway speaks gRPC messages as JSON, with three habits the rest of the code should
not have to know about:

- keys and values are base64 (``b64``/``unb64``);
- 64-bit integers (member IDs, revisions, raft indexes, terms, sizes) are JSON strings,
  and fields at their default value are left out (``isLearner: false`` is absent), so
  every read goes through ``num``/``flag`` with a default;
- errors are ``{"error", "message", "code"}`` with the gRPC code mapped to an HTTP
  status (9 FAILED_PRECONDITION -> 412, 14 UNAVAILABLE -> 503, ...).

Errors become the manager's exceptions (``Unreachable``, ``NodeRequestError`` with the
HTTP status and gRPC code) with a next step for the messages etcd is known to send.
With a username, the client gets a token from ``auth/authenticate`` on first use and
sends it in the ``Authorization`` header (etcd wants the bare token, no "Bearer"); a
rejected token is renewed once. The password and token are never put in a message.
TLS goes through ``clients.tls.ssl_context`` (CA and client certificate together).
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import httpx

from ..core.errors import NodeRequestError
from .http import exchange
from .tls import ssl_context

TIMEOUT = httpx.Timeout(3.0, connect=1.0)
STATUS_TIMEOUT = httpx.Timeout(1.5, connect=1.0)  # a frozen member must not stall status
LONG_TIMEOUT = httpx.Timeout(15.0, connect=1.0)

# gRPC codes whose outcome is unknown: the request may have been applied.
_INDETERMINATE_CODES = {1, 4, 14}  # CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE
_UNAUTHENTICATED = 16
_READS = ("maintenance/status", "kv/range")  # calls that cannot have changed anything

# What to do next for the messages etcd sends (substring -> next step).
_NEXT_STEPS = {
    "not leader": "send the request to the current leader (see `raft-manager status`)",
    "bad leader transferee": "name a started, reachable voter (not a learner) as the target",
    "in sync with leader": "wait until the learner has started and caught up, then promote",
    "can only promote a learner member": "only learners can be promoted",
    "not enough started members": "start the members already added before changing again",
    "unhealthy cluster": "recover the cluster's unreachable members before this change",
    "too many learner members": "promote or remove a learner first",
    "member not found": "check the member list with `raft-manager status`",
    "peerURL exists": "that peer URL is already a member's; pick another",
    "rpc not supported for learner": "learners serve no writes or linearizable reads",
    "no leader": "wait for an election (a quorum of voters must be up and connected)",
    "request timed out": "check `raft-manager status`; the request may or may not have applied",
    "authentication failed": "check username and password_env/password_file in clusters.yaml",
    "user name is empty": "set username and password_env/password_file in clusters.yaml",
    "invalid auth token": "check username and password_env/password_file in clusters.yaml",
    "permission denied": "the configured user lacks the role this needs",
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(data: str | None) -> str | None:
    if data is None:
        return None
    return base64.b64decode(data).decode(errors="replace")


def num(doc: dict, *names: str, default: int = 0) -> int:
    """An integer field that may be a JSON string, absent (default value), or spelled in
    snake_case or camelCase depending on the etcd version."""
    for n in names:
        if n in doc and doc[n] is not None:
            return int(doc[n])
    return default


def flag(doc: dict, name: str) -> bool:
    return bool(doc.get(name, False))


def hex_id(member_id: int) -> str:
    return f"{member_id:x}"


def base_url(endpoint: str, scheme: str) -> str:
    """``host:port`` or a full URL -> ``scheme://host:port`` (no trailing slash)."""
    if "://" in endpoint:
        return endpoint.rstrip("/")
    return f"{scheme}://{endpoint}"


class EtcdGateway:
    """POST JSON to ``/v3/<path>`` on one endpoint; thread-safe (one httpx client)."""

    def __init__(
        self,
        *,
        tls: Any = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.scheme = "https" if tls else "http"
        self._client = httpx.Client(timeout=TIMEOUT, verify=ssl_context(tls))
        self._username = username
        self._password = password
        self._token: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def user_spec(self) -> str | None:
        """``user:password`` for etcdctl's ETCDCTL_USER (an environment variable, not argv)."""
        return f"{self._username}:{self._password or ''}" if self._username else None

    def url(self, endpoint: str) -> str:
        return base_url(endpoint, self.scheme)

    def call(
        self,
        endpoint: str,
        path: str,
        body: dict | None = None,
        *,
        timeout: httpx.Timeout = TIMEOUT,
        who: str | None = None,
    ) -> dict:
        """POST ``body`` to ``endpoint``'s ``/v3/path``; the answer, or a manager error.

        ``who`` names the member in messages (its name, else the endpoint).
        """
        label = who or endpoint
        for attempt in range(2):
            headers = {}
            if self._username:
                headers["Authorization"] = self._auth_token(endpoint, label)
            r, doc = exchange(
                self._client,
                "POST",
                f"{self.url(endpoint)}/v3/{path}",
                member=f"{label} ({endpoint})",
                what=path,
                reads_only=path.startswith(_READS),
                node=who,
                json=body or {},
                headers=headers,
                timeout=timeout,
            )
            if r.status_code == 200:
                return doc
            code = doc.get("code")
            message = doc.get("message") or doc.get("error")
            message = message or r.reason_phrase or f"HTTP {r.status_code}"
            token_rejected = code == _UNAUTHENTICATED or "invalid auth token" in message
            if self._username and token_rejected and attempt == 0:
                with self._lock:
                    self._token = None  # expired or revoked: authenticate again, once
                continue
            raise gateway_error(label, path, r.status_code, code, message, who)
        raise AssertionError("unreachable")  # pragma: no cover

    def _auth_token(self, endpoint: str, label: str) -> str:
        with self._lock:
            if self._token is None:
                r, doc = exchange(
                    self._client,
                    "POST",
                    f"{self.url(endpoint)}/v3/auth/authenticate",
                    member=f"{label} ({endpoint})",
                    what="auth/authenticate",
                    reads_only=True,  # a token more changes nothing
                    node=None,
                    json={"name": self._username, "password": self._password or ""},
                )
                if r.status_code != 200 or not doc.get("token"):
                    raise gateway_error(
                        label,
                        "auth/authenticate",
                        r.status_code,
                        doc.get("code"),
                        doc.get("message") or "authentication failed",
                        None,
                    )
                self._token = doc["token"]
            return self._token


def gateway_error(
    label: str, path: str, status: int, code: int | None, message: str, who: str | None
) -> NodeRequestError:
    """The manager error for an etcd error answer, with a next step when one is known."""
    if status == 404:
        return NodeRequestError(
            f"{label}: the gateway does not serve /v3/{path} (HTTP 404)",
            "this etcd version's JSON gateway lacks that call",
            status=404,
            node=who,
        )
    text = message.removeprefix("etcdserver: ")
    next_step = next((s for k, s in _NEXT_STEPS.items() if k in message), None)
    if next_step is None and status == 401:
        next_step = "set username and password_env/password_file in clusters.yaml"
    return NodeRequestError(
        f"{label}: {text}",
        next_step,
        status=status,
        error=str(code) if code is not None else None,
        indeterminate=code in _INDETERMINATE_CODES
        and not path.startswith(_READS)
        and not any(k in message for k in ("no leader", "not leader", "unhealthy cluster")),
        node=who,
        body={"message": message, "code": code},
    )
