"""A small synchronous NATS client: just enough protocol for the JetStream API.

Why not ``nats-py`` (docs/design.md, "NATS JetStream"): the adapter is synchronous and
only ever sends one request and waits for its one reply (JetStream API calls, KV puts
and gets). The NATS client protocol for that is five verbs over a line-oriented socket
(INFO, CONNECT, SUB, PUB/HPUB, MSG/HMSG, PING/PONG); nats-py would add an asyncio loop
in a thread per adapter and a dependency for no capability we use.

One connection serves one request at a time (a lock); replies come to a per-connection
inbox wildcard subscription, matched by their reply subject.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..core.errors import NodeRequestError, Unreachable

CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 5.0
MAX_LINE = 64 * 1024


@dataclass
class Msg:
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # from an HMSG status line (503: no responders)

    def json(self) -> dict:
        try:
            doc = json.loads(self.data or b"{}")
        except ValueError:
            raise NodeRequestError(
                f"{self.subject}: the answer is not JSON: {self.data[:120]!r}", status=502
            ) from None
        return doc if isinstance(doc, dict) else {"value": doc}


def hostport(url: str) -> tuple[str, int]:
    """``nats://H:P`` (or ``H:P``) as (host, port)."""
    u = urlsplit(url if "://" in url else f"nats://{url}")
    return u.hostname or "127.0.0.1", u.port or 4222


def _headers_block(headers: dict[str, str]) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


def _parse_headers(block: bytes) -> tuple[int | None, dict[str, str]]:
    lines = block.decode(errors="replace").split("\r\n")
    status = None
    first = lines[0].split()
    if len(first) >= 2 and first[1].isdigit():
        status = int(first[1])
    out = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return status, out


class NatsConnection:
    """One client connection to one server (``nats://H:P``)."""

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.url = url
        host, port = hostport(url)
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise Unreachable(f"{url}: {e.strerror or e}", "check that nats-server runs") from None
        self._buf = b""
        self._lock = threading.Lock()
        self._inbox = f"_INBOX.{secrets.token_hex(8)}"
        self._n = 0
        try:
            info = self._read_line()
            if not info.startswith(b"INFO"):
                raise Unreachable(f"{url} is not a NATS server (it said {info[:40]!r})")
            connect: dict = {
                "verbose": False,
                "pedantic": False,
                "headers": True,
                "no_responders": True,
                "name": "raft-manager",
                "lang": "python",
                "version": "0",
                "protocol": 1,
            }
            if user is not None:
                connect.update(user=user, pass_=password)
                connect["pass"] = connect.pop("pass_")
            self._send(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
            self._expect_pong()
            self._send(f"SUB {self._inbox}.* 1\r\n".encode())
        except OSError as e:
            self.close()
            raise Unreachable(f"{url}: {e}", "check that nats-server runs") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- wire -----------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise OSError("connection closed by the server")
        self._buf += chunk

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise OSError("protocol line too long")
            self._fill()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n + 2 :]
        return data

    def _expect_pong(self) -> None:
        while True:
            line = self._read_line()
            if line.startswith(b"-ERR"):
                raise Unreachable(f"{self.url} refused the connection: {line[5:].decode()}")
            if line == b"PONG":
                return
            if line == b"PING":
                self._send(b"PONG\r\n")

    def _next_msg(self) -> Msg:
        while True:
            line = self._read_line()
            if line == b"PING":
                self._send(b"PONG\r\n")
                continue
            if line.startswith(b"-ERR"):
                raise NodeRequestError(f"{self.url}: {line[5:].decode()}", status=400)
            parts = line.decode().split()
            if not parts or parts[0] not in ("MSG", "HMSG"):
                continue  # +OK, PONG, INFO updates
            if parts[0] == "MSG":
                data = self._read_exact(int(parts[-1]))
                return Msg(parts[1], data)
            hlen, total = int(parts[-2]), int(parts[-1])
            raw = self._read_exact(total)
            status, headers = _parse_headers(raw[:hlen])
            return Msg(parts[1], raw[hlen:], headers, status)

    # -- requests ---------------------------------------------------------------------------

    def request(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> Msg:
        """Publish to ``subject`` and wait for the one reply; ``NodeRequestError`` 503
        when nothing listens, ``Unreachable`` on a timeout or a broken connection."""
        with self._lock:
            self._n += 1
            reply = f"{self._inbox}.{self._n}"
            if headers:
                hb = _headers_block(headers)
                head = f"HPUB {subject} {reply} {len(hb)} {len(hb) + len(payload)}\r\n"
                frame = head.encode() + hb + payload + b"\r\n"
            else:
                frame = f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n"
            deadline = time.monotonic() + timeout
            try:
                self._send(frame)
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self.sock.settimeout(left)
                    msg = self._next_msg()
                    if msg.subject == reply:
                        break
            except TimeoutError:
                raise Unreachable(
                    f"{self.url}: no answer to {subject} within {timeout:.1f}s",
                    "the server may be overloaded or without a JetStream leader; retry",
                ) from None
            except OSError as e:
                raise Unreachable(f"{self.url}: {e}", "check that nats-server runs") from None
        if msg.status == 503:
            raise NodeRequestError(
                f"no responders for {subject} (JetStream not ready or no leader for it)",
                status=503,
            )
        return msg

    def api(self, subject: str, body: dict | None = None, timeout: float = REQUEST_TIMEOUT) -> dict:
        """One JetStream API call: ``$JS.API.<subject>``; its error becomes a
        ``NodeRequestError`` carrying the API's code and description."""
        payload = json.dumps(body).encode() if body is not None else b""
        doc = self.request(f"$JS.API.{subject}", payload, timeout=timeout).json()
        err = doc.get("error")
        if isinstance(err, dict):
            raise NodeRequestError(
                f"JetStream {subject}: {err.get('description', err)} "
                f"(code {err.get('code')}, err_code {err.get('err_code')})",
                status=int(err.get("code") or 500),
            )
        return doc
