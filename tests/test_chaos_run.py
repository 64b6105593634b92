"""A short chaos run in the suite: real raft-node processes, every nemesis, a fixed seed
(183: its first round, one step of each kind, has a one-way cut of the leader, a pause
of an isolated leader, a slow disk on the leader and a kill -9 of every member); the
verdict must be clean and its files must exist. The first round is required (never
skipped for running late, retried when refused), so every kind is applied at least once
even on a loaded machine."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from manager_helpers import local_cluster, write_config

from mcp_server import cli
from mcp_server.local import LocalCluster

pytestmark = [pytest.mark.processes, pytest.mark.slow]


def test_short_chaos_run_all_nemeses_is_clean(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("RAFT_MANAGER_CONFIG", raising=False)
    out = tmp_path / "out"
    code = cli.main(["chaos", "--duration", "45", "--seed", "183", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    v = json.loads(captured.out)
    assert code == 0, (v["anomalies"], v["logs"], captured.err[-3000:])
    assert v["ok"] and v["linearizable"] and v["anomalies"] == []
    assert v["consistent"] is True
    assert v["seed"] == 183
    events = v["fault_events"]
    kinds = {"kill", "pause", "partition", "membership", "transfer", "disk"}
    assert set(v["faults"]) == kinds and all(v["faults"][k] >= 1 for k in kinds), events
    applied = {e["variant"] for e in events if e["applied"]}
    assert {"pause-isolated-leader", "kill-all", "one-way", "slow-disk-leader"} <= applied

    def details(variant: str) -> list[str]:
        return [e["detail"] for e in events if e["applied"] and e["variant"] == variant]

    assert any("messages to" in d and "still hears" in d for d in details("one-way"))
    assert any(d.startswith("slow disk on leader n") for d in details("slow-disk-leader"))
    assert v["notes"] == []  # raft-node serves every nemesis
    c = v["counts"]
    assert c["operations"] > 500 and c["ok"] > 0
    assert c["operations"] == c["ok"] + c["failed"] + c["indeterminate"]
    history = Path(v["history_path"]).read_text().splitlines()
    assert len(history) == c["operations"]
    assert any(json.loads(line)["client"] == "final" for line in history)
    page = Path(v["timeline_path"]).read_text()
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    ET.fromstring(svg)
    assert (out / "verdict.json").exists()
    # the throwaway cluster is stopped afterwards
    assert "stopping the throwaway cluster" in captured.err


def test_chaos_on_a_named_sandbox_cluster_with_a_token_keeps_the_token_out(
    tmp_path, monkeypatch, capsys
):
    token = "chaos-token-9f8e7d6c5b"
    (tmp_path / "token").write_text(token)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    d = tmp_path / "lab"
    with local_cluster(d, api_token_file=str(tmp_path / "token")) as lc:
        cfg = write_config(
            tmp_path / "clusters.yaml",
            {"lab": {"dir": str(d), "mode": "sandbox", "token_file": str(tmp_path / "token")}},
            audit_log=str(tmp_path / "audit.jsonl"),
        )
        out = tmp_path / "out"
        args = ["--config", str(cfg), "--cluster", "lab", "chaos", "--json", "--out", str(out)]
        code = cli.main([*args, "--duration", "12", "--seed", "5", "--nemesis", "transfer,kill"])
        captured = capsys.readouterr()
        v = json.loads(captured.out)
        assert code == 0, (v, captured.err[-2000:])
        assert v["faults"].get("transfer") and v["faults"].get("kill"), v["fault_events"]
        assert all(lc.alive(n) for n in LocalCluster.load(d).nodes)  # a named cluster stays up
    assert token not in captured.out + captured.err
    for f in [*out.rglob("*"), tmp_path / "audit.jsonl"]:
        if f.is_file():
            assert token not in f.read_text(errors="replace"), f
    assert "elect_leader" in (tmp_path / "audit.jsonl").read_text()  # through the manager
