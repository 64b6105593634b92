"""Chaos on a local etcd sandbox (``etcd up``): the clients speak etcd's JSON gateway
(kv/put, kv/range, kv/txn for compare-and-swap), the kill, pause, transfer and membership
nemeses run, partition is reported as not supported, and the verdict is the same
(linearizable, no lost write, verify_consistency) as on raft-node.

One run on the newest etcd installed (about 30 s of workload): the suite's chaos time
stays modest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from etcd_helpers import BINARIES, etcd_cluster, require
from manager_helpers import write_config

from mcp_server import cli
from mcp_server.local.etcd import EtcdLocalCluster

pytestmark = [pytest.mark.processes, pytest.mark.slow]

NEWEST = BINARIES[-1][1] if BINARIES else None


def test_chaos_on_an_etcd_sandbox_gives_a_clean_verdict(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with etcd_cluster(tmp_path / "etcd", require(NEWEST)) as lc:
        cfg = write_config(
            tmp_path / "clusters.yaml",
            {"e": {"kind": "etcd", "endpoints": lc.endpoints(), "dir": str(lc.dir)}},
            audit_log=str(tmp_path / "audit.jsonl"),
        )
        out = tmp_path / "out"
        args = ["--config", str(cfg), "--cluster", "e", "chaos", "--json", "--out", str(out)]
        code = cli.main([*args, "--duration", "30", "--seed", "4"])
        captured = capsys.readouterr()
        v = json.loads(captured.out)
        assert code == 0, (v["anomalies"], v["fault_events"], captured.err[-3000:])
        assert v["ok"] and v["linearizable"] and v["consistent"] is True
        assert v["kind"] == "etcd" and v["cluster"] == str(lc.dir)
        kinds = {e["kind"] for e in v["fault_events"]}
        assert kinds <= {"kill", "pause", "membership", "transfer"}, kinds
        assert {"kill", "pause"} <= set(v["faults"]), v["fault_events"]
        assert len(kinds) >= 3, v["fault_events"]
        notes = " ".join(v["notes"])
        assert "partition: not supported on etcd" in notes and "disk" in notes
        c = v["counts"]
        assert c["operations"] > 200 and c["by_kind"].get("cas") and c["ok"] > 0
        history = [json.loads(x) for x in Path(v["history_path"]).read_text().splitlines()]
        assert any(op["kind"] == "cas" and (op["output"] or {}).get("ok") for op in history)
        final = EtcdLocalCluster.load(lc.dir)
        assert all(final.alive(m) for m in final.members)  # a named cluster stays up
    assert '"chaos"' in (tmp_path / "audit.jsonl").read_text()
