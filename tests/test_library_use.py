"""RaftNode as a library: an application's own state machine inside its own loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from testkit import free_port

from raft_core.node.config import NodeConfig
from raft_core.node.server import RaftNode


class Counter:
    """The kind of state machine an application brings: apply, snapshot, restore."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}

    def apply(self, command):
        name, amount = command
        self.totals[name] = self.totals.get(name, 0) + amount
        return self.totals[name]

    def snapshot(self) -> bytes:
        return json.dumps(self.totals).encode()

    def restore(self, data: bytes) -> None:
        self.totals = json.loads(data)

    def state_hash(self) -> str:
        return json.dumps(self.totals, sort_keys=True)


def _config(data_dir: Path) -> NodeConfig:
    return NodeConfig(
        id="app1",
        data_dir=data_dir,
        peer_listen=f"127.0.0.1:{free_port()}",
        api_listen=f"127.0.0.1:{free_port()}",
        tick_ms=10,
        snapshot_entries=50,
        keep_entries=5,
    )


async def _until_leader(node: RaftNode) -> None:
    for _ in range(500):
        if node.status().engine.role == "leader":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no leader")


def test_an_application_state_machine_replicates_snapshots_and_recovers(tmp_path):
    async def first_life() -> int:
        node = RaftNode(_config(tmp_path), Counter())
        await node.start()
        try:
            await _until_leader(node)
            for i in range(120):
                result = await node.propose(["apples", 1], client_id="app", seq=i + 1)
                assert result.value == i + 1
            # A retried command is answered from the session, not executed again.
            again = await node.propose(["apples", 1], client_id="app", seq=120)
            assert again.value == 120 and node.sm.totals["apples"] == 120
            await node.read_barrier()
            assert node.status().engine.snapshot_index > 0, "snapshots were taken"
            return node.replica.applied_index
        finally:
            await node.stop()

    async def second_life(applied_before: int) -> None:
        counter = Counter()
        node = RaftNode(_config(tmp_path), counter)
        await node.start()
        try:
            await _until_leader(node)
            await node.read_barrier()
            assert counter.totals == {"apples": 120}
            assert node.replica.applied_index > applied_before  # plus the new no-op
        finally:
            await node.stop()

    applied = asyncio.run(first_life())
    asyncio.run(second_life(applied))
