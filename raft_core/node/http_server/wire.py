"""The wire format: parsing a request head, encoding a response (the hot path of
every request: both avoid work a small JSON exchange does not need)."""

from __future__ import annotations

import re
from http import HTTPStatus

from .messages import HTTPError, Response

_STATUS_LINES: dict[int, bytes] = {
    int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus
}
_CT_HEADERS: dict[str, bytes] = {}
CONN_KEEP = b""  # HTTP/1.1 default
CONN_KEEP_10 = b"Connection: keep-alive\r\n"
CONN_CLOSE = b"Connection: close\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
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


def encode(resp: Response, conn: bytes) -> bytes:
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


class Head:
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


def parse_head(buf: bytes | bytearray, end: int) -> Head:
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
    conn = (CONN_KEEP if http11 else CONN_KEEP_10) if keep_alive else CONN_CLOSE
    expect_continue = False
    if "expect" in headers:
        expect_continue = http11 and headers["expect"].lower() == "100-continue"
    return Head(method, target, headers, clen, end + 4, keep_alive, conn, expect_continue)


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
