"""When a node snapshots. On the on-disk store (the default) a snapshot is a checkpoint
and costs a sync, whatever the state's size: every ``snapshot_entries`` applied
entries (each node's share of it: ``RaftNode.snapshot_every`` adds a per-node jitter).
An image costs the whole state: a state kept in memory snapshots every
``snapshot_entries`` while it is small, later while it is larger than the log since
the last snapshot, and never later than ``SNAPSHOT_WAIT_FACTOR`` times that."""

from __future__ import annotations

import asyncio
from pathlib import Path

from testkit import started_single_node

from raft_core.node.server import SNAPSHOT_WAIT_FACTOR, RaftNode

EVERY = 50


async def _started(tmp_path: Path, state_store: str = "memory") -> RaftNode:
    return await started_single_node(
        tmp_path, snapshot_entries=EVERY, keep_entries=5, state_store=state_store
    )


async def _write(node: RaftNode, n: int, value_bytes: int, tag: str) -> None:
    for i in range(n):
        await node.propose(["put", f"{tag}{i}", "x" * value_bytes])
    for _ in range(100):  # let a snapshot the last write started finish
        await asyncio.sleep(0.01)
        if not node.snapshotting:
            return


def _snapshot_index(node: RaftNode) -> int:
    return node.status().engine.snapshot_index


def test_a_small_state_is_snapshotted_every_snapshot_entries(tmp_path: Path) -> None:
    async def main() -> None:
        node = await _started(tmp_path)
        try:
            taken = set()
            assert EVERY <= node.snapshot_every < EVERY * 1.5
            for _ in range(4):
                await _write(node, node.snapshot_every, 10, "k")
                taken.add(_snapshot_index(node))
            assert len(taken) == 4, taken  # a new snapshot after each round
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_large_state_waits_until_the_log_outweighs_it_but_not_forever(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        node = await _started(tmp_path)
        try:
            every = node.snapshot_every
            await _write(node, every, 10_000, "big")  # ~500 kB of state
            first = _snapshot_index(node)
            assert first >= every
            # Small writes: 3x snapshot_entries applied, far fewer bytes than the state.
            await _write(node, 3 * every, 10, "small")
            assert _snapshot_index(node) == first
            # The log outweighs the state: the next snapshot follows.
            await _write(node, every, 10_000, "big2-")
            second = _snapshot_index(node)
            assert second > first
            # Tiny writes never outweigh it: the wait ends at the factor's bound.
            await _write(node, (SNAPSHOT_WAIT_FACTOR - 1) * every, 1, "tiny")
            assert _snapshot_index(node) == second
            await _write(node, every, 1, "tiny2-")
            assert _snapshot_index(node) > second
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 120))


def test_the_store_checkpoints_every_snapshot_entries_whatever_its_size(tmp_path: Path) -> None:
    """A checkpoint writes no image: a large state does not defer it, and it makes no
    image file (the only images are those a follower or an operator asks for)."""

    async def main() -> None:
        node = await _started(tmp_path, state_store="lmdb")
        try:
            taken = []
            for round_ in range(3):
                await _write(node, node.snapshot_every, 10_000, f"big{round_}-")
                taken.append(_snapshot_index(node))
            assert taken[0] >= node.snapshot_every and taken[0] < taken[1] < taken[2], taken
            snap_files = list((tmp_path / "snap").iterdir())
            assert snap_files and all(p.stat().st_size < 4096 for p in snap_files)
            index, size = await node.take_snapshot()  # an operator's: an image
            assert index == node.replica.applied_index and size > 1_000_000
            metrics = node.metrics.render()
            assert "raft_snapshot_images_total 1" in metrics
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
