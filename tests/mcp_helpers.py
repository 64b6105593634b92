"""Helpers for the MCP server tests: an in-process client, tool calls that must succeed
or must fail with a reason, and `raft-manager approve` driven through a real terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from manager_helpers import write_config
from mcp.client import Client

BIN = Path(sys.executable).parent


def mcp_config(tmp: Path, clusters: dict[str, dict], **top: Any) -> Path:
    """clusters.yaml for the server, with the audit log in ``tmp``."""
    return write_config(tmp / "clusters.yaml", clusters, audit_log=str(tmp / "audit.jsonl"), **top)


def with_client(server: Any, body: Callable[[Client], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with Client(server) as c:
            return await body(c)

    return anyio.run(main)


async def ok(c: Client, tool: str, args: dict | None = None, progress: list | None = None) -> dict:
    """Call ``tool``; it must succeed. Returns its structured content."""

    async def cb(done: float, total: float | None, message: str | None) -> None:
        if progress is not None:
            progress.append((done, total, message))

    r = await c.call_tool(tool, args or {}, progress_callback=cb)
    assert not r.is_error, f"{tool}({args}) failed: {r.content[0].text}"
    assert r.structured_content is not None
    return r.structured_content


async def err(c: Client, tool: str, args: dict | None, *match: str) -> str:
    """Call ``tool``; it must answer a tool error containing every ``match``."""
    r = await c.call_tool(tool, args or {})
    assert r.is_error, f"{tool}({args}) did not fail: {r.structured_content}"
    text = r.content[0].text
    for m in match:
        assert m in text, f"{m!r} not in {text!r}"
    return text


def approve_at_terminal(
    config: Path, plan_id: str, answer: str | None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``raft-manager approve PLAN_ID`` on a pseudo-terminal, type ``answer`` at its
    question (None: answer nothing, expect it to stop by itself); exit code and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(BIN / "raft-manager"), "--config", str(config), "approve", plan_id],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        close_fds=True,
    )
    os.close(slave)
    out = b""
    answered = answer is None
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if not answered and b"[y/N]" in out:
                os.write(master, (answer + "\n").encode())  # type: ignore[operator]
                answered = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, out.decode(errors="replace")
