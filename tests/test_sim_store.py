"""The simulated on-disk store (raft_core/sim/store.py): a crash keeps the synced
image plus a seeded prefix of the batches committed since, and campaign runs that
keep their state in it lose batches in crashes and still pass every check."""

from __future__ import annotations

import random

import pytest
from simtools_membership import (
    ScenarioCluster,
    add_learner,
    assert_same_state,
    caught_up,
    converge,
    make_cluster,
    propose_puts,
)

from raft_core.sim.campaign import plan_run, run_one
from raft_core.sim.invariants import InvariantViolation
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


def _stored_cluster(seed: int) -> ScenarioCluster:
    return make_cluster(seed, stored_state=True, snapshot_every=20, keep_entries=30)


def test_a_store_compacts_by_checkpoints_and_makes_an_image_only_for_a_learner() -> None:
    """With the store, snapshots are checkpoints (no image). A learner added after the
    log was compacted needs a snapshot: the leader makes an image then (once), and the
    learner catches up from it."""
    c = _stored_cluster(412)  # (in a third of seeds a follower lags the burst: an image)
    propose_puts(c, 60, prefix="before")
    converge(c, sorted(c.nodes))
    ld = c.leader()
    assert ld is not None and ld.disk.snapshot is not None
    assert ld.disk.snapshot.data == b"", "a store's own snapshots are checkpoints"
    assert ld.raw.first_index() > 2 and c.stats["images_made"] == 0
    add_learner(c, "n4")
    assert c.run_until(lambda: caught_up(c, "n4"), 5_000), c.dump()
    assert c.stats["images_made"] == 1 and c.stats["snapshots_installed"] >= 1
    assert_same_state(c, sorted(c.nodes))


def test_an_idle_leader_makes_the_image_at_its_checkpoint_index() -> None:
    """Nothing applied since the checkpoint: the image is of the same index, and it
    takes the checkpoint's place (the learner must not wait for new writes)."""
    c = _stored_cluster(415)
    propose_puts(c, 40, prefix="k")
    converge(c, sorted(c.nodes))
    ld = c.leader()
    assert ld is not None
    assert ld.take_snapshot() is not None or ld.disk.snapshot is not None
    at = ld.disk.snapshot.meta.index  # type: ignore[union-attr]
    assert ld.disk.snapshot.data == b"" and at == ld.replica.applied_index  # type: ignore[union-attr]
    add_learner(c, "n4")
    assert c.run_until(lambda: caught_up(c, "n4"), 5_000), c.dump()
    assert c.stats["images_made"] == 1
    assert ld.disk.snapshot.data != b""  # type: ignore[union-attr]


def test_a_store_behind_its_checkpoint_fails_the_run_as_an_invariant() -> None:
    """The campaign's check of the rule raft-node enforces at start: a checkpoint must
    never be recorded before the store holds its index durably."""
    c = _stored_cluster(413)
    propose_puts(c, 40, prefix="k")
    converge(c, sorted(c.nodes))
    victim = next(n for n in c.nodes.values() if n.disk.snapshot and not n.disk.snapshot.data)
    assert victim.store is not None
    c.crash(victim.id)
    victim.store.synced = None  # as if the checkpoint had not waited for the sync
    victim.store.unsynced.clear()
    with pytest.raises(InvariantViolation, match="behind its checkpoint"):
        c.restart(victim.id)
