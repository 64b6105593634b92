"""`raft-manager etcd up|down` and the CLI on the etcd cluster it writes into clusters.yaml."""

from __future__ import annotations

import pytest
import yaml
from etcd_helpers import BINARIES, require
from testkit import cli_json, launched_cluster

from mcp_server.local.etcd import EtcdLocalCluster

pytestmark = pytest.mark.processes


def test_etcd_up_status_elect_plan_verify_down(tmp_path, state, capsys, monkeypatch):
    binary = require(BINARIES[-1][1] if BINARIES else None)
    monkeypatch.setenv("ETCD_BIN", binary)
    cfg, d = tmp_path / "clusters.yaml", tmp_path / "etcd"
    cfg.write_text(yaml.safe_dump({"clusters": {"other": {"kind": "raft_core", "dir": "/x"}}}))
    with launched_cluster(
        lambda base: base,  # the CLI starts it (`up`); the block and the teardown are ours
        lambda: EtcdLocalCluster.load(d).down(grace_s=2.0),
    ) as base:
        fast = ("--heartbeat-ms", "50", "--election-ms", "500")
        code, up = cli_json(
            capsys,
            "etcd",
            "up",
            "--dir",
            str(d),
            "--config",
            str(cfg),
            "--base-port",
            str(base),
            *fast,
        )
        assert code == 0 and up["action"] == "up" and up["leader"] in ("n1", "n2", "n3")
        entry = yaml.safe_load(cfg.read_text())["clusters"]
        assert "other" in entry  # the rest of the file is kept
        assert entry["etcd"] == {
            "kind": "etcd",
            "endpoints": [f"http://127.0.0.1:{base + 101 + i}" for i in range(3)],
            "dir": str(d),
            "mode": "sandbox",
        }
        sel = ("--config", str(cfg), "--cluster", "etcd")
        code, st = cli_json(capsys, *sel, "status")
        assert code == 0 and st["kind"] == "etcd" and st["voters"] == ["n1", "n2", "n3"]
        target = next(v for v in st["voters"] if v != st["leader"])
        code, el = cli_json(capsys, *sel, "elect", "--to", target)
        assert code == 0 and el["leader"] == target and el["previous_leader"] == st["leader"]
        code, plan = cli_json(capsys, *sel, "member", "add-learner", "n4", "--dry-run")
        assert code == 0 and plan["safe"] and plan["plan_id"].startswith("p-")
        assert [s["action"] for s in plan["steps"]] == [
            "add_learner",
            "start_process",
            "wait_caught_up",
        ]
        code, ver = cli_json(capsys, *sel, "verify")
        assert code == 0 and ver["consistent"] is True
        code, down = cli_json(capsys, "etcd", "down", "--config", str(cfg))
        assert code == 0 and sorted(n["id"] for n in down["nodes"]) == ["n1", "n2", "n3"]
        assert not any(n["running"] for n in down["nodes"])
