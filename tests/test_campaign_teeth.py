"""The campaign's targeted actions have teeth: each planted bug (issue 23's four, and two
of a slow disk's) is found by
a seed of a fresh range, with the right reason, and the same seed passes unplanted.

The seeds come from the measured runs in docs/design.md ("The campaign's targeted
actions"): ``python tests/planted.py BUG START 2000``.
"""

from __future__ import annotations

import re

import pytest
from planted import PLANTS

from raft_core.sim.campaign import plan_run, run_one
from raft_core.sim.cluster import SimCluster, SimConfig

# (bug, seed, kind, the reason's pattern)
CAUGHT = [
    ("apply_before_persist", 40300000, "invariant", r"applied \d+/\d+ before persisting it"),
    ("figure8", 42400106, "invariant", r"state machine safety|leader completeness"),
    ("joint_incoming_only", 40500045, "invariant", r"state machine safety|leader completeness"),
    (
        "forced_election_on_close",
        40600014,
        "liveness",
        r"liveness invariant: .* (reached term|was unseated)",
    ),
    ("heartbeats_wait", 61000025, "liveness", r"liveness invariant: .* was unseated"),
    ("heartbeat_answers_wait", 61000116, "liveness", r"liveness invariant: .* was unseated"),
]


@pytest.mark.parametrize(("bug", "seed", "kind", "reason"), CAUGHT, ids=[c[0] for c in CAUGHT])
def test_the_campaign_finds_the_planted_bug_by_itself(monkeypatch, bug, seed, kind, reason):
    clean = run_one(seed)
    assert clean.ok, f"unplanted: {clean.kind}: {clean.reason}"
    PLANTS[bug](monkeypatch.setattr)
    res = run_one(seed)
    assert not res.ok and res.kind == kind, (res.kind, res.reason)
    assert re.search(reason, res.reason), res.reason


def test_each_targeted_action_is_drawn_in_a_share_of_runs():
    plans = [plan_run(s) for s in range(2000)]
    multi = [p for p in plans if p.nodes > 1]
    for mode, low, high in (("figure8", 0.25, 0.35), ("joint", 0.2, 0.3)):
        share = sum(getattr(p, mode) for p in multi) / len(multi)
        assert low < share < high, (mode, share)
    eligible = [p for p in multi if p.config.pre_vote and p.config.check_quorum]
    share = sum(p.liveness for p in eligible) / len(eligible)
    assert 0.35 < share < 0.45, share
    assert all(p.config.close_notices for p in plans if p.liveness)
    assert all(p.config.max_size_per_msg == 1 and p.churn for p in plans if p.figure8)


def test_a_cut_link_closes_the_connection_at_both_ends():
    """With close notices, a partition tells both sides of every cut node-to-node link
    (not only a crash does): a follower cut off from its leader reports it lost."""
    c = SimCluster(5, SimConfig(nodes=3, close_notices=True))
    leader = c.wait_for_leader()
    others = sorted(n for n in c.nodes if n != leader.id)
    c.run_for(100)
    c.partition([leader.id], [others[0]])
    assert c.stats["close_notices"] == 2  # one link cut: both ends hear of it
    c.run_for(20)
    lost = [line for line in c.trace if f"{others[0]} leader_lost" in line]
    assert lost, "the cut-off follower did not report its leader lost"
    assert not any(f"{others[1]} leader_lost" in line for line in c.trace)
    c.heal()
    c.block(others[1], leader.id)  # one direction: the connection closes all the same
    assert c.stats["close_notices"] == 4
