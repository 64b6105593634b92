"""Where raft-node fsyncs a batch: on the event loop, unless client requests wait
beyond it (then the disk thread, so the loop can parse the next group commit), the
disk is slow, or the batch is large (then the disk thread, so the loop keeps
answering)."""

from __future__ import annotations

from types import SimpleNamespace

from raft_core.node.server import LOOP_SYNC_MAX_ENTRIES, SLOW_FSYNC_S, _WalWriter
from raft_core.rawnode import Ready
from raft_core.types import Entry, EntryType


def _decide(batch: int, pending: int, last_fsync_s: float = 0.0003) -> bool:
    node = SimpleNamespace(
        driver=SimpleNamespace(pending_count=lambda: pending), last_fsync_s=last_fsync_s
    )
    rd = Ready(entries=[Entry(i + 1, 1, EntryType.NORMAL, b"x") for i in range(batch)])
    return _WalWriter(node)._offload(rd)  # type: ignore[arg-type]


def test_a_follower_syncs_its_batches_on_its_loop_up_to_a_bound():
    assert not _decide(batch=LOOP_SYNC_MAX_ENTRIES, pending=0)


def test_a_follower_hands_a_catch_up_sized_batch_to_the_disk_thread():
    """A 1 MB batch synced on a follower's loop, while the leader wrote an image to the
    same disk, stalled that loop 113 ms."""
    assert _decide(batch=LOOP_SYNC_MAX_ENTRIES + 1, pending=0)


def test_a_leader_with_only_this_batch_waiting_syncs_on_its_loop():
    assert not _decide(batch=1, pending=1)
    assert not _decide(batch=20, pending=20)


def test_a_leader_with_requests_waiting_beyond_the_batch_hands_it_to_the_disk_thread():
    assert _decide(batch=1, pending=2)
    assert _decide(batch=20, pending=64)


def test_after_a_slow_sync_even_a_follower_hands_its_batch_to_the_disk_thread():
    assert _decide(batch=1, pending=0, last_fsync_s=0.25)
    assert not _decide(batch=1, pending=0, last_fsync_s=SLOW_FSYNC_S / 2)  # healthy again
