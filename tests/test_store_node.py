"""raft-node with its on-disk store (the default): restarts resume from the store,
snapshots are taken off the loop and never twice at once, the loop-lag probe shows a
stall, and ``--state-store memory`` still restores from its snapshot."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from testkit import started_single_node

from raft_core.diskstate import DiskReplica
from raft_core.node.errors import Conflict
from raft_core.node.server import RaftNode
from raft_core.node.storage import StorageError


async def _write(node: RaftNode, n: int, tag: str) -> None:
    for i in range(n):
        await node.propose(["put", f"{tag}{i}", f"value-{i}"])


async def _no_snapshot_running(node: RaftNode) -> None:
    for _ in range(500):
        if node._snapshot_task is None and not node._snapshotting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a snapshot is still running after 5 s")


def test_a_restart_resumes_from_the_store_without_restoring_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def first() -> tuple[int, int, dict]:
        node = await started_single_node(tmp_path, snapshot_entries=50, keep_entries=5)
        try:
            await _write(node, 130, "k")
            await _no_snapshot_running(node)
            return (
                node.replica.applied_index,
                node.status().engine.snapshot_index,
                await node.digest(),
            )
        finally:
            await node.stop()

    applied, snap_index, digest = asyncio.run(first())
    assert 0 < snap_index < applied

    def refuse(self, data):
        raise AssertionError("the store already holds the snapshot: nothing to restore")

    monkeypatch.setattr(DiskReplica, "restore", refuse)

    async def second() -> None:
        node = await started_single_node(tmp_path, snapshot_entries=50, keep_entries=5)
        try:
            assert node.replica.applied_index >= applied
            assert node.sm.get("k129") == "value-129"
            # (a new term's first entry has been applied since: compare at the old index)
            assert (await node.digest(applied))["chain"] == digest["chain"]
            assert node.status().to_json()["state_store"] == "lmdb"
        finally:
            await node.stop()

    asyncio.run(second())


def test_a_running_snapshot_is_never_scheduled_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unretrieved: list[dict] = []
    release = threading.Event()
    real = DiskReplica.checkpoint_writer

    def held(self, extra=None):
        sync = real(self, extra)

        def wait_then_sync() -> None:
            assert release.wait(10), "the test never released the checkpoint"
            sync()

        return wait_then_sync

    monkeypatch.setattr(DiskReplica, "checkpoint_writer", held)

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx))
        node = await started_single_node(tmp_path, snapshot_entries=20, keep_entries=5)
        try:
            await _write(node, node.snapshot_every, "a")
            task = node._snapshot_task
            assert task is not None  # the last write started one
            for _ in range(5):
                node._maybe_snapshot()
                node._image_wanted()  # a follower's need for an image waits its turn too
                assert node._snapshot_task is task
            await asyncio.sleep(0.05)
            assert node._snapshotting
            with pytest.raises(Conflict):
                await node.take_snapshot()
            release.set()
            await _no_snapshot_running(node)
            assert node.status().engine.snapshot_index >= node.snapshot_every
        finally:
            await node.stop()

    asyncio.run(main())
    assert unretrieved == []


def test_the_loop_lag_probe_reports_a_stall_in_status_and_metrics(tmp_path: Path) -> None:
    async def main() -> None:
        node = await started_single_node(tmp_path)
        try:
            await asyncio.sleep(0.05)
            time.sleep(0.3)  # the stall: the loop is blocked for 300 ms
            await asyncio.sleep(0.05)  # a tick runs late, then measures
            lag = node.status().to_json()["loop_lag_ms"]
            assert lag["max"] >= 250, lag
            text = node.metrics.render()
            assert "raft_loop_lag_seconds_bucket" in text
            line = next(x for x in text.splitlines() if x.startswith("raft_loop_lag_max_seconds"))
            assert float(line.split()[-1]) >= 0.25
        finally:
            await node.stop()

    asyncio.run(main())


def test_the_in_memory_store_still_restores_from_its_snapshot(tmp_path: Path) -> None:
    async def life(check: tuple[int, str] | None) -> tuple[int, str]:
        node = await started_single_node(
            tmp_path, snapshot_entries=30, keep_entries=5, state_store="memory"
        )
        try:
            if check is None:
                await _write(node, 60, "m")
                await _no_snapshot_running(node)
                assert node.status().engine.snapshot_index >= 30
            else:
                # Rebuilt from the snapshot and the log (replayed once this term's
                # first entry commits); a new term's entry came since.
                await node.read_barrier()
                assert (await node.digest(check[0]))["chain"] == check[1]
            assert node.sm.get("m59") == "value-59"
            return node.replica.applied_index, node.replica.chain.hex()
        finally:
            await node.stop()

    asyncio.run(life(asyncio.run(life(None))))
    assert not (tmp_path / "state.mdb").exists()


def test_the_snapshot_image_is_written_and_saved_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop only captures the view: copying the store into the image file and
    saving the snapshot file happen on other threads (the loop's thread is recorded)."""
    import threading

    from raft_core.node.storage import DiskStorage

    threads: dict[str, str] = {}
    real_writer = DiskReplica.snapshot_writer
    real_save = DiskStorage.save_snapshot

    def writer(self, extra=None):
        threads["capture"] = threading.current_thread().name
        write = real_writer(self, extra)

        def recorded(fd: int) -> int:
            threads["image"] = threading.current_thread().name
            return write(fd)

        return recorded

    def save(self, snap):
        threads["save"] = threading.current_thread().name
        return real_save(self, snap)

    monkeypatch.setattr(DiskReplica, "snapshot_writer", writer)
    monkeypatch.setattr(DiskStorage, "save_snapshot", save)

    async def main() -> None:
        node = await started_single_node(tmp_path)
        try:
            await _write(node, 200, "s")
            index, size = await node.take_snapshot()
            assert index >= 200 and size > 0
            loop_thread = threading.current_thread().name
            assert threads["capture"] == loop_thread
            assert threads["image"] != loop_thread and threads["save"] != loop_thread
            assert threads["image"] != threads["save"]  # WAL writes never queue behind it
        finally:
            await node.stop()

    asyncio.run(main())


def test_the_state_hash_is_computed_off_the_loop_from_a_view_taken_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GET /v1/admin/digest`` hashes the whole state: at a gigabyte that is seconds,
    so the loop only opens a read view; the hash runs on another thread, and writes
    applied meanwhile are not in it."""
    import raft_core.diskstate as diskstate

    threads: list[str] = []
    real = diskstate.hash_items

    def recorded(items):
        threads.append(threading.current_thread().name)
        return real(items)

    monkeypatch.setattr(diskstate, "hash_items", recorded)

    async def main() -> None:
        node = await started_single_node(tmp_path)
        try:
            await _write(node, 50, "d")
            pending = asyncio.ensure_future(node.digest())
            await _write(node, 5, "late")  # applied while the hash may still run
            got = await pending
            assert threads and threads[0] != threading.current_thread().name
            assert got["applied_index"] < node.replica.applied_index
            expected = {k: v for k, v in node.sm.items() if not k.startswith("late")}
            assert got["state_hash"] == real(sorted(expected.items()))
        finally:
            await node.stop()

    asyncio.run(main())


def test_a_store_behind_its_checkpoint_is_refused_naming_the_way_out(tmp_path: Path) -> None:
    """A checkpoint let the log go: a store file replaced by an older one (or lost)
    cannot be rebuilt from this node's own log. It refuses to start, changes nothing,
    and says how to recover."""

    async def first() -> int:
        node = await started_single_node(tmp_path, snapshot_entries=20, keep_entries=5)
        try:
            await _write(node, 80, "c")
            await _no_snapshot_running(node)
            return node.status().engine.snapshot_index
        finally:
            await node.stop()

    checkpoint = asyncio.run(first())
    assert checkpoint >= 20
    (tmp_path / "state.mdb").unlink()
    wal_before = sorted(p.name for p in (tmp_path / "wal").iterdir())

    async def second() -> None:
        with pytest.raises(StorageError, match=f"behind the checkpoint at {checkpoint}") as e:
            await started_single_node(tmp_path, snapshot_entries=20, keep_entries=5)
        assert "empty its data directory and add it back" in str(e.value)

    asyncio.run(second())
    assert sorted(p.name for p in (tmp_path / "wal").iterdir()) == wal_before
