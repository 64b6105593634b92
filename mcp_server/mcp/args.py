"""The MCP server's command-line flags, shared by ``raft-manager-mcp`` and
``raft-manager mcp``. Kept apart from the server so the CLI does not import the MCP SDK
for every command."""

from __future__ import annotations

import argparse

ENV_TOKEN = "RAFT_MANAGER_MCP_TOKEN"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The server's flags, shared by ``raft-manager-mcp`` and ``raft-manager mcp``."""
    p.add_argument("--http", action="store_true", help="serve streamable HTTP on /mcp")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--token-file", help=f"HTTP bearer token file (else ${ENV_TOKEN})")
    p.add_argument("--read-only", action="store_true", help="serve only read-only tools")
    p.add_argument(
        "--disable-destructive", action="store_true", help="do not serve destructive tools"
    )
