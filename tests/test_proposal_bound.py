"""Proposals in flight are bounded (``max_pending_proposals``).

A leader whose disk is stalled (its single disk thread blocked) cannot commit
anything, so proposals pile up: beyond the bound they are refused at once with
``Unavailable`` (HTTP 503, not indeterminate), the node keeps answering status, and
once the disk moves again exactly the admitted proposals apply. The other bounds have
their tests next to their code: frame sizes and peer queues in test_transport.py
(``test_frame_limit_near_and_over``, ``test_queue_is_bounded_while_peer_is_down``,
``test_queue_byte_limit``), HTTP request sizes in test_http_server.py.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from testkit import started_single_node

from raft_core.node.server import Unavailable, _WalWriter
from raft_core.status import NodeRole


def test_proposals_beyond_the_bound_are_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 20
    # Every batch goes to the disk thread, which the test stalls. (A batch with nothing
    # waiting beyond it would be synced on the loop; see _WalWriter._offload.)
    monkeypatch.setattr(_WalWriter, "_offload", lambda self, rd: True)

    async def main() -> None:
        node = await started_single_node(
            tmp_path, max_pending_proposals=bound, request_timeout_ms=20_000
        )
        gate = threading.Event()
        try:
            await node.propose(["put", "warm", "up"])
            node._disk.submit(gate.wait)  # the disk thread is now stuck
            tasks = [
                asyncio.create_task(node.propose(["put", f"k{i}", str(i)])) for i in range(200)
            ]
            await asyncio.sleep(0.3)
            refused = [t for t in tasks if t.done() and isinstance(t.exception(), Unavailable)]
            assert len(refused) == 200 - bound, len(refused)
            assert all(not t.exception().extra.get("indeterminate") for t in refused)
            assert node.pending_count() == bound
            assert node.status().engine.role is NodeRole.LEADER  # still answering
            gate.set()
            admitted = await asyncio.gather(*(t for t in tasks if t not in refused))
            assert len(admitted) == bound and all(r.error is None for r in admitted)
        finally:
            gate.set()
            await node.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
