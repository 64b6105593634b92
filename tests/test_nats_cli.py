"""`raft-manager nats up|down` and the CLI on the NATS cluster it writes into
clusters.yaml: status with its Raft groups (and --group), put/get, a step-down, a
refused elect --to (exit status and audit line), verify of the KV stream, down."""

from __future__ import annotations

import pytest
import yaml
from nats_helpers import require
from testkit import cli_json, launched_cluster

from mcp_server.core.audit import AuditLog
from mcp_server.core.config import state_dir
from mcp_server.local.nats import NatsLocalCluster

pytestmark = pytest.mark.processes


def test_nats_up_status_put_elect_verify_down(tmp_path, state, capsys):
    require()
    cfg, d = tmp_path / "clusters.yaml", tmp_path / "nats"
    cfg.write_text(yaml.safe_dump({"clusters": {"other": {"kind": "raft_core", "dir": "/x"}}}))
    with launched_cluster(
        lambda base: base,  # the CLI starts it (`up`); the block and the teardown are ours
        lambda: NatsLocalCluster.load(d).down(grace_s=2.0),
    ) as base:
        up_args = ("nats", "up", "--dir", str(d), "--config", str(cfg), "--base-port", str(base))
        code, up = cli_json(capsys, *up_args)
        assert code == 0 and up["action"] == "up" and up["leader"] in ("n1", "n2", "n3")
        entries = yaml.safe_load(cfg.read_text())["clusters"]
        assert "other" in entries  # the rest of the file is kept
        assert entries["nats"] == {
            "kind": "nats",
            "servers": [f"nats://127.0.0.1:{base + 1 + i}" for i in range(3)],
            "monitor": [f"http://127.0.0.1:{base + 101 + i}" for i in range(3)],
            "username": "sys",
            "password_file": str(d / "sys.password"),
            "dir": str(d),
            "mode": "sandbox",
        }
        sel = ("--config", str(cfg), "--cluster", "nats")
        code, _ = cli_json(capsys, *sel, "put", "color", "blue")
        assert code == 0
        code, got = cli_json(capsys, *sel, "get", "color")
        assert code == 0 and got["value"] == "blue"
        code, st = cli_json(capsys, *sel, "status")
        assert code == 0 and st["kind"] == "nats" and st["voters"] == ["n1", "n2", "n3"]
        assert [g["name"] for g in st["groups"]] == ["meta", "stream:KV_raft-manager"]
        code, one = cli_json(capsys, *sel, "status", "--group", "stream:KV_raft-manager")
        assert code == 0 and one["group"] == "stream:KV_raft-manager" and one["leader"]
        code, el = cli_json(capsys, *sel, "elect")
        assert code == 0 and el["method"] == "step_down" and el["leader"] != st["leader"]
        target = next(v for v in st["voters"] if v != el["leader"])
        code, refused = cli_json(capsys, *sel, "elect", "--to", target)
        assert code != 0 and refused["error"] == "refused" and "placement" in refused["reason"]
        audit = AuditLog(state_dir() / "audit.jsonl").read()[-1]
        assert audit["operation"] == "elect_leader" and audit["outcome"] == "refused"
        code, ver = cli_json(capsys, *sel, "verify", "--group", "stream:KV_raft-manager")
        assert code == 0 and ver["consistent"] is True
        code, down = cli_json(capsys, "nats", "down", "--config", str(cfg))
        assert code == 0 and sorted(n["id"] for n in down["nodes"]) == ["n1", "n2", "n3"]
        assert not any(n["running"] for n in down["nodes"])
