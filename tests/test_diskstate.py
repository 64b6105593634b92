"""The on-disk state machine (raft_core/diskstate.py) against the in-memory one.

Both run the same seeded command streams (client sessions, expiry, eviction at the
cap, deletes and CAS); they must answer every command alike and end with equal
digests, also across a reopen of the store after any batch (a restart), and the store
must keep exactly what it committed when a process dies by kill -9 in the middle of
a batch. Some keys are longer than LMDB's key limit.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from raft_core.diskstate import DiskReplica, is_store_image
from raft_core.kv import KVStore
from raft_core.statemachine import Replica, encode_command
from raft_core.types import Entry, EntryType

LIMITS = {"session_ttl_ms": 5_000, "max_sessions": 6, "max_tombstones": 10}


def _entries(seed: int, n: int, start: int = 1) -> list[Entry]:
    """A seeded stream: puts, deletes and CAS from a few clients (with retries of
    earlier sequence numbers), and a clock that jumps past the session TTL now and then."""
    rng = random.Random(seed)
    out, seqs, clock = [], {}, 0
    for index in range(start, start + n):
        clock += rng.choice([10, 10, 10, 6_000])
        key = f"k{rng.randrange(20)}"
        if rng.random() < 0.1:  # over LMDB's 511-byte keys (the API takes 1 KiB)
            key = "é" * 300 + key
        cmd = rng.choice(
            [["put", key, "v" * rng.randrange(1, 50)], ["del", key], ["cas", key, None, "new"]]
        )
        if rng.random() < 0.2:
            out.append(Entry(index, 1, EntryType.NORMAL, encode_command(cmd, None, None, clock)))
            continue
        cid = f"c{rng.randrange(10)}"
        seq = seqs.get(cid, 0) + 1
        if rng.random() < 0.15 and seq > 1:
            seq = rng.randrange(1, seq)  # a retry
        seqs[cid] = max(seqs.get(cid, 0), seq)
        out.append(Entry(index, 1, EntryType.NORMAL, encode_command(cmd, cid, seq, clock)))
    return out


def _answer(res) -> tuple:
    return (res.index, res.term, res.value, res.error and res.error.code)


@pytest.mark.parametrize("seed", range(4))
def test_answers_and_digests_match_the_in_memory_machine_across_restarts(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    mem = Replica(KVStore(), **LIMITS)
    disk = DiskReplica(tmp_path / "state.mdb", **LIMITS)
    for e in _entries(seed, 400):
        assert _answer(disk.apply(e)) == _answer(mem.apply(e)), e.index
        if rng.random() < 0.3:
            disk.commit()
            if rng.random() < 0.2:  # a restart between batches
                disk.close()
                disk = DiskReplica(tmp_path / "state.mdb", **LIMITS)
                assert list(disk.sessions) == list(mem.sessions)
                assert {
                    c: (s.floor, s.last_active_ms, dict(s.responses))
                    for c, s in disk.sessions.items()
                } == {c: (s.floor, s.last_active_ms, s.responses) for c, s in mem.sessions.items()}
                assert list(disk.tombstones) == list(mem.tombstones)
    disk.commit()
    assert disk.digest() == mem.digest()
    disk.close()


def test_a_restart_replays_the_log_over_the_store_without_applying_twice(
    tmp_path: Path,
) -> None:
    entries = _entries(7, 100)
    disk = DiskReplica(tmp_path / "state.mdb")
    for e in entries[:60]:
        disk.apply(e)
    disk.commit()
    disk.close()
    disk = DiskReplica(tmp_path / "state.mdb")
    assert disk.applied_index == 60
    mem = Replica(KVStore())
    for e in entries:  # the log from its start: the first 60 are already in the store
        mem.apply(e)
        disk.apply(e)
    disk.commit()
    assert disk.digest() == mem.digest()
    disk.close()


def _written(write: Callable[[int], None], path: Path) -> bytes:
    """Run a snapshot writer into a file after a few bytes of header; the image."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"head")
        write(fd)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert data[:4] == b"head", "the writer writes at the descriptor's offset"
    return data[4:]


def test_a_snapshot_image_is_the_state_at_capture_while_applying_goes_on(
    tmp_path: Path,
) -> None:
    entries = _entries(3, 200)
    disk = DiskReplica(tmp_path / "state.mdb")
    mem = Replica(KVStore())
    for e in entries[:120]:
        disk.apply(e)
        mem.apply(e)
    disk.commit()
    at_capture = mem.digest()
    write = disk.snapshot_writer(extra={"addresses": {"n1": ["a", "b"]}})
    for e in entries[120:]:  # applied after the capture, before the image is written
        disk.apply(e)
    disk.commit()
    data = _written(write, tmp_path / "image")
    assert is_store_image(data)
    follower = DiskReplica(tmp_path / "follower.mdb")
    follower.stage(data)
    assert follower.restore(data) == {"addresses": {"n1": ["a", "b"]}}
    assert follower.digest() == at_capture
    for e in entries[120:]:
        follower.apply(e)
        mem.apply(e)
    follower.commit()
    assert follower.digest() == mem.digest() == disk.digest()
    for r in (disk, follower):
        r.close()


def test_an_in_memory_image_converts_and_an_in_memory_writer_forks(tmp_path: Path) -> None:
    mem = Replica(KVStore(), **LIMITS)
    for e in _entries(5, 150):
        mem.apply(e)
    write = mem.snapshot_writer(extra={"x": 1})
    mem.apply(_entries(6, 1, start=151)[0])  # the child's view is the fork's moment
    image = _written(write, tmp_path / "mem-image")
    assert not is_store_image(image)
    disk = DiskReplica(tmp_path / "state.mdb", **LIMITS)
    assert disk.restore(image) == {"x": 1}
    assert disk.applied_index == 150
    again = Replica(KVStore(), **LIMITS)
    again.restore(image)
    assert disk.digest() == again.digest()
    assert list(disk.sessions) == list(again.sessions)
    disk.close()
    assert DiskReplica(tmp_path / "state.mdb", **LIMITS).digest() == again.digest()


def test_a_damaged_image_is_refused_and_the_store_is_kept(tmp_path: Path) -> None:
    disk = DiskReplica(tmp_path / "state.mdb")
    for e in _entries(1, 20):
        disk.apply(e)
    disk.commit()
    before = disk.digest()
    with pytest.raises(ValueError, match="damaged or not ours"):
        disk.restore(b"\x81\xa1v\x09")
    assert disk.digest() == before
    disk.close()


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import raft_core.diskstate as diskstate
    sys.path.insert(0, {tests!r})
    from test_diskstate import _entries
    disk = diskstate.DiskReplica(Path({path!r}))
    entries = _entries(11, 100)
    for e in entries[:50]:
        disk.apply(e)
    disk.commit()
    print("committed", flush=True)
    diskstate._armed = ("store-commit", 1)  # what RAFT_NODE_CRASH_AT arms in raft-node
    for e in entries[50:]:
        disk.apply(e)
    disk.commit()  # killed here, before this transaction commits
    print("survived", flush=True)
    """
)


def test_kill_9_in_the_middle_of_a_batch_keeps_the_last_committed_batch(tmp_path: Path) -> None:
    path = tmp_path / "state.mdb"
    code = _CHILD.format(tests=str(Path(__file__).parent), path=str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()
    assert b"committed" in done.stdout and b"survived" not in done.stdout
    disk = DiskReplica(path)
    assert disk.applied_index == 50
    mem = Replica(KVStore())
    for e in _entries(11, 50):
        mem.apply(e)
    assert disk.digest() == mem.digest()
    disk.close()


def _rss_file_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


def test_a_flush_lets_go_of_the_mapped_pages_and_keeps_the_data(tmp_path: Path) -> None:
    """Reads map the store's pages into the process, and LMDB never unmaps them: a
    store of N bytes would end up all resident. ``flush`` syncs the store and drops
    the process's mapping of its pages (they stay in the page cache)."""
    disk = DiskReplica(tmp_path / "state.mdb")
    value = "x" * 1024
    entries = [
        Entry(i, 1, EntryType.NORMAL, encode_command(["put", f"k{i:06d}", value], "c", i))
        for i in range(1, 30_001)
    ]
    for e in entries:
        disk.apply(e)
    disk.commit()
    assert all(disk.kv.get(f"k{i:06d}") == value for i in range(1, 30_001, 7))
    before = _rss_file_mb()
    disk.flush()
    after = _rss_file_mb()
    assert before - after > 20, (before, after)  # about 40 MB of store was mapped
    assert disk.kv.get("k000001") == value and disk.kv.get("k030000") == value
    # An image reads every page through the map: it lets go of them as it goes.
    disk.flush()
    baseline = _rss_file_mb()
    image = _written(disk.snapshot_writer(), tmp_path / "image")
    assert len(image) > 30 << 20
    assert _rss_file_mb() - baseline < 20, (baseline, _rss_file_mb())
    disk.close()
    again = DiskReplica(tmp_path / "state.mdb")
    assert again.applied_index == 30_000 and again.kv.get("k015000") == value
    again.close()
