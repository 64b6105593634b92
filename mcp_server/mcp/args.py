"""The MCP server's settings: flags shared by ``raft-manager-mcp`` and ``raft-manager
mcp``, their environment twins, and which tools they serve (docs/design.md, section 6).

Every setting is an argument, because stdio hosts pass the server few environment
variables (the MCP Inspector passes HOME, TERM, PATH, SHELL, PWD), and each has an
environment twin for hosts that do pass them. An argument wins over its twin.

Scoping, as github-mcp-server does it: ``--toolsets`` (read, write, operate; default
all) and ``--tools`` together name the tools served (when either is given, only those);
``--exclude-tools`` removes some; ``--disable-destructive`` drops the destructive ones;
``--read-only`` keeps only read-only tools and wins over everything. An unknown tool or
toolset name stops the server at startup with the names it knows.

Kept apart from the server so the CLI does not import the MCP SDK for every command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..core.catalog import BY_NAME, TOOLS, TOOLSETS, in_toolset
from ..core.config import ENV_CONFIG, ENV_STATE_DIR
from ..core.errors import InputError

ENV_TOKEN = "RAFT_MANAGER_MCP_TOKEN"
ENV_CLUSTER = "RAFT_MANAGER_CLUSTER"
ENV_TOOLSETS = "RAFT_MANAGER_TOOLSETS"
ENV_TOOLS = "RAFT_MANAGER_TOOLS"
ENV_EXCLUDE_TOOLS = "RAFT_MANAGER_EXCLUDE_TOOLS"
ENV_READ_ONLY = "RAFT_MANAGER_READ_ONLY"
ENV_DISABLE_DESTRUCTIVE = "RAFT_MANAGER_DISABLE_DESTRUCTIVE"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def add_target_arguments(p: argparse.ArgumentParser) -> None:
    """``--config`` and ``--cluster``: ``raft-manager`` has them as global flags already."""
    p.add_argument("--config", help=f"clusters.yaml (else ${ENV_CONFIG}, else embedded)")
    p.add_argument("--cluster", help=f"the default cluster (else ${ENV_CLUSTER})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The server's flags, shared by ``raft-manager-mcp`` and ``raft-manager mcp``."""
    p.add_argument("--http", action="store_true", help="serve streamable HTTP on /mcp")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--token-file", help=f"HTTP bearer token file (else ${ENV_TOKEN})")
    p.add_argument(
        "--state-dir",
        help=f"plans, approvals, audit log, embedded cluster (else ${ENV_STATE_DIR}, else "
        "$XDG_STATE_HOME/agent-raft-manager)",
    )
    p.add_argument(
        "--toolsets",
        help=f"comma-separated: {', '.join(TOOLSETS)} (default all; else ${ENV_TOOLSETS})",
    )
    p.add_argument("--tools", help=f"comma-separated tool names to serve (else ${ENV_TOOLS})")
    p.add_argument(
        "--exclude-tools",
        help=f"comma-separated tool names not to serve (else ${ENV_EXCLUDE_TOOLS})",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        default=None,
        help=f"serve only read-only tools; wins over every other flag (else ${ENV_READ_ONLY})",
    )
    p.add_argument(
        "--disable-destructive",
        action="store_true",
        default=None,
        help=f"do not serve destructive tools (else ${ENV_DISABLE_DESTRUCTIVE})",
    )


@dataclass(frozen=True)
class Scope:
    """Which tools the server serves."""

    toolsets: tuple[str, ...] | None = None
    tools: tuple[str, ...] | None = None
    exclude_tools: tuple[str, ...] = ()
    read_only: bool = False
    disable_destructive: bool = False
    hidden: dict[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        for name in self.toolsets or ():
            if name not in TOOLSETS:
                raise InputError(
                    f"unknown toolset {name!r}", f"toolsets are: {', '.join(TOOLSETS)}"
                )
        for name in (*(self.tools or ()), *self.exclude_tools):
            if name not in BY_NAME:
                raise InputError(f"unknown tool {name!r}", f"tools are: {', '.join(BY_NAME)}")
        object.__setattr__(self, "hidden", self._hidden())

    def _hidden(self) -> dict[str, str]:
        """Each tool turned off, with the flag that turned it off (read-only first: it
        wins over everything)."""
        named = self.toolsets is not None or self.tools is not None
        enabled = {t for ts in self.toolsets or () for t in in_toolset(ts)} | set(self.tools or ())
        off: dict[str, str] = {}
        for t in TOOLS:
            if self.read_only and not t.read_only:
                off[t.name] = "the server runs with --read-only"
            elif self.disable_destructive and t.destructive:
                off[t.name] = "the server runs with --disable-destructive"
            elif t.name in self.exclude_tools:
                off[t.name] = "--exclude-tools names it"
            elif named and t.name not in enabled:
                off[t.name] = "neither --toolsets nor --tools names it"
        return off

    @property
    def served(self) -> list[str]:
        return [t.name for t in TOOLS if t.name not in self.hidden]


@dataclass(frozen=True)
class Settings:
    """Everything the server needs, from its arguments, else their environment twins."""

    config: str | None
    cluster: str | None
    state_dir: str | None
    scope: Scope


def _names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(n.strip() for n in value.split(",") if n.strip())


def _flag(value: bool | None, env: Mapping[str, str], name: str) -> bool:
    if value is not None:
        return value
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise InputError(f"{name}={env[name]!r} is not a yes/no value", "set it to 1 or 0")


def settings(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Settings:
    """The server's settings from its parsed flags; a flag not given falls back to its
    environment twin. Raises ``InputError`` on an unknown tool or toolset name."""

    def pick(attr: str, twin: str) -> str | None:
        given = getattr(args, attr, None)
        return given if given is not None else (env.get(twin) or None)

    return Settings(
        config=pick("config", ENV_CONFIG),
        cluster=pick("cluster", ENV_CLUSTER),
        state_dir=pick("state_dir", ENV_STATE_DIR),
        scope=Scope(
            toolsets=_names(pick("toolsets", ENV_TOOLSETS)),
            tools=_names(pick("tools", ENV_TOOLS)),
            exclude_tools=_names(pick("exclude_tools", ENV_EXCLUDE_TOOLS)) or (),
            read_only=_flag(getattr(args, "read_only", None), env, ENV_READ_ONLY),
            disable_destructive=_flag(
                getattr(args, "disable_destructive", None), env, ENV_DISABLE_DESTRUCTIVE
            ),
        ),
    )
