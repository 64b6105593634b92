"""The bench harness's arithmetic, without processes: options, medians, ratios, the
targets' verdicts, and the profile summary."""

from __future__ import annotations

import pytest

from mcp_server.bench.compare import BenchOptions, _median_cell, ratios, targets
from mcp_server.bench.profile_leader import summarize


def _cell(n: int, thr: float, p50: float) -> dict:
    return {"clients": n, "throughput": thr, "p50_ms": p50, "p99_ms": p50 * 3, "errors": 0}


def _doc() -> list[dict]:
    ours = {
        "name": "ours",
        "write": [_cell(1, 900, 0.9), _cell(16, 6000, 2.5), _cell(64, 7000, 9.0)],
        "read": [_cell(64, 15000, 4.0)],
        "embedded": [_cell(64, 12000, 5.0)],
        "failover": {"rounds_s": [0.4, 0.5, 0.45], "median_s": 0.45, "max_s": 0.5},
        "catchup": {"entries": 1_000_000, "catchup_s": 12.0, "peak_rss_mb": {"n1": 120.0}},
    }
    etcd = {"name": "etcd", "write": [_cell(1, 800, 1.1), _cell(16, 3000, 5), _cell(64, 4000, 16)]}
    pso = {
        "name": "pysyncobj",
        "write": [_cell(64, 7000, 9.0)],
        "failover": {"rounds_s": [0.6], "median_s": 0.6, "max_s": 0.6},
    }
    return [ours, etcd, pso]


def test_quick_shrinks_cells_and_explicit_values_win():
    q = BenchOptions.make(quick=True, runs=None, duration_s=2.0)
    assert (q.runs, q.duration_s, q.failovers, q.catchup_entries) == (1, 2.0, 1, 0)
    full = BenchOptions.make(quick=False)
    assert full.runs >= 3 and full.catchup_entries == 1_000_000
    with pytest.raises(ValueError, match="zookeeper"):
        BenchOptions.make(quick=True, compare=("etcd", "zookeeper"))


def test_a_cell_is_the_median_of_its_runs():
    runs = [
        {"throughput": t, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 1, "leader_cpu_s": 0.55}
        for t in (10, 30, 20)
    ]
    c = _median_cell(16, runs, duration_s=5.0)
    assert c["throughput"] == 20 and c["errors"] == 3 and len(c["runs"]) == 3
    # 0.55 CPU-s over 20 ops/s x (5 s + 0.5 s warm-up) = 5000 us per operation
    assert c["leader_cpu_us_per_op"] == 5000.0
    assert c["client_cpu_s"] is None, "a measure no run reported stays None"


def test_ratios_are_ours_over_the_peer():
    r = ratios(_doc())
    assert r["etcd"]["write_16"] == 2.0 and r["etcd"]["write_64"] == 1.75
    assert r["etcd"]["write_p50_1_peer_over_ours"] == pytest.approx(1.22)
    assert r["pysyncobj"]["embedded_64"] == pytest.approx(1.71)
    assert r["pysyncobj"]["failover_median_peer_over_ours"] == pytest.approx(1.33)


def test_targets_are_marked_met_or_not_with_the_measure():
    by = {t["target"]: t for t in targets(_doc())}
    assert by["durable writes at 16 clients >= 1.5x etcd"]["met"] is True
    assert by["durable writes at 64 clients >= 2.0x etcd"]["met"] is False
    assert by["1 client: p50 below etcd's and <= 1.0 ms"]["met"] is True
    assert by["64 clients durable >= PySyncObj (which does not fsync)"]["met"] is True
    emb = by["embedded proposals, durable, >= 1.5x PySyncObj in-process (64 clients)"]
    assert emb["met"] is True and emb["measured"] == "1.71x"
    name = "linearizable reads served by followers too, >= 2x the write rate at 64"
    assert by[name]["met"] is True  # 15,000 reads/s against 7,000 writes/s
    assert by[name]["measured"] == "reads on all 3 nodes (ReadIndex) 2.14x writes"
    assert by["failover median <= 0.5 s and no worse than PySyncObj"]["met"] is True
    assert by["learner catch-up on 1,000,000 entries < 10 s"]["met"] is False
    assert by["peak RSS per node < 150 MB"]["met"] is True


def test_reads_below_twice_the_write_rate_miss_their_target():
    doc = _doc()
    doc[0]["read"] = [_cell(64, 13000, 4.0)]
    by = {t["target"]: t for t in targets(doc)}
    reads = by["linearizable reads served by followers too, >= 2x the write rate at 64"]
    assert reads["met"] is False and "1.86x" in reads["measured"]


def test_targets_without_peers_are_not_measured():
    ours = _doc()[0]
    by = {t["target"]: t for t in targets([ours])}
    assert by["durable writes at 16 clients >= 1.5x etcd"]["met"] is None


def test_profile_summary_splits_threads_and_separates_idle():
    loop = "_run_module_as_main (<frozen runpy>:1);run_forever (/usr/lib/python3.11/asyncio/b.py:1)"
    pool = (
        "Thread._bootstrap (/usr/lib/python3.11/threading.py:1);"
        "_worker (/usr/lib/python3.11/concurrent/futures/thread.py:2)"
    )
    collapsed = "\n".join(
        [
            f"{loop};EpollSelector.select (/usr/lib/python3.11/selectors.py:468) 50",
            f"{loop};save (/x/raft_core/node/storage.py:300) 30",
            f"{loop};parse (/x/raft_core/node/http_server.py:10) 20",
            f"{pool} 75",
            f"{pool};run (/usr/lib/python3.11/concurrent/futures/thread.py:5);"
            "save (/x/raft_core/node/storage.py:300) 25",
        ]
    )
    s = summarize(collapsed)
    lp, th = s["event loop"], s["threads"]
    assert lp["samples"] == 100 and lp["idle_share"] == 0.5
    assert {x["frame"]: x["share_of_busy"] for x in lp["self"]} == {
        "save (raft_core/node/storage.py)": 0.6,
        "parse (raft_core/node/http_server.py)": 0.4,
    }
    assert {x["frame"]: x["share_of_busy"] for x in lp["total"]}[
        "run_forever (asyncio/b.py)"
    ] == 1.0
    assert th["samples"] == 100 and th["idle_share"] == 0.75
    assert th["self"][0] == {
        "frame": "save (raft_core/node/storage.py)",
        "share_of_busy": 1.0,
        "samples": 25,
    }
