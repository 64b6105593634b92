"""The chaos MCP tool in-process (``Client(server)``): a short run on a local sandbox
cluster answers a clean ChaosVerdict with progress along the way; production is refused
before anything runs; the tool is annotated destructive (``--disable-destructive`` hides
it: test_mcp_tools.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from manager_helpers import local_cluster
from mcp_helpers import err, mcp_config, ok, with_client

from mcp_server.chaos import ChaosVerdict
from mcp_server.local import LocalCluster
from mcp_server.server import build_server

pytestmark = [pytest.mark.processes, pytest.mark.slow]


def test_chaos_tool_runs_a_short_sandbox_run_with_progress(tmp_path, state):
    d = tmp_path / "lab"
    with local_cluster(d) as lc:
        cfg = mcp_config(
            tmp_path,
            {
                "lab": {"dir": str(d), "mode": "sandbox"},
                "prod": {"endpoints": [lc.nodes[0].api_address], "mode": "production"},
            },
            default="lab",
        )
        progress: list = []

        async def body(c):
            verdict = await ok(
                c,
                "chaos",
                {"duration_s": 15, "seed": 3, "nemesis": ["kill", "pause", "transfer"]},
                progress,
            )
            refused = await err(
                c, "chaos", {"cluster": "prod", "duration_s": 5}, "refused", "production"
            )
            return verdict, refused

        doc, refused = with_client(build_server(str(cfg)), body)
        v = ChaosVerdict.model_validate(doc)
        assert v.ok and v.linearizable and v.consistent is True, (v.anomalies, v.logs)
        assert v.kind == "raft_core" and v.seed == 3 and v.cluster == str(d)
        assert sum(v.faults.values()) >= 1, v.fault_events
        assert v.counts.operations > 50
        assert Path(v.timeline_path).exists() and Path(v.history_path).exists()
        assert all(lc.alive(n) for n in LocalCluster.load(d).nodes)  # left running
        # progress: monotonic counts, the faults and the phases in the messages
        assert len(progress) >= 3
        assert [p[0] for p in progress] == sorted(p[0] for p in progress)
        text = " ".join(p[2] or "" for p in progress)
        assert "fault steps" in text and "converge" in text
        assert "next:" in refused
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"operation": "chaos"' in audit.replace('":"', '": "')
