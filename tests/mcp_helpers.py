"""Helpers for the MCP server tests: an in-process client, tool calls that must succeed
(their structured content checked against the tool's output schema) or must fail with
a reason, and `raft-manager approve` driven through a real terminal."""

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
import jsonschema
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


def check_output(schema: dict, doc: dict, tool: str) -> None:
    """``doc`` validates against ``schema`` as a client validates it (draft 2020-12)."""
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)
    ]
    assert not errors, f"{tool}'s structuredContent breaks its outputSchema: {errors}"


async def output_schema(c: Client, tool: str) -> dict:
    """``tool``'s output schema as the server lists it now."""
    return next(t.output_schema for t in (await c.list_tools()).tools if t.name == tool)


async def ok(c: Client, tool: str, args: dict | None = None, progress: list | None = None) -> dict:
    """Call ``tool``; it must succeed, its structured content valid against the tool's
    output schema. Returns the structured content."""

    async def cb(done: float, total: float | None, message: str | None) -> None:
        if progress is not None:
            progress.append((done, total, message))

    r = await c.call_tool(tool, args or {}, progress_callback=cb)
    assert not r.is_error, f"{tool}({args}) failed: {r.content[0].text}"
    assert r.structured_content is not None
    check_output(await output_schema(c, tool), r.structured_content, tool)
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
