"""Requests waiting on the node have deadlines, swept every tick.

A request the cluster cannot answer in ``request_timeout_ms`` fails with
``Unavailable`` (a write as indeterminate: it may still commit), and answered requests
are forgotten at the next tick rather than held for the whole timeout: holding them
made every garbage collection walk tens of thousands of finished futures.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from testkit import started_single_node

from raft_core.node.main import GC_YOUNG_THRESHOLD, _tune_gc
from raft_core.node.server import Unavailable


def test_answered_requests_are_forgotten_at_the_next_tick(tmp_path: Path) -> None:
    async def main() -> None:
        node = await started_single_node(tmp_path, request_timeout_ms=60_000)
        try:
            await asyncio.gather(*(node.propose(["put", f"k{i}", "v"]) for i in range(300)))
            await node.read_barrier()
            await asyncio.sleep(0.05)  # a few ticks, far less than the timeout
            assert len(node._deadlines) == 0
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_requests_nobody_answers_time_out_writes_as_indeterminate(tmp_path: Path) -> None:
    async def main() -> None:
        node = await started_single_node(tmp_path, request_timeout_ms=300)
        try:
            answered = await node.propose(["put", "before", "v"])
            assert answered.error is None
            # From here the driver loses every proposal and read: only deadlines end them.
            node.driver.submit = lambda data, fut: None  # type: ignore[method-assign]
            node.driver.read = lambda fut: None  # type: ignore[method-assign]
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            write = asyncio.create_task(node.propose(["put", "k", "v"]))
            read = asyncio.create_task(node.read_barrier())
            done, _ = await asyncio.wait({write, read}, timeout=5)
            assert done == {write, read}, "a request without an answer never timed out"
            assert 0.3 <= loop.time() - t0 < 2.0
            err = write.exception()
            assert isinstance(err, Unavailable) and err.extra.get("indeterminate") is True
            assert "may still commit" in err.message
            err = read.exception()
            assert isinstance(err, Unavailable) and not err.extra.get("indeterminate")
            assert len(node._deadlines) == 0
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_the_node_collects_cycles_less_often_and_freezes_startup_objects() -> None:
    before = gc.get_threshold()
    try:
        _tune_gc()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
