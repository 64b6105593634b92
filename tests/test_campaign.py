"""The randomized simulation campaign, run as users run it (the contract in docs/design.md)."""

from __future__ import annotations

import json
import subprocess
import sys

from raft_core.sim.campaign import run_one

CONTRACT_KEYS = {
    "runs",
    "failures",
    "invariant_violations",
    "linearizability_violations",
    "elections",
    "commits",
    "leadership_transfers",
    "membership_changes",
    "snapshots_installed",
    "crashes",
    "partitions",
    "seconds",
}


def test_campaign_200_seeds_finds_nothing_and_reports_the_contract_summary():
    out = subprocess.run(
        [sys.executable, "-m", "raft_core.sim", "campaign", "--seeds", "200", "--start", "0",
         "--json"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary.keys() >= CONTRACT_KEYS
    assert summary["failures"] == [], summary["failures"]
    assert out.returncode == 0
    assert summary["runs"] == 200
    assert summary["invariant_violations"] == summary["linearizability_violations"] == 0
    # The campaign only has teeth if the faults actually happen.
    assert summary["elections"] > 200
    assert summary["crashes"] > 200
    assert summary["partitions"] > 200
    assert summary["leadership_transfers"] > 50
    assert summary["membership_changes"] > 50
    assert summary["snapshots_installed"] > 50
    assert summary["runs_with_membership_changes"] > 60
    assert summary["runs_with_snapshots_installed"] > 40
    # Clients send reads to every node: the checker judges follower reads too.
    assert summary["follower_reads"] > 500
    assert summary["pauses"] > 100
    # The targeted actions (docs/design.md, "The campaign's targeted actions").
    assert summary["figure8_crashes"] > 0
    assert summary["joint_splits"] > 5
    assert summary["liveness_windows"] > 20
    assert summary["close_notices"] > 1000


def test_a_failing_seed_exits_non_zero_and_prints_its_replay_command(monkeypatch, capsys):
    from raft_core.sim import __main__ as cli
    from raft_core.sim import campaign

    real = campaign.run_one

    def broken(seed: int, **kw):
        res = real(seed, **kw)
        if seed == 3:
            res.ok, res.kind, res.reason = False, "invariant", "planted failure"
        return res

    monkeypatch.setattr(campaign, "run_one", broken)
    code = cli.main(["campaign", "--seeds", "5", "--jobs", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["failures"] == [{"seed": 3, "kind": "invariant", "reason": "planted failure"}]
    assert summary["invariant_violations"] == 1
    assert "python -m raft_core.sim replay --seed 3" in captured.err


def test_a_run_is_a_pure_function_of_its_seed():
    a, b = run_one(42), run_one(42)
    assert a.ok and b.ok
    assert a.stats == b.stats and a.operations == b.operations


def test_a_livelocked_run_fails_fast_as_a_liveness_failure_naming_its_seed(monkeypatch):
    """A planted livelock (the tick re-arms itself with no delay, so virtual time never
    moves) must fail the run within its event budget, not spin until CI's time limit."""
    import time

    from raft_core.sim.cluster import SimCluster

    def spin(self: SimCluster) -> None:
        for node in list(self.nodes.values()):
            if node.up:
                node.tick()
        self.schedule(0, lambda: spin(self))

    monkeypatch.setattr(SimCluster, "_tick_all", spin)
    started = time.monotonic()
    res = run_one(7)
    assert time.monotonic() - started < 60
    assert not res.ok and res.kind == "liveness", (res.kind, res.reason)
    assert "seed 7" in res.reason and "event budget" in res.reason
