"""Streamable HTTP: loopback by default; bound anywhere else, a bearer token is required
(from ``--token-file`` or ``$RAFT_MANAGER_MCP_TOKEN``) and checked on every request."""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer

from ..core import InputError
from .args import ENV_TOKEN


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps(
                    {"error": "unauthorized", "message": "missing or wrong bearer token"}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None) -> str | None:
    """The HTTP bearer token: from ``--token-file``, else ``$RAFT_MANAGER_MCP_TOKEN``."""
    if token_file:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as e:
            raise InputError(f"cannot read --token-file {token_file}: {e.strerror}") from None
        if not token:
            raise InputError(f"--token-file {token_file} is empty")
        return token
    return (os.environ.get(ENV_TOKEN) or "").strip() or None


def http_app(server: MCPServer, host: str, token: str | None) -> Any:
    """The streamable HTTP ASGI app (``/mcp``), behind the token check when there is one."""
    if not is_loopback(host) and token is None:
        raise InputError(
            f"refusing to serve MCP on {host} without a bearer token",
            f"put a token in a file and pass --token-file FILE, or set {ENV_TOKEN}; "
            "or bind to 127.0.0.1",
        )
    app = server.streamable_http_app(host=host)
    return BearerAuth(app, token) if token else app
