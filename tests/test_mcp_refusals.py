"""The manager's refusal rules, tried through MCP: each is a tool error that says why
and what to do next, nothing changes, and the refusal is audited."""

from __future__ import annotations

import json
import threading

import pytest
from manager_helpers import (
    audit_lines,
    leader_of,
    local_cluster,
    make_manager,
    node_api,
    node_status,
    set_faults,
    spare_address,
    wait_until,
)
from mcp_helpers import err, mcp_config, ok, with_client
from proc_helpers import http_client

from mcp_server.server import build_server

pytestmark = pytest.mark.processes


def last_refusal(tmp_path) -> dict:
    line = audit_lines(tmp_path)[-1]
    assert line["outcome"] == "refused", line
    return line


def test_quorum_lag_and_election_refusals(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc:
        cfg = mcp_config(tmp_path, {"t": {"dir": str(lc.dir), "mode": "sandbox"}})
        leader = leader_of(lc)
        a, b = [n for n in ("n1", "n2", "n3") if n != leader]

        async def body(c):
            # A learner whose process does not run lags: promoting it is refused.
            with make_manager(lc.dir, tmp_path / "m") as mgr:
                mgr.adapter.add_learner("n9", spare_address(lc), None)
            await ok(
                c, "replicate", {"entries": [{"key": f"k{i}", "value": "v"} for i in range(15)]}
            )
            await err(
                c,
                "change_membership",
                {"action": "promote", "node_id": "n9", "dry_run": False},
                "refused",
                "cannot promote a lagging learner",
                "entries behind",
                "next:",
            )
            assert last_refusal(tmp_path)["operation"] == "change_membership"
            await err(c, "elect_leader", {"target": "n9"}, "n9 is a learner, not a voter")
            await err(c, "elect_leader", {"target": "n7"}, "n7 is not a voter")
            await ok(
                c, "change_membership", {"action": "remove", "node_id": "n9", "dry_run": False}
            )

            # A member down: removing another voter would break quorum; a dry run says so.
            lc.kill(b)
            await err(c, "elect_leader", {"target": b}, f"{b} is unreachable")
            await err(
                c,
                "change_membership",
                {"action": "remove", "node_id": a, "dry_run": False},
                f"removing {a} would leave 1 available voter",
                "fewer than its quorum of 2",
            )
            plan = await ok(c, "change_membership", {"action": "remove", "node_id": a})
            assert not plan["safe"] and plan["reasons"]
            await err(
                c,
                "change_membership",
                {"action": "remove", "node_id": a, "dry_run": False, "plan_id": plan["plan_id"]},
                "fewer than its quorum",
            )
            assert sorted((await ok(c, "cluster_status"))["voters"]) == ["n1", "n2", "n3"]
            # Two voters down: no election can succeed.
            lc.kill(a)
            wait_until(lambda: node_status(lc, leader)["role"] != "leader", 10)
            await err(c, "elect_leader", {}, "quorum lost")
            assert last_refusal(tmp_path)["operation"] == "elect_leader"

        with_client(build_server(str(cfg)), body)


def test_change_while_another_is_in_flight_or_joint_is_refused(tmp_path, state):
    # Slow elections (1-2 s) so a 300 ms delay on the leader's traffic keeps it leading
    # while each configuration change takes ~1 s to commit.
    with local_cluster(tmp_path / "c", election_ticks=50) as lc:
        cfg = mcp_config(tmp_path, {"t": {"dir": str(lc.dir), "mode": "sandbox"}})
        leader = leader_of(lc)
        set_faults(lc, leader, {"delay_ms": 300})
        url = f"{node_api(lc, leader)}/v1/admin/membership"

        def change_in_background(body: dict) -> threading.Thread:
            def post() -> None:
                with http_client(timeout=15) as h:
                    h.post(url, json=body)

            t = threading.Thread(target=post)
            t.start()
            return t

        async def in_flight(c):
            wait_until(
                lambda: (s := node_status(lc, leader))["pending_conf_index"] > s["applied_index"],
                5,
                0.01,
            )
            await err(
                c,
                "change_membership",
                {
                    "action": "add_learner",
                    "node_id": "n8",
                    "peer_address": spare_address(lc, 1),
                    "dry_run": False,
                },
                "another membership change is in flight",
            )

        async def joint(c):
            wait_until(lambda: node_status(lc, leader)["joint"], 5, 0.01)
            await err(
                c,
                "change_membership",
                {"action": "remove", "node_id": "n9", "dry_run": False},
                "joint configuration",
            )

        server = build_server(str(cfg))
        for body, check in (
            ({"action": "add_learner", "id": "n9", "peer_address": spare_address(lc)}, in_flight),
            ({"action": "promote", "id": "n9"}, joint),
        ):
            t = change_in_background(body)
            try:
                with_client(server, check)
            finally:
                t.join()
        assert last_refusal(tmp_path)["operation"] == "change_membership"
        set_faults(lc, leader, {"clear": True})


def test_elect_refuses_lagging_and_cut_off_targets(tmp_path, state):
    # Elections after 2-4 s, so a follower whose traffic is delayed 1.5 s keeps following.
    with local_cluster(tmp_path / "c", election_ticks=100) as lc:
        cfg = mcp_config(tmp_path, {"t": {"dir": str(lc.dir), "mode": "sandbox"}})
        leader = leader_of(lc)
        slow, cut = [n for n in ("n1", "n2", "n3") if n != leader]

        async def body(c):
            set_faults(lc, slow, {"delay_ms": 1500})
            await ok(
                c, "replicate", {"entries": [{"key": f"k{i}", "value": "v"} for i in range(20)]}
            )
            await err(c, "elect_leader", {"target": slow}, f"{slow} is lagging", "entries behind")
            set_faults(lc, slow, {"clear": True})
            await ok(c, "inject_fault", {"kind": "partition", "nodes": [cut]})
            wait_until(lambda: node_status(lc, cut)["role"] != "follower", 10)
            await err(c, "elect_leader", {"target": cut}, f"{cut} does not follow leader")
            assert (await ok(c, "cluster_status"))["leader"] == leader
            await ok(c, "inject_fault", {"kind": "heal", "nodes": []})

        with_client(build_server(str(cfg)), body)


def test_policy_refusals_through_mcp(tmp_path, state, monkeypatch):
    token = "tok-" + "3c2b1a0f9e8d"
    (tmp_path / "token").write_text(token + "\n")
    monkeypatch.setenv("TEST_RAFT_TOKEN", token)
    with local_cluster(tmp_path / "c", api_token_file=str(tmp_path / "token")) as lc:
        d = str(lc.dir)
        cfg = mcp_config(
            tmp_path,
            {
                "prod": {"dir": d, "mode": "production", "token_env": "TEST_RAFT_TOKEN"},
                "ro": {"dir": d, "mode": "sandbox", "read_only": True},
                "allow": {"dir": d, "mode": "sandbox", "allowed_operations": ["status", "get"]},
            },
            default="prod",
        )

        async def body(c):
            await err(
                c,
                "inject_fault",
                {"kind": "kill", "nodes": ["n1"]},
                "production",
                "fault injection is refused",
            )
            await err(
                c,
                "replicate",
                {"entries": [{"key": "k", "value": "v"}]},
                "needs a plan id",
                "next:",
            )
            await err(
                c, "snapshot", {}, "needs a plan id",
                f"`raft-manager --config {cfg} --cluster prod snapshot --dry-run`",
            )  # fmt: skip
            await err(c, "recover_node", {"node_id": "n1"}, "needs a plan id")
            await err(c, "elect_leader", {"target": "n1"}, "needs a plan id")
            await err(
                c,
                "change_membership",
                {"action": "remove", "node_id": "n3", "dry_run": False},
                "needs a plan id",
            )
            assert (await ok(c, "cluster_status"))["mode"] == "production"  # reads need no plan

            await err(
                c,
                "replicate",
                {"cluster": "ro", "entries": [{"key": "k", "value": "w"}]},
                "read-only",
            )
            await err(c, "elect_leader", {"cluster": "ro"}, "read-only")
            await err(c, "recover_node", {"cluster": "ro", "node_id": "n1"}, "read-only")
            assert (
                await ok(
                    c, "change_membership", {"cluster": "ro", "action": "remove", "node_id": "n3"}
                )
            )["safe"]

            await err(
                c,
                "verify_consistency",
                {"cluster": "allow"},
                "not in the allowed_operations",
                "this cluster allows only",
            )
            await err(
                c,
                "replicate",
                {"cluster": "allow", "entries": [{"key": "k", "value": "x"}]},
                "allowed_operations",
            )
            await ok(c, "read", {"cluster": "allow", "key": "k"})
            # The API token never appears in an answer, a resource or the audit log.
            seen = [
                json.dumps(await ok(c, tool))
                for tool in ("cluster_status", "health_check", "verify_consistency")
            ]
            seen.append((await c.read_resource("raft://audit")).contents[0].text)
            seen.append((tmp_path / "audit.jsonl").read_text())
            assert not any(token[4:] in text for text in seen)

        with_client(build_server(str(cfg)), body)
        refusals = [x for x in audit_lines(tmp_path) if x["outcome"] == "refused"]
        assert len(refusals) == 11
        with make_manager(lc.dir, tmp_path / "m") as mgr:
            assert sorted(mgr.status().voters) == ["n1", "n2", "n3"]  # nothing changed
