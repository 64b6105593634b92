"""``raft-manager-mcp``: the MCP server, a thin face over the guarded manager.

Each tool calls the one ``Manager`` method of the same name on a worker thread and
answers the document ``raft-manager ... --json`` prints, as structured output with an
output schema (``mcp_server/mcp/tools.py``). The manager checks policy, plans, asks for
approvals, refuses and audits; the server only translates (``mcp_server/mcp/backend.py``).

Scoping: ``--read-only`` serves only read-only tools, ``--disable-destructive`` drops
the destructive ones. A tool that is off is not listed and is refused if called anyway.

Transports: stdio (default; stdout carries only the protocol, logs go to stderr) and
streamable HTTP (``--http``), on loopback by default; bound anywhere else it needs a
bearer token (``mcp_server/mcp/http.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from .core import Config, ManagerError, load_config
from .core.approvals import ENV_VIA_MCP
from .core.config import APP
from .mcp import prompts, resources, tools
from .mcp.args import add_arguments
from .mcp.backend import Backend
from .mcp.http import http_app, read_token

INSTRUCTIONS = """\
Operate Raft clusters safely. Work in this order: health_check (with the operation you
intend) -> plan (dry_run=true where offered) -> apply the plan_id -> verify_consistency.
Mutations are refused when unsafe (quorum, lag, a change in flight, a stale plan); a
refusal says why and what to do next - do that, do not retry blindly. On clusters with
require_approval a destructive plan needs a human to run `raft-manager approve PLAN_ID`
at a terminal; you cannot approve it yourself. `cluster` defaults to the embedded local
cluster (started on first use). Resources: raft://skill and raft://runbooks/* say how to
work; raft://audit shows what was done."""


class ScopedServer(MCPServer):
    """An MCPServer that neither lists nor runs the tools its flags turned off."""

    def __init__(self, *args: Any, hidden: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden = hidden

    async def list_tools(self):  # type: ignore[override]
        return [t for t in await super().list_tools() if t.name not in self.hidden]

    async def call_tool(self, name: str, arguments: dict[str, Any], context=None):  # type: ignore[override]
        if name in self.hidden:
            raise ToolError(
                f"refused: {name} is turned off on this server ({self.hidden[name]})\n"
                "next: use the tools this server lists, or ask the operator to restart the "
                "server without that flag"
            )
        return await super().call_tool(name, arguments, context)


@contextlib.asynccontextmanager
async def _closing(backend: Backend) -> AsyncIterator[None]:
    """The server's lifespan: the managers' connections close when it stops."""
    try:
        yield None
    finally:
        backend.close()


def build_server(
    config: Config | str | None = None,
    *,
    read_only: bool = False,
    disable_destructive: bool = False,
    skill: Path | None = None,
) -> ScopedServer:
    """The MCP server over ``config`` (a Config, a clusters.yaml path, or None: the
    default); ``skill`` is the folder with SKILL.md and skill/references (found by
    default)."""
    cfg = config if isinstance(config, Config) else load_config(config)
    backend = Backend(cfg)
    server = ScopedServer(
        APP,
        version=_version(),
        instructions=INSTRUCTIONS,
        log_level="WARNING",
        lifespan=lambda _server: _closing(backend),
        hidden=tools.hidden_tools(read_only=read_only, disable_destructive=disable_destructive),
    )
    tools.register(server, backend, cfg)
    resources.register(server, cfg, skill if skill is not None else resources.skill_dir())
    prompts.register(server)
    return server


def serve(args: argparse.Namespace) -> int:
    """Run the server the parsed flags describe; returns an exit code."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    # Mark this process: `raft-manager approve` refuses to run under the MCP server.
    os.environ[ENV_VIA_MCP] = "1"
    try:
        cfg = load_config(args.config)
        if getattr(args, "cluster", None):  # `raft-manager --cluster NAME mcp`: the default
            cfg.default = cfg.cluster(args.cluster).name
        server = build_server(
            cfg, read_only=args.read_only, disable_destructive=args.disable_destructive
        )
        if not args.http:
            server.run()
            return 0
        app = http_app(server, args.host, read_token(args.token_file))
    except ManagerError as e:
        sys.stderr.write(f"raft-manager-mcp: {e}\n")
        return e.exit_code
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="raft-manager-mcp",
        description="The agent-raft-manager MCP server (stdio by default).",
    )
    p.add_argument("--config", help="clusters.yaml (default: $RAFT_MANAGER_CONFIG, else embedded)")
    add_arguments(p)
    return serve(p.parse_args(argv))


def _version() -> str:
    try:
        return version(APP)
    except PackageNotFoundError:
        return "0"


if __name__ == "__main__":
    sys.exit(main())
