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

The package, one module per seam: ``messages`` (Request, Response, HTTPError, Deferred,
the JSON codec), ``router`` (routing and the bearer-token auth hook), ``wire``
(parsing request heads, encoding responses), ``connection`` (one connection's state
machine: phases, deadlines, dispatch, lingering close) and ``server`` (HTTPServer,
start_server: listening, the deadline sweep, the connection cap).
"""

from .messages import Deferred, Handler, HTTPError, Request, Response, json_response, text_response
from .router import AuthHook, Router, bearer_auth
from .server import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEAD_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER,
    HTTPServer,
    start_server,
)

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
