"""The raft-manager CLI: a few commands as real subprocesses, the rest in-process through
``main([...])``; ``--json`` documents carry the contract fields; exit codes hold; the
demo runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from manager_helpers import leader_of, write_config
from testkit import release_base_port, reserve_base_port

from mcp_server import cli
from mcp_server.adapters.raft_node import RaftNodeAdapter
from mcp_server.local import LocalCluster

pytestmark = pytest.mark.processes

TOKEN = "cli-token-5a4b3c2d1e"


def raft_manager() -> list[str]:
    script = Path(sys.executable).parent / "raft-manager"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mcp_server.cli"]


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*raft_manager(), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture
def env(tmp_path, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("CLI_TEST_TOKEN", TOKEN)
    monkeypatch.delenv("RAFT_MANAGER_CONFIG", raising=False)
    return {**os.environ, "XDG_STATE_HOME": str(state), "CLI_TEST_TOKEN": TOKEN}


def call(capsys, *args: str) -> tuple[int, dict | list, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    assert TOKEN not in out.out and TOKEN not in out.err
    return code, json.loads(out.out) if out.out.strip() else {}, out.err


def test_cli_end_to_end(tmp_path, env, capsys):
    d = tmp_path / "cluster"
    (tmp_path / "token").write_text(TOKEN)
    base = reserve_base_port()
    cfg = write_config(
        tmp_path / "clusters.yaml",
        {
            "t": {"dir": str(d), "mode": "sandbox", "token_env": "CLI_TEST_TOKEN"},
            # Plan-then-apply without a human's approval here; approvals have their own
            # tests (test_mcp_approvals.py).
            "prod": {
                "dir": str(d),
                "mode": "production",
                "token_env": "CLI_TEST_TOKEN",
                "require_approval": False,
            },
        },
        default="t",
        audit_log=str(tmp_path / "audit.jsonl"),
    )
    c = ["--config", str(cfg)]
    up = run(
        [
            "cluster", "up", "--dir", str(d), "--base-port", str(base), "--tick-ms", "20",
            "--allow-fault-injection", "--api-token-file", str(tmp_path / "token"), "--json",
        ],
        env,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        doc = json.loads(up.stdout)
        assert doc["action"] == "up" and doc["leader"] in ("n1", "n2", "n3")
        assert [n["running"] for n in doc["nodes"]] == [True, True, True]
        # DIR/cluster.yaml in the documented shape
        nodes = yaml.safe_load((d / "cluster.yaml").read_text())["nodes"]
        assert [n["id"] for n in nodes] == ["n1", "n2", "n3"]
        assert set(nodes[0]) >= {"id", "peer_address", "api_address", "data_dir", "pid"}
        assert nodes[0]["peer_address"] == f"127.0.0.1:{base + 1}"
        assert nodes[0]["api_address"] == f"127.0.0.1:{base + 101}"

        # status --json as a subprocess: the contract fields, nothing else on stdout
        st = run([*c, "status", "--json"], env)
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        assert status["leader"] and isinstance(status["term"], int)
        assert isinstance(status["warnings"], list)
        assert all({"id", "role", "reachable"} <= set(m) for m in status["members"])
        assert TOKEN not in st.stdout + st.stderr

        # bench --existing: the guarded write load on this cluster (16 clients unless told)
        code, load, _ = call(capsys, *c, "bench", "--existing", "--duration", "1", "--json")
        assert code == 0 and load["clients"] == 16 and load["errors"] == 0, load
        assert load["requests"] > 0 and load["leader"] in ("n1", "n2", "n3")

        # member add-learner --dry-run --json: a plan, not applied
        pl = run([*c, "member", "add-learner", "n4", "--dry-run", "--json"], env)
        assert pl.returncode == 0, pl.stderr
        plan = json.loads(pl.stdout)
        assert plan["plan_id"].startswith("p-") and plan["safe"] is True
        assert plan["reasons"] == [] and [s["action"] for s in plan["steps"]] == [
            "start_process",
            "add_learner",
            "wait_caught_up",
        ]
        assert plan["applied"] is False

        # verify: exit 0 when consistent
        vf = run([*c, "verify", "--json"], env)
        assert vf.returncode == 0 and json.loads(vf.stdout)["consistent"] is True

        # -- in-process for the rest ----------------------------------------------------
        code, h, _ = call(capsys, *c, "health", "--json")
        assert code == 0 and h["healthy"] is True and h["checks"]
        code, h, _ = call(capsys, *c, "health", "--operation", "inject_fault", "--json")
        assert code == 0 and h["safe"] is True
        code, h, _ = call(
            capsys, *c, "--cluster", "prod", "health", "--operation", "fault", "--json"
        )
        assert code == 1  # production: fault injection is never safe

        code, w, _ = call(capsys, *c, "put", "greeting", "hello", "--json")
        assert code == 0 and w["entries"][0]["key"] == "greeting"
        code, r, _ = call(capsys, *c, "get", "greeting", "--json")
        assert code == 0 and (r["key"], r["value"]) == ("greeting", "hello")
        code, r, _ = call(capsys, *c, "get", "nothing", "--stale", "--json")
        assert code == 0 and r["value"] is None

        leader = leader_of(LocalCluster.load(d))
        target = next(n for n in ("n1", "n2", "n3") if n != leader)
        code, e, _ = call(capsys, *c, "elect", "--to", target, "--json")
        assert code == 0 and (e["previous_leader"], e["leader"]) == (leader, target)
        assert isinstance(e["term"], int)

        code, m, _ = call(capsys, *c, "member", "add-learner", "n4", "--json")
        assert code == 0 and m["applied"] is True and m["learners_after"] == ["n4"]
        code, m, _ = call(capsys, *c, "member", "promote", "n4", "--json")
        assert code == 0 and "n4" in m["voters_after"]

        # production: a mutation without a plan id is refused (exit 1, an error document)
        code, err, _ = call(capsys, *c, "--cluster", "prod", "member", "remove", "n4", "--json")
        assert code == 1 and err["error"] == "refused" and "plan id" in err["reason"]
        assert err["next_step"]
        code, p, _ = call(
            capsys, *c, "--cluster", "prod", "member", "remove", "n4", "--dry-run", "--json"
        )
        assert code == 0 and p["safe"]
        code, m, _ = call(
            capsys,
            *c,
            "--cluster",
            "prod",
            "member",
            "remove",
            "n4",
            "--plan-id",
            p["plan_id"],
            "--json",
        )
        assert code == 0 and m["applied"] and "n4" not in m["voters_after"]
        code, err, _ = call(capsys, *c, "--cluster", "prod", "fault", "kill", "n1", "--json")
        assert code == 1 and "fault injection" in err["reason"]

        code, s, _ = call(capsys, *c, "snapshot", "--json")
        assert code == 0 and all(x["ok"] for x in s["snapshots"])

        # kill / start / recover through the launcher and the manager
        code, k, _ = call(capsys, *c, "cluster", "kill", target, "--json")
        assert code == 0 and not next(n for n in k["nodes"] if n["id"] == target)["running"]
        # a sandbox never applies an unsafe plan: exit 1, nothing changed
        other = next(
            n for n in ("n1", "n2", "n3") if n != target and n != leader_of(LocalCluster.load(d))
        )
        code, err, _ = call(capsys, *c, "member", "remove", other, "--json")
        assert code == 1 and err["error"] == "refused" and "quorum" in err["reason"]
        code, h, _ = call(capsys, *c, "health", "--json")
        assert code == 1 and h["healthy"] is False
        code, rc, _ = call(capsys, *c, "recover", target, "--json")
        assert code == 0 and rc["caught_up"] and rc["action"] == "restarted"

        code, f, _ = call(capsys, *c, "fault", "partition", target, "--json")
        assert code == 0 and f["kind"] == "partition"
        code, f, _ = call(capsys, *c, "fault", "heal", "--json")
        assert code == 0 and sorted(f["affected"]) == ["n1", "n2", "n3"]

        code = cli.main([*c, "watch", "--count", "2", "--interval", "0.1", "--json"])
        lines = capsys.readouterr().out.strip().splitlines()
        assert code == 0 and len(lines) == 2 and all(json.loads(x)["leader"] for x in lines)
        code = cli.main([*c, "watch", "--count", "2", "--interval", "0.1"])
        assert code == 0 and "leader" in capsys.readouterr().out

        code, cl, _ = call(capsys, *c, "clusters", "--json")
        assert code == 0 and sorted(x["name"] for x in cl["clusters"]) == ["prod", "t"]
        code, au, _ = call(capsys, *c, "audit", "--tail", "100", "--json")
        outcomes = {x["outcome"] for x in au["entries"]}
        assert outcomes >= {"ok", "refused", "planned"}
        assert TOKEN not in (tmp_path / "audit.jsonl").read_text()

        # verify exit codes: 1 divergent, 2 could not verify
        real = RaftNodeAdapter.state_digest

        def doctored(self, node, at=None):
            d_ = real(self, node, at)
            return d_ if node != target else type(d_)(d_.index, d_.term, "e" * 64, d_.state_hash)

        RaftNodeAdapter.state_digest = doctored  # type: ignore[method-assign]
        try:
            code, v, _ = call(capsys, *c, "verify", "--json")
        finally:
            RaftNodeAdapter.state_digest = real  # type: ignore[method-assign]
        assert code == 1 and v["consistent"] is False
        assert v["divergences"][0]["member"] == target
        # human output too
        assert cli.main([*c, "status"]) == 0
        human = capsys.readouterr().out
        assert "leader" in human and "n1" in human

        leader = leader_of(LocalCluster.load(d))
        for n in ("n1", "n2", "n3"):
            if n != leader:
                call(capsys, *c, "cluster", "kill", n, "--json")
        vf = run([*c, "verify", "--json"], env)
        assert vf.returncode == 2 and json.loads(vf.stdout)["consistent"] is None
    finally:
        down = run(["cluster", "down", "--dir", str(d), "--json"], env)
        release_base_port(base)
    assert down.returncode == 0, down.stderr
    assert not any(n["running"] for n in json.loads(down.stdout)["nodes"])


def test_cli_usage_and_config_errors(tmp_path, env, capsys):
    code, err, _ = call(capsys, "frobnicate", "--json")
    assert code == 2 and err["error"] == "config" and "invalid choice" in err["reason"]
    code, err, _ = call(capsys, "--config", str(tmp_path / "nope.yaml"), "status", "--json")
    assert code == 2 and "cannot read" in err["reason"]
    cfg = write_config(tmp_path / "c.yaml", {"a": {"dir": str(tmp_path / "a")}})
    code, err, _ = call(capsys, "--config", str(cfg), "--cluster", "b", "status", "--json")
    assert code == 2 and "no cluster named 'b'" in err["reason"]
    # a configured local cluster that was never started: the error says how to start it
    code, st, _ = call(capsys, "--config", str(cfg), "status", "--json")
    assert code == 1 and "run `cluster up` first" in st["reason"]
    assert cli.main(["--help"]) == 0
    capsys.readouterr()


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_fresh_state_dir(tmp_path, env):
    base = reserve_base_port()
    try:
        r = run(["demo", "--json", "--base-port", str(base)], env, timeout=120)
    finally:
        release_base_port(base)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    titles = [s["title"] for s in report["steps"]]
    assert titles[0] == "start a 3-node cluster" and titles[-1] == "stop the cluster"
    assert {"watch the failover", "promote n4", "verify consistency"} <= set(titles)
    assert all(s["ok"] for s in report["steps"])
    # Then what an agent sees: a real MCP session over stdio, one step per tool call.
    mcp = [(s["title"], s["result"]) for s in report["steps"] if s["title"].startswith("MCP ")]
    assert [t for t, _ in mcp] == [
        "MCP cluster_status",
        "MCP health_check",
        "MCP change_membership",
        "MCP change_membership",
        "MCP elect_leader",
        "MCP elect_leader",
        "MCP verify_consistency",
    ]
    assert "refused" in mcp[4][1] and "learner" in mcp[4][1]  # the unsafe request
    assert "consistent=True" in mcp[-1][1]
    assert report["seconds"] < 90
    assert "watch the failover" in r.stderr  # narration goes to stderr with --json
    demo_dir = Path(report["dir"])
    assert demo_dir.is_relative_to(tmp_path / "state")
    lc = LocalCluster.load(demo_dir)
    assert not any(lc.alive(n) for n in lc.nodes)
