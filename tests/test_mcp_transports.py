"""The installed `raft-manager-mcp` over real transports: a stdio session a client
spawns (its transcript is kept for the README), and streamable HTTP with the bearer
token rule."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from manager_helpers import STEADY, local_cluster
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_helpers import BIN, mcp_config, ok

pytestmark = pytest.mark.processes

TRANSCRIPT = os.environ.get("RAFT_MANAGER_MCP_TRANSCRIPT")


def _abridge(doc: dict) -> dict:
    keep = (
        "outcome", "leader", "term", "warnings", "key", "value", "consistency",
        "previous_leader", "method", "plan_id", "safe", "reasons", "applied", "voters_after",
        "learners_after", "consistent", "common_index", "divergences", "entries", "steps",
    )  # fmt: skip
    out = {k: doc[k] for k in keep if k in doc}
    if "members" in doc:
        out["members"] = [f"{m['id']}:{m['role']}" for m in doc["members"]]
    if "steps" in out:
        out["steps"] = [s["detail"] for s in out["steps"]]
    return out


def test_stdio_session_against_a_real_cluster(tmp_path, state):
    lines: list[str] = []
    # Plans are bound to the term: elections after 1-2 s, not 200-400 ms, so a loaded
    # machine does not start one between a dry run and its apply.
    with local_cluster(tmp_path / "c", election_ticks=STEADY) as lc:
        cfg = mcp_config(tmp_path, {"local": {"dir": str(lc.dir), "mode": "sandbox"}})
        params = StdioServerParameters(
            command=str(BIN / "raft-manager-mcp"),
            args=["--config", str(cfg)],
            env={**os.environ},
        )

        async def call(c, tool: str, args: dict) -> dict:
            doc = await ok(c, tool, args)  # checked against the tool's output schema
            lines.append(f"> {tool} {json.dumps(args)}")
            lines.append(f"< {json.dumps(_abridge(doc))}")
            return doc

        async def main() -> None:
            async with Client(params) as c:
                names = sorted(t.name for t in (await c.list_tools()).tools)
                lines.append(f"# tools: {', '.join(names)}")
                st = await call(c, "cluster_status", {})
                await call(c, "replicate", {"entries": [{"key": "greeting", "value": "hello"}]})
                assert (await call(c, "read", {"key": "greeting"}))["value"] == "hello"
                target = next(
                    m["id"] for m in st["members"] if m["voter"] and m["id"] != st["leader"]
                )
                e = await call(c, "elect_leader", {"target": target})
                assert e["leader"] == target
                plan = await call(
                    c, "change_membership", {"action": "add_learner", "node_id": "n4"}
                )
                assert plan["safe"] and not plan["applied"]
                done = await call(
                    c,
                    "change_membership",
                    {
                        "action": "add_learner",
                        "node_id": "n4",
                        "dry_run": False,
                        "plan_id": plan["plan_id"],
                    },
                )
                assert done["applied"] and "n4" in done["learners_after"]
                r = await c.call_tool(
                    "change_membership", {"action": "remove", "node_id": "n9", "dry_run": False}
                )
                assert r.is_error
                lines.append(
                    '> change_membership {"action": "remove", "node_id": "n9", "dry_run": false}'
                )
                lines.append(f"< tool error: {r.content[0].text.splitlines()[0]}")
                v = await call(c, "verify_consistency", {})
                assert v["consistent"] is True

        anyio.run(main)
    if TRANSCRIPT:
        Path(TRANSCRIPT).write_text("\n".join(lines) + "\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_streamable_http_and_the_token_rule(tmp_path, state):
    cfg = mcp_config(tmp_path, {"t": {"dir": str(tmp_path / "c"), "mode": "sandbox"}})
    env = {k: v for k, v in os.environ.items() if k != "RAFT_MANAGER_MCP_TOKEN"}
    # Bound beyond loopback without a token: refuses to start.
    p = subprocess.run(
        [str(BIN / "raft-manager-mcp"), "--config", str(cfg), "--http", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2 and "without a bearer token" in p.stderr, p.stderr
    assert p.stdout == ""

    token = "tok-" + "5e1f0a9b8c7d"
    (tmp_path / "token").write_text(token + "\n")
    host = _non_loopback_address() or "0.0.0.0"
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "raft-manager-mcp"), "--config", str(cfg), "--http", "--host", "0.0.0.0",
         "--port", str(port), "--token-file", str(tmp_path / "token")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/mcp"
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.post(url, json={}, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = httpx.post(url, json={}, headers={"Authorization": "Bearer wrong"}, timeout=2)
        assert r.status_code == 401

        async def main() -> list[str]:
            # The SDK's HTTP transport takes an httpx2 client (its own httpx fork).
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})

            async with http, Client(streamable_http_client(url, http_client=http)) as c:
                tools = (await c.list_tools()).tools
                cl = await ok(c, "list_clusters")
                assert cl["clusters"][0]["name"] == "t"
                return [t.name for t in tools]

        assert "change_membership" in anyio.run(main)
    finally:
        proc.terminate()
        out, errs = proc.communicate(timeout=10)
    assert token not in (out + errs).decode()


def test_raft_manager_mcp_command_takes_the_same_flags(tmp_path, state):
    cfg = mcp_config(tmp_path, {"t": {"dir": str(tmp_path / "c"), "mode": "sandbox"}})
    params = StdioServerParameters(
        command=str(BIN / "raft-manager"),
        args=["--config", str(cfg), "mcp", "--read-only"],
        env={**os.environ},
    )

    async def main() -> None:
        async with Client(params) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert names == {
                "list_clusters",
                "cluster_status",
                "health_check",
                "read",
                "verify_consistency",
            }
            r = await c.call_tool("inject_fault", {"kind": "kill", "nodes": ["n1"]})
            assert r.is_error and "--read-only" in r.content[0].text
            await ok(c, "list_clusters")

    anyio.run(main)
