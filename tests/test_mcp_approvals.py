"""Approval a model cannot forge: on a require_approval cluster a destructive plan is
applied through MCP only after a human ran `raft-manager approve PLAN_ID` at a terminal
(driven here through a real pseudo-terminal), once, before the plan expires."""

from __future__ import annotations

import json
import subprocess

import pytest
from manager_helpers import STEADY, audit_lines, leader_of, local_cluster
from mcp_helpers import BIN, approve_at_terminal, err, mcp_config, ok, with_client

from mcp_server.core.config import state_dir
from mcp_server.server import build_server

pytestmark = pytest.mark.processes


def approvals(tmp_path, outcome: str) -> list[dict]:
    return [
        x for x in audit_lines(tmp_path) if x["operation"] == "approve" and x["outcome"] == outcome
    ]


def test_destructive_plan_needs_an_out_of_band_approval(tmp_path, state):
    # Plans are bound to the term: elections after 1-2 s, not 200-400 ms, so a loaded
    # machine does not start one between a dry run and its apply.
    with local_cluster(tmp_path / "c", election_ticks=STEADY) as lc:
        cfg = mcp_config(
            tmp_path,
            {
                "prod": {"dir": str(lc.dir), "mode": "production"},  # require_approval by default
                "gated": {"dir": str(lc.dir), "mode": "sandbox", "require_approval": True},
            },
            default="prod",
        )
        server = build_server(str(cfg))
        leader = leader_of(lc)
        a, b = [n for n in ("n1", "n2", "n3") if n != leader]

        async def plan_and_ask(c, target: str) -> str:
            plan = await ok(c, "elect_leader", {"target": target, "dry_run": True})
            assert plan["safe"] and plan["requires_approval"]
            text = await err(
                c,
                "elect_leader",
                {"target": target, "plan_id": plan["plan_id"]},
                "needs a human's approval",
                f"`raft-manager --config {cfg} approve {plan['plan_id']}`",  # this server's
                "cannot be approved through MCP",
            )
            assert "refused" in text
            return plan["plan_id"]

        async def step1(c):
            listed = (await ok(c, "list_clusters"))["clusters"]
            assert {x["name"]: x["require_approval"] for x in listed} == {
                "prod": True,
                "gated": True,
            }
            # No tool approves: the only way is a human at a terminal.
            assert not any("approv" in t.name for t in (await c.list_tools()).tools)
            # A sandbox cluster with require_approval refuses a one-step destructive change.
            await err(
                c,
                "elect_leader",
                {"cluster": "gated", "target": a},
                "requires a human's approval",
                "dry_run=true",
            )
            return await plan_and_ask(c, a)

        pid = with_client(server, step1)
        assert approvals(tmp_path, "requested")[-1]["plan_id"] == pid

        # Without a terminal, or from under the MCP server, approve refuses.
        p = subprocess.run(
            [str(BIN / "raft-manager"), "--config", str(cfg), "approve", pid],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 1 and "needs a terminal" in p.stderr, p.stderr
        code, out = approve_at_terminal(cfg, pid, None, env={"RAFT_MANAGER_VIA_MCP": "1"})
        assert code == 1 and "runs under the MCP server" in out, out

        # Declined at the terminal: audited, and still refused through MCP.
        code, out = approve_at_terminal(cfg, pid, "n")
        assert code == 1 and "hands leadership" in out and "[y/N]" in out, out
        assert approvals(tmp_path, "declined")[-1]["plan_id"] == pid

        async def still_refused(c):
            await err(c, "elect_leader", {"target": a, "plan_id": pid}, "needs a human's approval")

        with_client(server, still_refused)

        # Approved: applied once; the same plan id again is refused.
        code, out = approve_at_terminal(cfg, pid, "y")
        assert code == 0 and f"approved {pid}" in out, out
        line = approvals(tmp_path, "approved")[-1]
        assert line["plan_id"] == pid and line["arguments"] == {"operation": "elect_leader"}

        async def apply(c):
            e = await ok(c, "elect_leader", {"target": a, "plan_id": pid})
            assert e["leader"] == a and e["previous_leader"] == leader
            await err(c, "elect_leader", {"target": a, "plan_id": pid}, "unknown plan id")
            # An approval binds one plan: a new plan (new term and leader) needs its own.
            return await plan_and_ask(c, b)

        pid2 = with_client(server, apply)
        assert pid2 != pid
        assert not (state_dir() / "plans" / "approvals" / f"{pid}.json").exists()

        # Approved, but the plan expires before it is applied: refused, audited as expired.
        code, _ = approve_at_terminal(cfg, pid2, "y")
        assert code == 0
        for path in (
            state_dir() / "plans" / f"{pid2}.json",
            state_dir() / "plans" / "approvals" / f"{pid2}.json",
        ):
            doc = json.loads(path.read_text())
            doc.get("plan", doc)["expires_at"] = "2020-01-01T00:00:00Z"
            path.write_text(json.dumps(doc))

        async def expired(c):
            await err(c, "elect_leader", {"target": b, "plan_id": pid2}, "expired")
            assert (await ok(c, "cluster_status"))["leader"] == a

        with_client(server, expired)
        assert approvals(tmp_path, "expired")[-1]["plan_id"] == pid2
