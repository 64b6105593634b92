"""A lean HTTP/1.1 server for the node's client API.

Why not starlette/uvicorn: on this project's reference machine a plain ``asyncio.Protocol``
server does ~3x the requests per second of starlette+uvicorn at one client and ~6x at 64,
and the node's hot path (small JSON ``PUT``/``GET``) is exactly where that matters.

Scope, deliberately small:

* HTTP/1.1 and HTTP/1.0 over TCP, or TLS (``ssl_context``); keep-alive by default on
  1.1, on 1.0 only when the client asks for it; ``Connection: close`` honoured.
* One request at a time per connection. Pipelined requests are buffered and answered in
  order. Different connections run concurrently: a coroutine handler runs in its own
  task; a handler that returns a :class:`Deferred` is answered from a callback.
* Request bodies only with ``Content-Length``. Any ``Transfer-Encoding`` (chunked or other)
  is answered with **411** ``{"error":"length_required"}`` and the connection is closed,
  because without framing the rest of the stream cannot be parsed. ``Expect: 100-continue``
  is honoured (curl sends it for larger bodies).
* Malformed request line or headers: 400 and close. Request head (request line + headers)
  over ``max_header``: 431 and close. ``Content-Length`` over ``max_body``: 413 and close,
  without reading the body. These "error and close" responses half-close the socket and
  discard input for a short while (lingering close) so the client reads the error rather
  than a connection reset.
* Errors are JSON: ``{"error": code, "message": ..., **extra}`` -- see :class:`HTTPError`.
  A handler raising anything else gives 500 ``{"error":"internal"}``, logged with
  traceback, and the connection stays usable.
* Routing: literal segments match verbatim; a ``{name}`` segment matches one non-empty
  path segment and is percent-decoded (strict UTF-8, so ``%2F`` yields ``/`` inside the
  parameter and invalid UTF-8 gives 400). Static routes are a dict lookup. No trailing
  slash folding: ``/v1/status/`` is not ``/v1/status``.
* Optional auth hook on the :class:`Router`, with per-route exemption (``public=True``);
  :func:`bearer_auth` builds the usual ``Authorization: Bearer TOKEN`` check with
  :func:`hmac.compare_digest`. Unknown paths give 404/405 before auth is checked: the
  route table of this open API is no secret.
* A handler whose client disconnects is *not* cancelled (a proposed write cannot be taken
  back anyway); its response is dropped. :meth:`HTTPServer.wait_closed` cancels whatever
  is still running after its grace period.
* Limits that hold under abuse (all configurable, see :func:`start_server`; one periodic
  sweep per server enforces the deadlines, not a timer per request):

  - **request head deadline** (``head_timeout``, default 10 s): a request head must be
    complete this long after its first byte arrived (for a new connection: after it was
    accepted). Bytes trickling in do not extend it (slowloris). Expired: **408**
    ``{"error":"request_timeout"}`` if part of a head was received, then close.
  - **body deadline** (``body_timeout``, default 30 s): the body must be complete this
    long after its head. Expired: 408 and close.
  - **idle keep-alive deadline** (``idle_timeout``, default 60 s): a connection with
    nothing in flight between requests is closed silently. A client that stops reading
    responses (our writes back up) or a closing connection that cannot flush is aborted
    after the same time.
  - **connection cap** (``max_connections``, default 1000): at the cap, a new connection
    makes room by closing the oldest connection that is still sending a request head or
    body (or sent nothing yet), else the oldest idle keep-alive connection (closed
    gracefully, so a client's pool sees EOF, not a reset); if every connection is
    running a handler, the new one is answered **503** ``{"error":"too_many_connections"}``
    and closed. So a flood of stalled connections can neither lock out a client that
    sends its request nor push out established clients' idle connections.
  - a handler's run time is not limited here (the node has its own request timeout).
* No ``Date``/``Server`` headers: the node's clients do not need them and they cost time.
  ``HEAD`` is not derived from ``GET`` (register it if wanted; otherwise 405).
* Not handled: per-client (per-IP) fairness (one client may use every connection slot),
  and TLS session resumption tuning (TLS is the standard library's ``ssl``; pass an
  ``ssl.SSLContext`` to :func:`start_server`; the handshake counts against the head
  deadline).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEAD_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEADER",
    "AuthHook",
    "Deferred",
    "HTTPError",
    "HTTPServer",
    "Handler",
    "Request",
    "Response",
    "Router",
    "bearer_auth",
    "json_response",
    "start_server",
    "text_response",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
DEFAULT_MAX_HEADER = 16 << 10  # 16 KiB
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_HEAD_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 1000
# After an "error and close" response, keep discarding input this long before closing.
LINGER_S = 2.0


def _make_dumps() -> Callable[[Any], str]:
    """``json.dumps(obj, separators=(",", ":"))``, ~3x cheaper for small objects.

    ``json.dumps`` with non-default arguments builds a JSONEncoder *and* a C encoder per
    call; here the C encoder is built once. No circular-reference check (``markers=None``):
    a cycle raises RecursionError instead of ValueError. Falls back to the public API if
    the private constructor ever changes shape.
    """
    encoder = json.JSONEncoder(separators=(",", ":"))
    slow = encoder.encode
    try:
        from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]

        c_enc = c_make_encoder(
            None, encoder.default, encode_basestring_ascii, None, ":", ",", False, False, True
        )
        probe = {"a": [1, 2.5, None, True, "\u00e9"], "b": {}}
        if "".join(c_enc(probe, 0)) != slow(probe):
            return slow
    except Exception:  # pragma: no cover - non-CPython or changed internals
        return slow

    def dumps(obj: Any) -> str:
        return "".join(c_enc(obj, 0))

    return dumps


_dumps = _make_dumps()
_decode_json = json.JSONDecoder().decode


# --------------------------------------------------------------------------- public types


class HTTPError(Exception):
    """An error with an HTTP status, rendered as ``{"error": code, "message": message, **extra}``.

    ``headers`` are added to the response (e.g. ``WWW-Authenticate`` on 401).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str = "",
        extra: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra) if extra else None
        self.headers = dict(headers) if headers else None

    def to_response(self) -> Response:
        obj: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.extra:
            obj.update(self.extra)
        return json_response(self.status, obj, headers=self.headers)


class Request:
    """One parsed request. ``headers`` keys are lower-case; repeated headers are joined
    with ``", "``. ``path`` is percent-decoded and excludes the query; ``raw_path`` is
    as sent. ``query`` keeps the last value of a repeated key."""

    __slots__ = (
        "_json",
        "body",
        "headers",
        "method",
        "path",
        "path_params",
        "query",
        "query_string",
        "raw_path",
        "remote",
    )

    def __init__(
        self,
        method: str,
        raw_path: str,
        query_string: str,
        headers: dict[str, str],
        body: bytes,
        remote: Any = None,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = unquote(raw_path) if "%" in raw_path else raw_path
        self.query_string = query_string
        self.query: dict[str, str] = (
            dict(parse_qsl(query_string, keep_blank_values=True)) if query_string else {}
        )
        self.headers = headers
        self.body = body
        self.path_params: dict[str, str] = {}
        self.remote = remote
        self._json: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; 400 ``bad_request`` if it is not one."""
        if self._json is None:
            try:
                # RFC 8259: JSON on the wire is UTF-8. Decoding first skips json.loads's
                # encoding detection, which costs more than the parse for small bodies.
                obj = _decode_json(self.body.decode())
            except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
                raise HTTPError(400, "bad_request", f"malformed JSON body: {e}") from None
            if not isinstance(obj, dict):
                raise HTTPError(400, "bad_request", "JSON body must be an object")
            self._json = obj
        return self._json

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.raw_path}>"


class Response:
    """A complete response. ``content_type=None`` omits the header; ``headers`` are extra
    headers (must not contain CR/LF; ``Content-Length``/``Connection`` are set by the server).
    """

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)}B>"


def json_response(status: int, obj: Any, *, headers: Mapping[str, str] | None = None) -> Response:
    """Compact JSON (``separators=(",", ":")``, ASCII-escaped) response."""
    return Response(status, _dumps(obj).encode(), "application/json", headers)


def text_response(
    status: int,
    text: str,
    *,
    content_type: str = "text/plain; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(status, text.encode(), content_type, headers)


class Deferred:
    """A response that follows once ``future`` is done, made by ``finish(future)``.

    What a hot-path handler returns instead of being a coroutine: the connection
    answers from the future's done-callback, so a request costs no task and no
    coroutine frames (on uvloop, a task awaiting a future through three coroutine
    frames cost about 13 us per request in a micro-benchmark, a done-callback about
    1 us). ``finish`` may raise HTTPError, like a handler.
    """

    __slots__ = ("finish", "future")

    def __init__(
        self, future: asyncio.Future[Any], finish: Callable[[asyncio.Future[Any]], Response]
    ) -> None:
        self.future = future
        self.finish = finish


# A coroutine function (the handler runs in a task of its own), or a plain function
# returning a Response (answered at once) or a Deferred (answered from a callback).
Handler = Callable[[Request], Awaitable[Response] | Deferred | Response]
# Returns True to let the request through, False for 401; may raise HTTPError (e.g. 403).
AuthHook = Callable[[Request], bool]


def bearer_auth(token: str) -> AuthHook:
    """An auth hook accepting ``Authorization: Bearer <token>`` (scheme case-insensitive),
    compared in constant time."""
    if not token:
        raise ValueError("empty bearer token")
    expected = token.encode()

    def check(request: Request) -> bool:
        value = request.headers.get("authorization")
        if not value:
            return False
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Header values were decoded as latin-1: encoding back gives the bytes as sent.
        return hmac.compare_digest(given.strip(" \t").encode("latin-1"), expected)

    return check


def _unauthorized() -> HTTPError:
    return HTTPError(
        401,
        "unauthorized",
        "missing or invalid bearer token",
        headers={"WWW-Authenticate": "Bearer"},
    )


# --------------------------------------------------------------------------- routing

_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Route:
    __slots__ = ("literals", "methods", "params", "pattern", "prefix")

    def __init__(
        self,
        pattern: str,
        literals: tuple[tuple[int, str], ...],
        params: tuple[tuple[int, str], ...],
    ) -> None:
        self.pattern = pattern
        self.params = params
        self.methods: dict[str, tuple[Handler, bool]] = {}
        # Literal segments before the first parameter are checked with one startswith();
        # only those after it need a per-segment comparison.
        first = params[0][0] if params else len(pattern.split("/"))
        self.prefix = "/".join(pattern.split("/")[:first]) + "/"
        self.literals = tuple((i, lit) for i, lit in literals if i > first)


def _decode_param(seg: str) -> str:
    try:
        return unquote(seg, errors="strict")
    except UnicodeDecodeError:
        raise HTTPError(400, "bad_request", "path segment is not valid UTF-8") from None


class Router:
    """Method + path-pattern dispatch. ``auth`` (if given) guards every route not added
    with ``public=True``."""

    def __init__(self, *, auth: AuthHook | None = None) -> None:
        self.auth = auth
        self._static: dict[str, _Route] = {}
        self._dynamic: dict[int, list[_Route]] = {}
        self._by_pattern: dict[str, _Route] = {}

    def add(self, method: str, pattern: str, handler: Handler, *, public: bool = False) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"pattern must start with '/': {pattern!r}")
        method = method.upper()
        route = self._by_pattern.get(pattern)
        if route is None:
            segs = pattern.split("/")
            literals: list[tuple[int, str]] = []
            params: list[tuple[int, str]] = []
            for i, seg in enumerate(segs):
                m = _PARAM_RE.fullmatch(seg)
                if m:
                    if any(name == m.group(1) for _, name in params):
                        raise ValueError(f"duplicate parameter in {pattern!r}")
                    params.append((i, m.group(1)))
                elif "{" in seg or "}" in seg:
                    raise ValueError(f"bad segment {seg!r} in {pattern!r}")
                elif i:
                    literals.append((i, seg))
            route = _Route(pattern, tuple(literals), tuple(params))
            self._by_pattern[pattern] = route
            if params:
                self._dynamic.setdefault(len(segs), []).append(route)
            else:
                self._static[pattern] = route
        if method in route.methods:
            raise ValueError(f"duplicate route {method} {pattern}")
        route.methods[method] = (handler, public)

    def route(
        self, method: str, pattern: str, *, public: bool = False
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def deco(handler: Handler) -> Handler:
            self.add(method, pattern, handler, public=public)
            return handler

        return deco

    def resolve(self, method: str, raw_path: str) -> tuple[Handler, bool, dict[str, str]]:
        """``(handler, public, path_params)``; raises 404/405 (or 400 for a bad escape)."""
        allowed: list[str] = []
        route = self._static.get(raw_path)
        if route is not None:
            hit = route.methods.get(method)
            if hit is not None:
                return hit[0], hit[1], {}
            allowed.extend(route.methods)
        candidates = self._dynamic.get(raw_path.count("/") + 1)
        if candidates:
            segs: list[str] | None = None
            for route in candidates:
                if not raw_path.startswith(route.prefix):
                    continue
                if segs is None:
                    segs = raw_path.split("/")
                if not _matches(route, segs):
                    continue
                hit = route.methods.get(method)
                if hit is None:
                    allowed.extend(route.methods)
                    continue
                params = {}
                for i, name in route.params:
                    seg = segs[i]
                    params[name] = _decode_param(seg) if "%" in seg else seg
                return hit[0], hit[1], params
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise HTTPError(
                405,
                "method_not_allowed",
                f"method {method} not allowed here; allowed: {allow}",
                headers={"Allow": allow},
            )
        raise HTTPError(404, "not_found", f"no route for {unquote(raw_path)}")


def _matches(route: _Route, segs: list[str]) -> bool:
    for i, lit in route.literals:
        if segs[i] != lit:
            return False
    for i, _ in route.params:  # noqa: SIM110 - a loop beats all(<genexpr>) here
        if not segs[i]:
            return False
    return True


# --------------------------------------------------------------------------- wire format

_STATUS_LINES: dict[int, bytes] = {
    int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus
}
_CT_HEADERS: dict[str, bytes] = {}
_CONN_KEEP = b""  # HTTP/1.1 default
_CONN_KEEP_10 = b"Connection: keep-alive\r\n"
_CONN_CLOSE = b"Connection: close\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_KNOWN_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"})
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"bad status {status}")
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} Unknown\r\n".encode()
    return line


def _header_line(name: str, value: str) -> bytes:
    line = f"{name}: {value}"
    if "\r" in line or "\n" in line:
        raise ValueError(f"CR/LF in response header {name!r}")
    return line.encode("latin-1") + b"\r\n"


def _encode(resp: Response, conn: bytes) -> bytes:
    body = resp.body
    status = resp.status
    ct = resp.content_type
    if resp.headers is None and ct == "application/json":  # the hot path
        return b"%sContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
            _STATUS_LINES.get(status) or _status_line(status),
            len(body),
            conn,
            body,
        )
    parts = [_status_line(status)]
    if ct is not None:
        cth = _CT_HEADERS.get(ct)
        if cth is None:
            cth = _CT_HEADERS[ct] = _header_line("Content-Type", ct)
        parts.append(cth)
    if resp.headers:
        parts.extend(_header_line(k, v) for k, v in resp.headers.items())
    if status >= 200 and status not in (204, 304):
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(conn)
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


class _Head:
    """A parsed request head waiting for (or with) its body."""

    __slots__ = (
        "body_start",
        "clen",
        "conn",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "target",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        clen: int,
        body_start: int,
        keep_alive: bool,
        conn: bytes,
        expect_continue: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.clen = clen
        self.body_start = body_start
        self.keep_alive = keep_alive
        self.conn = conn
        self.expect_continue = expect_continue


def _bad(message: str) -> HTTPError:
    return HTTPError(400, "bad_request", message)


def _parse_head(buf: bytes | bytearray, end: int) -> _Head:
    """Parse ``buf[:end]`` (request line + headers, no final blank line)."""
    text = buf[:end].decode("latin-1")
    lines = text.split("\r\n")
    n = len(lines) - 1
    # A bare CR or LF anywhere is a framing ambiguity (request smuggling): reject.
    if text.count("\n") != n or text.count("\r") != n:
        raise _bad("bare CR or LF in request head")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _bad("malformed request line") from None
    if method not in _KNOWN_METHODS and not _TOKEN_RE.fullmatch(method):
        raise _bad("malformed request method")
    if version == "HTTP/1.1":
        http11 = True
    elif version == "HTTP/1.0":
        http11 = False
    elif len(version) == 8 and version.startswith("HTTP/") and version[5:8:2].isdigit():
        raise HTTPError(505, "http_version_not_supported", f"{version} not supported")
    else:
        raise _bad("malformed HTTP version")
    if target[:1] != "/":
        target = _origin_form(target)
    if not target.isascii():
        try:
            target = target.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("request target is not valid UTF-8") from None

    # Obsolete line folding, an empty name, whitespace before the colon: all 400 (RFC 9112
    # 5.1, 5.2). Searched once over the whole head; the per-line check below runs only if
    # " :" occurs somewhere (it may legitimately sit inside a value).
    if "\r\n " in text or "\r\n\t" in text or "\r\n:" in text:
        raise _bad("malformed header line")
    strict = " :" in text or "\t:" in text
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or (strict and name[-1] in " \t"):
            raise _bad("malformed header line")
        name = name.lower()
        if name in headers:
            if name == "content-length" or name == "host":
                raise _bad(f"duplicate {name} header")
            headers[name] += ", " + value.strip(" \t")
        else:
            headers[name] = value.strip(" \t")

    if "transfer-encoding" in headers:
        raise HTTPError(
            411,
            "length_required",
            "Transfer-Encoding is not supported; send the body with Content-Length",
        )
    clen = 0
    cl = headers.get("content-length")
    if cl is not None:
        if not (len(cl) < 19 and cl.isascii() and cl.isdigit()):
            raise _bad("malformed Content-Length")
        clen = int(cl)

    conn_value = headers.get("connection")
    if conn_value is None:
        keep_alive = http11
    else:
        tokens = {t.strip() for t in conn_value.lower().split(",")}
        keep_alive = "close" not in tokens and (http11 or "keep-alive" in tokens)
    conn = (_CONN_KEEP if http11 else _CONN_KEEP_10) if keep_alive else _CONN_CLOSE
    expect_continue = False
    if "expect" in headers:
        expect_continue = http11 and headers["expect"].lower() == "100-continue"
    return _Head(method, target, headers, clen, end + 4, keep_alive, conn, expect_continue)


def _origin_form(target: str) -> str:
    """Absolute-form ``http://host/path?q`` -> ``/path?q``; anything else is a 400."""
    lower = target[:8].lower()
    if lower.startswith("http://") or lower.startswith("https://"):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        if slash < 0:
            q = rest.find("?")
            return "/" if q < 0 else "/" + rest[q:]
        return rest[slash:]
    raise _bad("request target must be an absolute path")


# --------------------------------------------------------------------------- connection

# Where a connection is; each phase but _BUSY has a deadline (see the module docstring).
_FRESH = 0  # accepted, nothing received yet: head deadline from accept
_HEAD = 1  # part of a request head received: head deadline from its first byte
_BODY = 2  # head complete, body incomplete: body deadline from the head
_BUSY = 3  # a handler is running: no deadline here
_IDLE = 4  # keep-alive, nothing in flight: idle deadline
_STALLED = 5  # our writes back up, or closing and flushing: aborted after the idle time


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_buf",
        "_busy",
        "_closing",
        "_deadline",
        "_eof",
        "_hiwat",
        "_linger",
        "_loop",
        "_pending",
        "_phase",
        "_reading",
        "_remote",
        "_router",
        "_server",
        "_since",
        "_task",
        "_transport",
        "_write_paused",
    )

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._router = server.router
        self._loop = server.loop
        self._transport: asyncio.Transport | None = None
        self._buf: bytes | bytearray = b""
        self._pending: _Head | None = None
        self._busy = False  # a handler task is running for this connection
        self._closing = False  # no more requests will be served
        self._eof = False
        self._write_paused = False
        self._reading = True
        self._hiwat = server.max_header + server.max_body + 65536
        self._task: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._phase = _FRESH
        self._since = 0.0  # loop time the current phase began
        self._deadline = 0.0  # loop time the current phase must end (0: none)
        self._remote: Any = None

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # An asyncio.Transport in practice (uvloop's transports do not subclass it).
        self._transport = cast(asyncio.Transport, transport)
        self._remote = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio does this only when the socket's proto says TCP; be sure: with Nagle,
            # a response following a write the client has not yet ACKed waits ~40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._enter(_FRESH, self._server.head_timeout)
        self._server._connection_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._buf = b""
        self._pending = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._server._connection_lost(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering close, or shutting down: discard
        if self._phase == _IDLE:
            self._enter(_HEAD, self._server.head_timeout)
        elif self._phase == _FRESH:
            self._phase = _HEAD  # the deadline still counts from the accept
        buf = self._buf
        if not buf:
            self._buf = data
        else:
            if type(buf) is bytes:
                buf = bytearray(buf)
            buf += data
            self._buf = buf
        if self._busy or self._write_paused:
            if len(self._buf) > self._hiwat:
                self._update_reading()
        else:
            self._process()

    def eof_received(self) -> bool:
        self._eof = True
        # Keep the half-open connection while a request is in flight so its response can
        # still be written; otherwise let the transport close.
        return self._busy and not self._closing

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()
        if not self._busy:
            self._enter(_STALLED, self._server.idle_timeout)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        if not self._busy and not self._closing:
            self._process()

    # -- deadlines

    def _enter(self, phase: int, timeout: float) -> None:
        now = self._loop.time()
        self._phase = phase
        self._since = now
        self._deadline = now + timeout if timeout > 0 else 0.0

    def _arm(self) -> None:
        """Set the phase (and deadline) from what is buffered, after processing."""
        if self._closing:
            return
        if self._write_paused:
            if self._phase != _STALLED:
                self._enter(_STALLED, self._server.idle_timeout)
        elif self._busy:
            if self._phase != _BUSY:
                self._enter(_BUSY, 0)
        elif self._pending is not None:
            if self._phase != _BODY:
                self._enter(_BODY, self._server.body_timeout)
        elif self._buf:
            if self._phase not in (_FRESH, _HEAD):
                self._enter(_HEAD, self._server.head_timeout)
        elif self._phase not in (_FRESH, _IDLE):
            self._enter(_IDLE, self._server.idle_timeout)

    def _expire(self) -> None:
        """The current phase's deadline passed (called by the server's sweep)."""
        phase = self._phase
        self._deadline = 0.0
        if phase == _STALLED:
            self._abort()
        elif phase in (_HEAD, _BODY) and self._transport is not None:
            what = "request head" if phase == _HEAD else "request body"
            # A client that is still sending (a slow loris) would get RST for its unread
            # bytes, which can destroy the 408 in flight: close the way _fail does.
            self._fail(HTTPError(408, "request_timeout", f"{what} not received in time"))
        else:  # _FRESH or _IDLE: nothing to answer
            self._close()

    # -- request processing

    def _update_reading(self) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return
        want = self._closing or (not self._write_paused and len(self._buf) <= self._hiwat)
        if want != self._reading:
            self._reading = want
            if want:
                t.resume_reading()
            else:
                t.pause_reading()

    def _process(self) -> None:
        """Parse and dispatch buffered requests until one needs a task or data runs out."""
        while not self._busy and not self._closing and not self._write_paused:
            buf = self._buf
            head = self._pending
            if head is None:
                if not buf:
                    break
                if buf[0] == 13 or buf[0] == 10:  # RFC 9112 2.2: ignore leading CRLFs
                    self._buf = buf = buf.lstrip(b"\r\n")
                    continue
                end = buf.find(b"\r\n\r\n")
                if end < 0 or end > self._server.max_header:
                    if end < 0 and len(buf) <= self._server.max_header + 3:
                        break
                    self._fail(
                        HTTPError(
                            431,
                            "headers_too_large",
                            f"request head exceeds {self._server.max_header} bytes",
                        )
                    )
                    return
                try:
                    head = _parse_head(buf, end)
                except HTTPError as e:
                    self._fail(e)
                    return
                if head.clen > self._server.max_body:
                    self._fail(
                        HTTPError(
                            413,
                            "payload_too_large",
                            f"body of {head.clen} bytes exceeds {self._server.max_body}",
                            {"max_body": self._server.max_body},
                        )
                    )
                    return
                if len(buf) < head.body_start + head.clen:
                    if head.expect_continue:
                        assert self._transport is not None
                        self._transport.write(_CONTINUE)
                    self._pending = head
                    break
            elif len(buf) < head.body_start + head.clen:
                break
            self._pending = None
            end = head.body_start + head.clen
            body = bytes(buf[head.body_start : end]) if head.clen else b""
            self._buf = buf[end:] if len(buf) > end else b""
            self._dispatch(head, body)
        if not self._busy and not self._closing and self._eof and not self._write_paused:
            self._close()  # client half-closed and everything complete has been answered
            return
        if not self._reading:
            self._update_reading()
        self._arm()

    def _dispatch(self, head: _Head, body: bytes) -> None:
        target = head.target
        q = target.find("?")
        if q < 0:
            raw_path, qs = target, ""
        else:
            raw_path, qs = target[:q], target[q + 1 :]
        headers = head.headers
        keep_alive = head.keep_alive and not self._server.closing
        conn = head.conn if keep_alive else _CONN_CLOSE
        where = "before handler"
        try:
            request = Request(head.method, raw_path, qs, headers, body, self._remote)
            handler, public, params = self._router.resolve(head.method, raw_path)
            request.path_params = params
            auth = self._router.auth
            if not public and auth is not None and not auth(request):
                raise _unauthorized()
            where = "in handler"
            # A coroutine handler only creates its coroutine here; a plain one runs now.
            out = handler(request)
        except HTTPError as e:
            self._write(e.to_response(), keep_alive, conn)
            return
        except Exception:
            log.exception("unhandled error %s for %s %s", where, head.method, raw_path)
            self._write(_internal_error(), keep_alive, conn)
            return
        if type(out) is Response:
            self._write(out, keep_alive, conn)
            return
        self._busy = True
        if type(out) is Deferred:
            out.future.add_done_callback(
                partial(self._deferred_done, out.finish, request, keep_alive, conn)
            )
        else:
            self._task = self._loop.create_task(self._run(out, request, keep_alive, conn))

    async def _run(
        self, pending: Awaitable[Response], request: Request, keep_alive: bool, conn: bytes
    ) -> None:
        try:
            resp = await pending
            if not isinstance(resp, Response):
                raise TypeError(f"handler returned {type(resp).__name__}, not Response")
        except HTTPError as e:
            resp = e.to_response()
        except Exception:
            log.exception("unhandled error in handler for %s %s", request.method, request.path)
            resp = _internal_error()
        self._task = None
        self._respond(resp, keep_alive, conn)

    def _deferred_done(
        self,
        finish: Callable[[asyncio.Future[Any]], Response],
        request: Request,
        keep_alive: bool,
        conn: bytes,
        fut: asyncio.Future[Any],
    ) -> None:
        try:
            resp = finish(fut)
            if not isinstance(resp, Response):
                raise TypeError(f"handler returned {type(resp).__name__}, not Response")
        except HTTPError as e:
            resp = e.to_response()
        except asyncio.CancelledError:
            resp = HTTPError(503, "unavailable", "the request was cancelled").to_response()
        except Exception:
            log.exception("unhandled error in handler for %s %s", request.method, request.path)
            resp = _internal_error()
        self._respond(resp, keep_alive, conn)

    def _respond(self, resp: Response, keep_alive: bool, conn: bytes) -> None:
        """The handler is done: answer, then go on with what the client sent meanwhile."""
        self._busy = False
        if self._server.closing and keep_alive:  # shutdown began while the handler ran
            keep_alive, conn = False, _CONN_CLOSE
        self._write(resp, keep_alive, conn)
        if keep_alive and (self._buf or self._eof):
            self._process()
        else:
            self._arm()

    def _write(self, resp: Response, keep_alive: bool, conn: bytes) -> None:
        t = self._transport
        if t is None or t.is_closing():
            return  # client went away; the response is dropped
        try:
            data = _encode(resp, conn)
        except Exception:  # e.g. CR/LF in a header value, non-bytes body
            log.exception("cannot encode response %r", resp)
            data = _encode(_internal_error(), conn)
        t.write(data)
        if not keep_alive:
            self._close()

    def _close(self) -> None:
        self._closing = True
        # close() waits for buffered output to flush: a client that never reads would
        # keep the connection forever, so the sweep aborts it after the idle time.
        self._enter(_STALLED, self._server.idle_timeout)
        if self._transport is not None:
            self._transport.close()

    def _fail(self, err: HTTPError) -> None:
        """Answer a request we cannot frame, then close gracefully.

        Half-close, keep discarding what the client still sends for LINGER_S, then close:
        closing a socket with unread input makes the kernel send RST, which can destroy
        the error response before the client reads it.
        """
        self._closing = True
        self._buf = b""
        self._pending = None
        self._enter(_STALLED, LINGER_S + self._server.idle_timeout)
        t = self._transport
        if t is None or t.is_closing():
            return
        t.write(_encode(err.to_response(), _CONN_CLOSE))
        if t.can_write_eof():
            t.write_eof()
            self._update_reading()  # make sure we keep draining
            self._linger = self._loop.call_later(LINGER_S, t.close)
        else:  # pragma: no cover - plain TCP always can
            t.close()

    # -- used by the server

    def _evictable(self) -> bool:
        return not self._busy and not self._closing

    def _refuse(self) -> None:
        """Over the connection cap with no room to make: say so and close."""
        err = HTTPError(503, "too_many_connections", "the node is at its connection limit")
        if self._transport is not None:
            self._transport.write(_encode(err.to_response(), _CONN_CLOSE))
        self._close()

    def _shutdown(self) -> None:
        """Server closing: close now if idle, else after the current response."""
        if not self._busy:
            self._close()

    def _abort(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()


def _internal_error() -> Response:
    return json_response(
        500, {"error": "internal", "message": "internal server error; see the node log"}
    )


# --------------------------------------------------------------------------- server


class HTTPServer:
    """A running server; create with :func:`start_server`."""

    def __init__(
        self,
        router: Router,
        loop: asyncio.AbstractEventLoop,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_header: int = DEFAULT_MAX_HEADER,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.router = router
        self.loop = loop
        self.max_body = max_body
        self.max_header = max_header
        self.idle_timeout = idle_timeout
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        # Connections closed to make room, and ones refused at the cap (for metrics).
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self.closing = False
        self.host = ""  # bound address, set by start_server (kept after close)
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Connection] = set()
        self._all_closed = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None
        timeouts = [t for t in (idle_timeout, head_timeout, body_timeout) if t > 0]
        self._sweep_every = max(0.02, min([t / 4 for t in timeouts] + [1.0]))

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets (empty once closed)."""
        assert self._server is not None
        return tuple(self._server.sockets)

    @property
    def active_connections(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        """Stop accepting, close idle connections; busy ones close after their response."""
        if self.closing:
            return
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for c in list(self._conns):
            c._shutdown()
        if not self._conns:
            self._all_closed.set()

    async def wait_closed(self, grace: float = 5.0) -> None:
        """Wait for connections to finish; after ``grace`` seconds cancel and abort them."""
        self.close()
        try:
            await asyncio.wait_for(self._all_closed.wait(), grace)
        except TimeoutError:
            for c in list(self._conns):
                c._abort()
            await self._all_closed.wait()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> HTTPServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.wait_closed()

    # -- internals

    async def _start(
        self, host: str, port: int, backlog: int, ssl_context: ssl.SSLContext | None
    ) -> None:
        self._server = await self.loop.create_server(
            lambda: _Connection(self),
            host,
            port,
            backlog=backlog,
            reuse_address=True,
            ssl=ssl_context,
            # The TLS handshake of a stalled client must not outlive the head deadline.
            ssl_handshake_timeout=(self.head_timeout or None) if ssl_context else None,
        )
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for c in [c for c in self._conns if 0 < c._deadline <= now]:
            if c._phase in (_HEAD, _BODY):
                self.timed_out += 1
            c._expire()
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def _connection_made(self, conn: _Connection) -> None:
        if self.closing:
            self._conns.add(conn)
            conn._close()
            return
        if len(self._conns) >= self.max_connections and not self._make_room():
            self.refused += 1
            self._conns.add(conn)
            conn._refuse()
            return
        self._conns.add(conn)

    def _make_room(self) -> bool:
        """At the cap: close the oldest connection with a request still arriving, else the
        oldest idle one. False if every connection is busy (the new one is refused)."""
        victim: _Connection | None = None
        best = (True, 0.0)
        for c in self._conns:
            if c._evictable():
                key = (c._phase == _IDLE, c._since)
                if victim is None or key < best:
                    victim, best = c, key
        if victim is None:
            return False
        self.evicted += 1
        if victim._phase == _IDLE:
            victim._close()
        else:
            victim._abort()
        self._conns.discard(victim)  # its slot is free now; connection_lost follows
        return True

    def _connection_lost(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        if self.closing and not self._conns:
            self._all_closed.set()


async def start_server(
    router: Router,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_header: int = DEFAULT_MAX_HEADER,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    backlog: int = 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> HTTPServer:
    """Listen on ``host:port`` (``port=0`` picks a free port; see ``server.port``).

    Timeouts are in seconds; a timeout ``<= 0`` disables that deadline. With
    ``ssl_context`` the server speaks HTTPS only (a plain-HTTP client fails the TLS
    handshake and is disconnected).
    """
    server = HTTPServer(
        router,
        asyncio.get_running_loop(),
        max_body=max_body,
        max_header=max_header,
        idle_timeout=idle_timeout,
        head_timeout=head_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
    )
    await server._start(host, port, backlog, ssl_context)
    return server
