"""``raft-manager-mcp``: the MCP server, a thin face over the guarded manager.

Each tool calls the one ``Manager`` method of the same name on a worker thread and
answers the document ``raft-manager ... --json`` prints, as structured output with an
output schema (``mcp_server/mcp/tools.py``). The manager checks policy, plans, asks for
approvals, refuses and audits; the server only translates (``mcp_server/mcp/backend.py``).

Scoping (``mcp_server/mcp/args.py``): toolsets, ``--tools``, ``--exclude-tools``,
``--disable-destructive`` and ``--read-only`` (which wins), each with an environment
twin. A tool that is off is not listed and is refused if called anyway. The server's
first line on stderr, and ``list_clusters``, say which config, default cluster and state
dir it serves.

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
from mcp.types import Tool as MCPTool

from .core import Config, ManagerError, load_config
from .core.approvals import ENV_VIA_MCP
from .core.config import APP, ENV_STATE_DIR, state_dir
from .mcp import prompts, resources, results
from .mcp import tools as tool_defs
from .mcp.args import Scope, add_arguments, add_target_arguments, settings
from .mcp.backend import Backend
from .mcp.http import http_app, read_token

INSTRUCTIONS = """\
Operate Raft clusters safely. Work in this order: health_check (with the operation you
intend) -> plan (dry_run=true where offered) -> apply the plan_id -> verify_consistency.
Mutations are refused when unsafe (quorum, lag, a change in flight, a stale plan); a
refusal says why and what to do next - do that, do not retry blindly. On clusters with
require_approval a destructive plan needs a human to run `raft-manager approve PLAN_ID`
at a terminal; you cannot approve it yourself. Every tool's `cluster` argument names a
cluster from list_clusters; omit it for the server's default cluster (with no config,
the embedded local cluster, started on first use). An optional `group` names one Raft
group of a cluster that runs several (NATS JetStream: meta, stream:NAME,
consumer:STREAM/NAME; cluster_status lists them, a page at a time: pass its
next_group_offset as group_offset). Resources: raft://skill and
raft://runbooks/* say how to work; raft://audit shows what was done."""


class ScopedServer(MCPServer):
    """An MCPServer that neither lists nor runs the tools its scope turned off, and lists
    the others compacted (``results.compact_tool``)."""

    def __init__(self, *args: Any, scope: Scope, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scope = scope
        self._listed: list[MCPTool] | None = None

    async def list_tools(self) -> list[MCPTool]:  # type: ignore[override]
        if self._listed is None:  # the tools are fixed once built
            served = [t for t in await super().list_tools() if t.name not in self.scope.hidden]
            self._listed = [results.compact_tool(t) for t in served]
        return self._listed

    async def call_tool(self, name: str, arguments: dict[str, Any], context=None):  # type: ignore[override]
        if name in self.scope.hidden:
            raise ToolError(
                f"refused: {name} is turned off on this server ({self.scope.hidden[name]})\n"
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
    toolsets: list[str] | None = None,
    tools: list[str] | None = None,
    exclude_tools: list[str] | None = None,
    skill: Path | None = None,
) -> ScopedServer:
    """The MCP server over ``config`` (a Config, a clusters.yaml path, or None: the
    default), serving the tools the scoping arguments leave (``args.Scope``; an unknown
    name raises ``InputError``); ``skill`` is the folder with SKILL.md and
    skill/references (found by default)."""
    scope = Scope(
        toolsets=tuple(toolsets) if toolsets is not None else None,
        tools=tuple(tools) if tools is not None else None,
        exclude_tools=tuple(exclude_tools or ()),
        read_only=read_only,
        disable_destructive=disable_destructive,
    )
    cfg = config if isinstance(config, Config) else load_config(config)
    backend = Backend(cfg)
    server = ScopedServer(
        APP,
        version=_version(),
        instructions=INSTRUCTIONS,
        log_level="WARNING",
        lifespan=lambda _server: _closing(backend),
        scope=scope,
    )
    tool_defs.register(server, backend, cfg)
    resources.register(server, cfg, skill if skill is not None else resources.skill_dir())
    prompts.register(server)
    return server


def notice(cfg: Config, scope: Scope) -> str:
    """The server's first words on stderr: what it serves, so a host that dropped an
    environment variable shows up at once."""
    default = cfg.cluster(None).name if cfg.default or len(cfg.clusters) == 1 else None
    return (
        f"serving config {cfg.path or 'none (the embedded local cluster)'}; "
        f"default cluster {default or 'none (each call names one)'}; state dir {state_dir()}; "
        f"tools ({len(scope.served)} of {len(scope.served) + len(scope.hidden)}): "
        f"{', '.join(scope.served) or 'none'}"
    )


def serve(args: argparse.Namespace) -> int:
    """Run the server the parsed flags (else their environment twins) describe; returns
    an exit code."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    # Mark this process: `raft-manager approve` refuses to run under the MCP server.
    os.environ[ENV_VIA_MCP] = "1"
    try:
        s = settings(args)
        if s.state_dir is not None:  # read by every state_dir() call in this process
            os.environ[ENV_STATE_DIR] = str(Path(s.state_dir).expanduser().resolve())
        cfg = load_config(s.config)
        if s.cluster:
            cfg.default = cfg.cluster(s.cluster).name
        server = build_server(
            cfg,
            read_only=s.scope.read_only,
            disable_destructive=s.scope.disable_destructive,
            toolsets=None if s.scope.toolsets is None else list(s.scope.toolsets),
            tools=None if s.scope.tools is None else list(s.scope.tools),
            exclude_tools=list(s.scope.exclude_tools),
        )
        sys.stderr.write(f"raft-manager-mcp: {notice(cfg, server.scope)}\n")
        sys.stderr.flush()
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
        description="The agent-raft-manager MCP server (stdio by default). Every flag "
        "has an environment twin, used when the flag is not given.",
    )
    add_target_arguments(p)
    add_arguments(p)
    return serve(p.parse_args(argv))


def _version() -> str:
    try:
        return version(APP)
    except PackageNotFoundError:
        return "0"


if __name__ == "__main__":
    sys.exit(main())
