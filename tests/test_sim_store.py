"""The simulated on-disk store (raft_core/sim/store.py): a crash keeps the synced
image plus a seeded prefix of the batches committed since, and campaign runs that
keep their state in it lose batches in crashes and still pass every check."""

from __future__ import annotations

import random

from raft_core.sim.campaign import plan_run, run_one
from raft_core.sim.store import SimStore
from raft_core.statemachine import encode_command
from raft_core.types import Entry, EntryType


def _put(index: int) -> Entry:
    return Entry(index, 1, EntryType.NORMAL, encode_command(["put", f"k{index}", "v"]))


def test_a_crash_keeps_the_synced_image_and_a_prefix_of_later_batches() -> None:
    store = SimStore(random.Random(3))
    r = store.open()
    for i in range(1, 4):
        r.apply(_put(i))
    r.sync()
    for i in range(4, 10):
        r.apply(_put(i))
        r.commit()
    store.crash()
    kept = 9 - store.batches_lost
    again = store.open()
    assert 3 <= again.applied_index == kept
    assert again.sm.get(f"k{kept}") == "v" and again.sm.get(f"k{kept + 1}") is None
    # The log replays over it: entries it holds are skipped, the rest applied once.
    for i in range(1, 10):
        again.apply(_put(i))
    assert again.applied_index == 9 and again.digest() == r.digest()


def test_campaign_runs_with_the_stored_state_lose_batches_and_pass() -> None:
    seeds = [s for s in range(60) if plan_run(s).config.stored_state][:6]
    assert len(seeds) == 6
    lost = 0
    for s in seeds:
        result = run_one(s)
        assert result.ok, (s, result.kind, result.reason[:500])
        lost += result.stats["store_batches_lost"]
    assert lost > 0  # the crashes did drop unsynced batches, and nothing broke


def test_campaign_seed_48_no_snapshot_while_the_log_replays_below_the_store() -> None:
    """Seed 48 caught it: after a restart the store was ahead of the log being replayed
    over it, and a snapshot taken at the store's index was beyond the engine's applied
    index (and its configuration). Snapshots wait until the replay reaches the store."""
    assert plan_run(48).config.stored_state
    result = run_one(48)
    assert result.ok, (result.kind, result.reason[:500])
