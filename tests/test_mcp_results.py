"""Results sized for a model (docs/design.md, section 6), on a real 5-node cluster: the
text is one summary line then compact JSON, the structured content is the full
document, fields that do not apply are left out rather than null, and a 5-node
cluster_status text fits its budget."""

from __future__ import annotations

import json
import re

import pytest
from manager_helpers import STEADY, leader_of, local_cluster
from mcp_helpers import check_output, mcp_config, output_schema, with_client

from mcp_server.server import build_server

pytestmark = pytest.mark.processes

STATUS_TEXT_BUDGET = 6_000  # characters of a 5-node cluster_status text
ETCD_ONLY = {"name", "member_id", "peer_urls", "db_size", "revision", "version", "alarms"}


def _nulls(doc, path="") -> list[str]:
    """Paths of null values, except the required fields whose null is an answer."""
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _nulls(v, f"{path}/{k}")]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _nulls(v, f"{path}/{i}")]
    return [path] if doc is None else []


async def answer(c, tool: str, args: dict | None = None) -> tuple[str, str, dict]:
    """The summary line, the JSON line and the structured content of a call that must
    succeed; the structured content valid against the tool's output schema and equal
    to the text's JSON."""
    r = await c.call_tool(tool, args or {})
    assert not r.is_error, r.content[0].text
    assert len(r.content) == 1
    head, _, body = r.content[0].text.partition("\n")
    assert "\n" not in body and json.loads(body) == r.structured_content
    assert body == json.dumps(r.structured_content, separators=(",", ":"))  # compact
    check_output(await output_schema(c, tool), r.structured_content, tool)
    return head, r.content[0].text, r.structured_content


def test_results_open_with_a_summary_line_then_compact_json(tmp_path, state):
    with local_cluster(tmp_path / "c", nodes=5, election_ticks=STEADY) as lc:
        cfg = mcp_config(tmp_path, {"t": {"dir": str(lc.dir), "mode": "sandbox"}})
        leader = leader_of(lc)

        async def body(c):
            head, text, st = await answer(c, "cluster_status")
            assert re.fullmatch(
                rf"leader {leader}, term {st['term']}; 5/5 voters up; "
                rf"commit {st['commit_index']}; no warnings",
                head,
            ), head
            assert len(text) <= STATUS_TEXT_BUDGET, f"5-node status text is {len(text)} chars"
            assert len(st["members"]) == 5
            for m in st["members"]:  # raft_core: etcd's fields do not apply
                assert not ETCD_ONLY & set(m), m
                assert m["process"] == "running" and m["pid"] > 0  # local: they do
            assert _nulls(st) == [], "null fields should be left out"

            head, _, h = await answer(c, "health_check", {"operation": "elect_leader"})
            assert head == f"healthy; elect_leader is safe; leader {leader}, term {st['term']}"
            assert h["safe"] is True

            head, _, w = await answer(c, "replicate", {"entries": [{"key": "k", "value": "v"}]})
            last = w["entries"][-1]
            assert (
                head
                == f"1 entry committed by {leader}, last index {last['index']} term {last['term']}"
            )
            head, _, r = await answer(c, "read", {"key": "k"})
            assert head.startswith('k = "v" (linearizable, served by ')
            head, _, r = await answer(c, "read", {"key": "nope"})
            assert head.startswith("nope = absent") and r["value"] is None  # a null answer

            target = next(m["id"] for m in st["members"] if m["id"] != leader)
            head, _, plan = await answer(c, "elect_leader", {"target": target, "dry_run": True})
            assert head == (
                f"planned leadership move to {target}, safe; apply with plan_id {plan['plan_id']}"
            )
            assert plan["outcome"] == "planned" and "previous_leader" not in plan
            head, _, e = await answer(
                c, "elect_leader", {"plan_id": plan["plan_id"], "target": target}
            )
            assert head.startswith(f"leader {target}, term {e['term']} (was {leader}, term ")
            assert e["outcome"] == "applied" and e["plan_id"] == plan["plan_id"]
            assert "voters" not in e  # the plan's own fields stay with the plan

            head, _, v = await answer(c, "verify_consistency")
            assert head == f"consistent at index {v['common_index']} across 5 member(s)"

            head, _, cl = await answer(c, "list_clusters")
            assert head.startswith(f"config {cfg}; default cluster t; state dir {state}")
            assert cl["state_dir"] == str(state / "agent-raft-manager")

        with_client(build_server(str(cfg)), body)
