"""Chaos on a local NATS JetStream sandbox (``nats up``): KV clients, the kill, pause,
step-down and server replacement nemeses through the manager, and a verdict that says
what it could check (no acknowledged write lost, linearizability of leader reads, the
KV stream's replicas agreeing). About 20 s of workload: the suite's chaos time stays
modest."""

from __future__ import annotations

import json

import pytest
from manager_helpers import write_config
from nats_helpers import nats_cluster

from mcp_server import cli
from mcp_server.local.nats import NatsLocalCluster

pytestmark = [pytest.mark.processes, pytest.mark.slow]


def test_chaos_on_a_nats_sandbox_gives_a_clean_verdict(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with nats_cluster(tmp_path / "nats") as lc:
        entry = {
            "kind": "nats",
            "servers": lc.client_urls(),
            "monitor": lc.monitor_urls(),
            "username": "sys",
            "password_file": str(lc.password_file),
            "dir": str(lc.dir),
        }
        cfg = write_config(
            tmp_path / "clusters.yaml", {"js": entry}, audit_log=str(tmp_path / "audit.jsonl")
        )
        out = tmp_path / "out"
        args = ["--config", str(cfg), "--cluster", "js", "chaos", "--json", "--out", str(out)]
        code = cli.main([*args, "--duration", "20", "--seed", "3", "--clients", "4"])
        captured = capsys.readouterr()
        v = json.loads(captured.out)
        assert code == 0, (v["anomalies"], v["notes"], captured.err[-3000:])
        assert v["ok"] and v["linearizable"] and v["consistent"] is True and v["kind"] == "nats"
        events = [(e["kind"], e["applied"], e["detail"]) for e in v["fault_events"]]
        assert {"kill", "pause", "transfer", "membership"} <= set(v["faults"]), events
        assert any("partition: not supported on nats" in n for n in v["notes"])
        c = v["counts"]
        assert c["operations"] > 100 and c["ok"] > 50 and c["by_kind"].keys() == {"get", "put"}
        final = NatsLocalCluster.load(lc.dir)
        assert len(final.servers) == 3 and all(final.alive(s) for s in final.servers)
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"chaos"' in audit and '"change_membership"' in audit
