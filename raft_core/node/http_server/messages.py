"""What handlers see and return: requests, responses, errors, deferred answers, and
the JSON codec they share (see the package docstring for the server's scope)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote


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
