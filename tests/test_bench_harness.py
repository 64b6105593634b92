"""``raft-manager bench --quick`` on ours alone: the harness runs end to end and its JSON
has the documented shape. Never a speed: the machine is shared."""

from __future__ import annotations

import json

import pytest

from mcp_server.cli.main import main

pytestmark = [pytest.mark.processes, pytest.mark.slow]

_CELL = {
    "clients", "throughput", "p50_ms", "p99_ms", "client_cpu_s", "leader_cpu_s",
    "leader_cpu_us_per_op", "errors",
}  # fmt: skip


def test_quick_bench_on_ours_alone_reports_every_workload(tmp_path, capsys):
    chart = tmp_path / "bench.svg"
    argv = ["bench", "--quick", "--clients", "1,4", "--json", "--chart", str(chart)]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)

    assert {"date", "machine", "options", "systems", "ratios", "targets"} <= set(doc)
    assert doc["options"]["quick"] is True and doc["options"]["compare"] == []
    assert [s["name"] for s in doc["systems"]] == ["ours", "ours-nosync", "ours-tls"]
    for s in doc["systems"]:
        assert isinstance(s["load_avg_start"], float)
        # The TLS row measures what security costs on the wire: writes and reads only.
        workloads = ("write", "read") if s["name"] == "ours-tls" else ("write", "read", "embedded")
        for workload in workloads:
            cells = s[workload]
            assert [c["clients"] for c in cells] == [1, 4], (s["name"], workload)
            for c in cells:
                assert set(c) >= _CELL and len(c["runs"]) == 1
                assert c["throughput"] > 0 and c["p50_ms"] > 0, (s["name"], workload, c)
                assert c["leader_cpu_us_per_op"] > 0, (s["name"], workload, c)
        for workload in ("write", "read"):
            assert all(c["errors"] == 0 for c in s[workload]), s[workload]
            assert all(c["client_cpu_s"] > 0 for c in s[workload])
    ours = doc["systems"][0]
    fo = ours["failover"]
    assert len(fo["rounds_s"]) == 1 and 0 < fo["median_s"] == fo["max_s"] < 30
    assert "catchup" not in ours, "--quick leaves the million-entry catch-up out"
    assert doc["ratios"] == {}, "no peers, no ratios"
    for t in doc["targets"]:
        assert set(t) == {"target", "met", "measured"} and t["met"] in (True, False, None)
    assert chart.read_text().lstrip().startswith("<?xml") and "<svg" in chart.read_text()


def test_unknown_peer_is_a_usage_error(capsys):
    assert main(["bench", "--quick", "--compare", "zookeeper", "--json"]) == 2
    err = json.loads(capsys.readouterr().out)
    assert "zookeeper" in json.dumps(err)


def test_big_state_bench_on_ours_alone_reports_every_figure(capsys):
    """``bench --big-state`` end to end at a small size (the lead runs the million)."""
    assert main(["bench", "--big-state", "--keys", "1500", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["options"] == {"keys": 1500, "value_size": 1024, "writers": 16, "compare": []}
    [ours] = doc["systems"]
    fill = ours["fill"]
    assert fill["keys_written"] >= 1500 and fill["errors"] == 0
    assert fill["windows"] and all(w["throughput"] > 0 for w in fill["windows"])
    assert fill["leader_changes"] >= 0 and fill["worst_max_ms"] > 0
    assert len(ours["peak_rss_mb"]) == 4  # three members and the learner
    assert ours["largest_loop_stall_ms"] >= 0
    assert set(ours["snapshots"]) == {"n1", "n2", "n3"}
    assert set(ours["snapshots_after_catchup"]) == {"n1", "n2", "n3", "n4"}
    assert 0 < ours["restart_s"] < 120 and 0 < ours["learner_catchup_s"] < 300
    during = ours["writes_during_catchup"]
    assert during["seconds"] >= 1 and during["throughput_median"] > 0 and during["errors"] == 0
    assert (
        set(ours["peak_rss_anon_mb"]) == set(ours["peak_rss_file_mb"]) == set(ours["peak_rss_mb"])
    )
    assert all(v > 0 for v in ours["peak_rss_anon_mb"].values())
    assert doc["targets"][0]["target"] == "zero leader changes"
    assert any(t["target"].startswith("writes during the learner") for t in doc["targets"])


def test_big_state_compares_with_etcd_only(capsys):
    assert main(["bench", "--big-state", "--compare", "pysyncobj", "--json"]) == 2
    assert "etcd only" in capsys.readouterr().out
