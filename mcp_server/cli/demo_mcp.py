"""The demo's last act: what an agent sees. A real MCP client spawns ``raft-manager-mcp``
over stdio against the demo cluster and makes the calls an agent would: status, a
health check, a planned then applied membership change, an unsafe request refused with
its reason, a leadership transfer, and verification. Each call becomes one narrated
line: the call, and a one-line summary of its structured result (or of its error).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import StdioServerParameters
from mcp.client import Client

# (tool, ok, one-line summary of the arguments and the answer, seconds)
Report = Callable[[str, bool, str, float], None]


def server_command() -> tuple[str, list[str]]:
    """The installed ``raft-manager-mcp`` beside this Python, else on PATH, else ``-m``."""
    beside = Path(sys.executable).parent / "raft-manager-mcp"
    found = str(beside) if beside.exists() else shutil.which("raft-manager-mcp")
    return (found, []) if found else (sys.executable, ["-m", "mcp_server.server"])


def _summary(tool: str, doc: dict[str, Any]) -> str:
    if tool == "cluster_status":
        return (
            f"leader {doc['leader']}, term {doc['term']}, voters {','.join(doc['voters'])}, "
            f"learners {','.join(doc['learners']) or '-'}, {len(doc['warnings'])} warnings"
        )
    if tool == "health_check":
        verdict = "safe" if doc["safe"] else f"not safe: {'; '.join(doc['reasons'])}"
        return f"healthy={doc['healthy']}, {doc['operation']} {verdict}"
    if tool == "change_membership" and not doc["applied"]:
        steps = "; ".join(s["detail"] for s in doc["steps"])
        return f"plan {doc['plan_id']} safe={doc['safe']}: {steps}"
    if tool == "change_membership":
        voters, learners = doc["voters_after"], doc["learners_after"]
        return f"applied: voters {','.join(voters)}, learners {','.join(learners)}"
    if tool == "elect_leader":
        return f"{doc['previous_leader']} -> {doc['leader']} (term {doc['term']}, {doc['method']})"
    if tool == "verify_consistency":
        return (
            f"consistent={doc['consistent']}: {len(doc['checked'])} members agree at index "
            f"{doc['common_index']}"
        )
    return json.dumps(doc)[:120]


def run_session(cluster_dir: Path, report: Report, new_node: str = "n5") -> None:
    """Drive the demo cluster through MCP; each call is reported, ok when it went as
    expected (the unsafe request must be refused)."""
    config = cluster_dir / "mcp-clusters.yaml"
    config.write_text(json.dumps({"clusters": {"demo": {"dir": str(cluster_dir)}}}))
    command, args = server_command()
    params = StdioServerParameters(
        command=command, args=[*args, "--config", str(config)], env=dict(os.environ)
    )

    async def call(c: Client, tool: str, arguments: dict, expect_error: bool = False) -> dict:
        given = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
        shown = f"({given}): " if given else ""
        t0 = time.monotonic()
        r = await c.call_tool(tool, arguments)
        took = time.monotonic() - t0
        if r.is_error:
            text = r.content[0].text.removeprefix(f"Error executing tool {tool}: ")
            report(tool, expect_error, shown + text.splitlines()[0], took)
            return {}
        doc = r.structured_content or {}
        report(tool, not expect_error, shown + _summary(tool, doc), took)
        return doc

    async def session() -> None:
        async with Client(params) as c:
            st = await call(c, "cluster_status", {})
            await call(c, "health_check", {"operation": "change_membership"})
            plan = await call(
                c, "change_membership", {"action": "add_learner", "node_id": new_node}
            )
            if plan.get("plan_id"):
                await call(
                    c,
                    "change_membership",
                    {
                        "action": "add_learner",
                        "node_id": new_node,
                        "dry_run": False,
                        "plan_id": plan["plan_id"],
                    },
                )
            await call(c, "elect_leader", {"target": new_node}, expect_error=True)
            target = next(
                (m["id"] for m in st.get("members", []) if m["voter"] and m["id"] != st["leader"]),
                None,
            )
            if target:
                await call(c, "elect_leader", {"target": target})
            await call(c, "verify_consistency", {})

    anyio.run(session)
