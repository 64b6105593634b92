"""Embedded proposals: closed-loop callers inside the leader process, through the library.

The way PySyncObj measures itself: no HTTP, the callers are coroutines in the leader's
own event loop calling ``await RaftNode.propose(...)`` (the library API, see
``tests/test_library_use.py``). The other two members are ordinary ``raft-node``
processes. Prints one JSON list: per concurrency level, the results of ``--runs`` runs.

    python -m mcp_server.bench.embedded --fsync always --clients 1,16,64 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from raft_core.kv import put as kv_put
from raft_core.node.config import NodeConfig
from raft_core.node.eventloop import loop_runner
from raft_core.node.server import RaftNode

from ..local import LocalCluster, LocalNode, LocalSettings
from .loadgen import in_process_row
from .scratch import scratch_base_port


async def _callers(node: RaftNode, clients: int, duration_s: float, value: str) -> dict:
    latencies: list[float] = []
    clock = time.perf_counter
    t_warm = clock() + 0.5
    t_end = t_warm + duration_s
    cpu0 = time.process_time()

    async def caller(c: int) -> None:
        seq = 0
        while (t0 := clock()) < t_end:
            seq += 1
            await node.propose(kv_put(f"e{c}-{seq}", value))
            t1 = clock()
            if t1 >= t_warm and t1 <= t_end:
                latencies.append(t1 - t0)

    await asyncio.gather(*(caller(c) for c in range(clients)))
    # The leader's own CPU: callers and node share this process.
    return in_process_row(clients, latencies, duration_s, 0, time.process_time() - cpu0)


async def _lead(node: RaftNode, apis: dict[str, str]) -> None:
    """Make the embedded node the leader: another leader hands over to it (a campaign
    of ours would be refused while the others still hear their leader)."""
    deadline = time.monotonic() + 30
    while (st := node.status().engine).role != "leader":
        if time.monotonic() > deadline:
            raise RuntimeError("the embedded node did not become the leader")
        if st.leader and st.leader != node.id:
            url = f"http://{apis[st.leader]}/v1/admin/transfer-leadership"
            with contextlib.suppress(httpx.HTTPError):
                await asyncio.to_thread(httpx.post, url, json={"target": node.id}, timeout=5.0)
        await asyncio.sleep(0.2)


async def _main(fsync: str, levels: list[int], duration_s: float, runs: int, d: Path) -> list:
    base = scratch_base_port(23000)
    nodes = [
        LocalNode(f"n{i}", f"127.0.0.1:{base + i}", f"127.0.0.1:{base + 100 + i}", str(d / f"n{i}"))
        for i in (1, 2, 3)
    ]
    cluster = LocalCluster(d, nodes, LocalSettings(fsync=fsync))
    cluster.save()
    me = nodes[0]
    cfg = NodeConfig(
        id=me.id,
        data_dir=Path(me.data_dir),
        peer_listen=me.peer_address,
        api_listen=me.api_address,
        peers={n.id: n.peer_address for n in nodes},
        peer_apis={n.id: n.api_address for n in nodes},
        fsync=fsync,
    )
    node = RaftNode(cfg)
    await node.start()
    try:
        for n in nodes[1:]:
            await asyncio.to_thread(cluster.start, n.id)
        await _lead(node, {n.id: n.api_address for n in nodes})
        value = "x" * 64
        out = []
        for clients in levels:
            rs = [await _callers(node, clients, duration_s, value) for _ in range(runs)]
            out.append({"clients": clients, "runs": rs})
        return out
    finally:
        await node.stop()
        await asyncio.to_thread(cluster.down)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mcp_server.bench.embedded", description=__doc__)
    p.add_argument("--fsync", default="always", choices=("always", "never"))
    p.add_argument("--clients", default="1,16,64")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    levels = [int(x) for x in a.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="raft-bench-embedded-") as d:
        out = loop_runner()[1](_main(a.fsync, levels, a.duration, a.runs, Path(d)))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
