"""The MCP tools on a real NATS JetStream cluster: status with its Raft groups (paged,
one group by name), KV replicate/read, a step-down of a stream's leader, a refused
elect to a named server (a tool error, audited), per-stream verify, a stream backup,
process faults, and the approval rule in production."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from mcp_helpers import err, mcp_config, ok, with_client
from nats_helpers import nats_cluster

from mcp_server.server import build_server

pytestmark = pytest.mark.processes

KV = "stream:KV_raft-manager"


async def healthy(c, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not (h := await ok(c, "health_check"))["healthy"]:
        assert time.monotonic() < deadline, f"not healthy within {within_s}s: {h['reasons']}"
        await anyio.sleep(0.2)


def test_tools_on_a_nats_cluster(tmp_path, state):
    with nats_cluster(tmp_path / "nats") as lc:
        base = {
            "kind": "nats",
            "servers": lc.client_urls(),
            "monitor": lc.monitor_urls(),
            "username": "sys",
            "password_file": str(lc.password_file),
        }
        cfg = mcp_config(
            tmp_path,
            {"js": {**base, "dir": str(lc.dir)}, "prod": {**base, "mode": "production"}},
            default="js",
        )

        async def body(c):
            tools = {t.name: t for t in (await c.list_tools()).tools}
            for name in ("cluster_status", "elect_leader", "verify_consistency", "snapshot"):
                assert "group" in tools[name].input_schema["properties"], name
            await ok(c, "replicate", {"entries": [{"key": "k", "value": "v"}]})
            assert (await ok(c, "read", {"key": "k"}))["value"] == "v"
            st = await ok(c, "cluster_status")
            assert st["kind"] == "nats" and st["leader"] and st["groups"][0]["name"] == "meta"
            assert KV in [g["name"] for g in st["groups"]] and st["groups_total"] == 2
            one = await ok(c, "cluster_status", {"group": KV})
            assert one["group"] == KV and one["leader"]
            page = await ok(c, "cluster_status", {"group_offset": 1})
            assert [g["name"] for g in page["groups"]] == [KV]
            el = await ok(c, "elect_leader", {"group": KV})
            assert el["method"] == "step_down" and el["leader"] != one["leader"]
            other = next(v for v in st["voters"] if v != st["leader"])
            await err(c, "elect_leader", {"target": other}, "placement")
            audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
            assert audit[-1]["operation"] == "elect_leader" and audit[-1]["outcome"] == "refused"
            v = await ok(c, "verify_consistency", {"group": KV})
            assert v["consistent"] is True
            snap = await ok(c, "snapshot", {"group": KV})
            assert snap["snapshots"][0]["ok"]
            f = await ok(c, "inject_fault", {"kind": "stop", "nodes": [other]})
            assert f["affected"] == [other]
            await ok(c, "inject_fault", {"kind": "continue", "nodes": [other]})
            await healthy(c)  # the resumed server is current again before the next plan
            # Production NATS: a destructive plan waits for a human's approval.
            plan = await ok(c, "elect_leader", {"cluster": "prod", "dry_run": True})
            assert plan["requires_approval"] and plan["safe"]
            await err(
                c,
                "elect_leader",
                {"cluster": "prod", "plan_id": plan["plan_id"]},
                "needs a human's approval",
            )

        with_client(build_server(str(cfg)), body)
