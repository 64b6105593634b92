"""The MCP tools on a real etcd cluster: the same tools and models as on raft_core,
process faults that freeze and resume a member, and the approval rule in production."""

from __future__ import annotations

import pytest
from etcd_helpers import binary_params, etcd_cluster, require
from mcp_helpers import err, mcp_config, ok, with_client

from mcp_server.server import build_server

pytestmark = pytest.mark.processes


@pytest.mark.parametrize("binary", binary_params())
def test_tools_on_an_etcd_cluster(tmp_path, state, binary):
    with etcd_cluster(tmp_path / "etcd", require(binary)) as lc:
        cfg = mcp_config(
            tmp_path,
            {
                "e": {"kind": "etcd", "endpoints": lc.endpoints(), "dir": str(lc.dir)},
                "prod": {"kind": "etcd", "endpoints": lc.endpoints(), "mode": "production"},
            },
            default="e",
        )

        async def body(c):
            kinds = (await c.list_tools()).tools
            fault = next(t for t in kinds if t.name == "inject_fault")
            assert {"stop", "continue"} <= set(fault.input_schema["properties"]["kind"]["enum"])
            st = await ok(c, "cluster_status")
            assert st["kind"] == "etcd" and st["leader"] and len(st["voters"]) == 3
            await ok(c, "replicate", {"entries": [{"key": "k", "value": "v"}]})
            assert (await ok(c, "read", {"key": "k"}))["value"] == "v"
            follower = next(m for m in st["voters"] if m != st["leader"])
            f = await ok(c, "inject_fault", {"kind": "stop", "nodes": [follower]})
            assert f["affected"] == [follower] and "SIGSTOP" in f["detail"]
            await ok(c, "inject_fault", {"kind": "continue", "nodes": [follower]})
            await err(
                c,
                "inject_fault",
                {"kind": "partition", "nodes": [follower]},
                "refused",
                "cannot be partitioned",
            )
            # Production etcd: a destructive plan waits for a human's approval.
            plan = await ok(
                c, "elect_leader", {"cluster": "prod", "target": follower, "dry_run": True}
            )
            assert plan["requires_approval"] and plan["safe"]
            await err(
                c,
                "elect_leader",
                {"cluster": "prod", "target": follower, "plan_id": plan["plan_id"]},
                "needs a human's approval",
            )
            v = await ok(c, "verify_consistency")
            assert v["consistent"] is True

        with_client(build_server(str(cfg)), body)
