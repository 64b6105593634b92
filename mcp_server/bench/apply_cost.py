"""CPU per applied entry: the in-memory Replica against the on-disk one.

The same seeded entries (16 clients with sessions, unique keys, ``--value-bytes``
values) are applied in batches of ``--batch`` with a commit after each, as raft-node's
driver does; the report is process CPU time per entry, median over rounds, with the
machines interleaved round by round (the machine is shared).

    python -m mcp_server.bench.apply_cost --entries 20000 --value-bytes 64

With ``--node``, the same comparison through a whole single-voter ``RaftNode``
(``--state-store lmdb`` against ``memory``, WAL not fsynced, ``--clients`` callers in
the node's own loop proposing with sessions): process CPU per write, which adds the
log, the driver and the futures to the state machine.

It also runs against an older checkout (``PYTHONPATH=<old tree>``): a Replica without
``commit`` is measured without it, and without ``raft_core.diskstate`` only the
in-memory machine is.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raft_core.kv import KVStore
from raft_core.statemachine import Replica, encode_command
from raft_core.types import Entry, EntryType


def _entries(n: int, value_bytes: int) -> list[Entry]:
    value = "v" * value_bytes
    seqs = [0] * 16
    out = []
    for i in range(1, n + 1):
        c = i % 16
        seqs[c] += 1
        cmd = ["put", f"key-{i:09d}", value]
        out.append(Entry(i, 1, EntryType.NORMAL, encode_command(cmd, f"client-{c}", seqs[c], i)))
    return out


def _measure(make: Callable[[Path], Any], entries: list[Entry], batch: int) -> float:
    with tempfile.TemporaryDirectory(prefix="apply-cost-") as tmp:
        r = make(Path(tmp))
        commit = getattr(r, "commit", lambda: None)
        c0 = time.process_time()
        for i in range(0, len(entries), batch):
            for e in entries[i : i + batch]:
                r.apply(e)
            commit()
        cpu = time.process_time() - c0
        getattr(r, "close", lambda: None)()
    return cpu / len(entries) * 1e6


async def _node_cpu_us(store: str, clients: int, writes: int, value_bytes: int) -> float:
    from raft_core.node.config import NodeConfig
    from raft_core.node.server import RaftNode
    from raft_core.status import NodeRole

    from .scratch import scratch_base_port

    base = scratch_base_port(26000)
    with tempfile.TemporaryDirectory(prefix="apply-cost-node-") as tmp:
        cfg = NodeConfig(
            id="n1",
            data_dir=Path(tmp),
            peer_listen=f"127.0.0.1:{base}",
            api_listen=f"127.0.0.1:{base + 1}",
            fsync="never",
            tick_ms=10,
            state_store=store,
        )
        node = RaftNode(cfg)
        await node.start()
        try:
            while node.status().engine.role is not NodeRole.LEADER:
                await asyncio.sleep(0.01)
            value = "v" * value_bytes

            async def caller(c: int) -> None:
                for seq in range(1, writes // clients + 1):
                    await node.propose(["put", f"k{c}-{seq}", value], f"client-{c}", seq)

            c0 = time.process_time()
            await asyncio.gather(*(caller(c) for c in range(clients)))
            return (time.process_time() - c0) / (writes // clients * clients) * 1e6
        finally:
            await node.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--value-bytes", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--node", action="store_true", help="through a single-voter RaftNode")
    ap.add_argument("--clients", type=int, default=16, help="with --node")
    args = ap.parse_args(argv)
    if args.node:
        node_us: dict[str, list[float]] = {"memory": [], "lmdb": []}
        for r in range(args.rounds):
            for store in ("memory", "lmdb") if r % 2 == 0 else ("lmdb", "memory"):
                cpu = asyncio.run(_node_cpu_us(store, args.clients, args.entries, args.value_bytes))
                node_us[store].append(cpu)
        print(
            f"single-voter RaftNode, {args.entries} writes, {args.value_bytes}-byte values, "
            f"{args.clients} callers with sessions; process CPU us per write, "
            f"median of {args.rounds}"
        )
        for store, vals in node_us.items():
            rounds = ", ".join(f"{v:.1f}" for v in vals)
            print(f"  {store:8} {statistics.median(vals):8.1f}   (rounds: {rounds})")
        return 0
    machines: dict[str, Callable[[Path], Any]] = {"memory": lambda _d: Replica(KVStore())}
    try:
        from raft_core.diskstate import DiskReplica

        machines["lmdb"] = lambda d: DiskReplica(d / "state.mdb")
    except ImportError:
        pass
    entries = _entries(args.entries, args.value_bytes)
    us: dict[str, list[float]] = {m: [] for m in machines}
    for r in range(args.rounds):
        for name in machines if r % 2 == 0 else list(machines)[::-1]:
            us[name].append(_measure(machines[name], entries, args.batch))
    print(
        f"{args.entries} entries, {args.value_bytes}-byte values, batches of {args.batch}, "
        f"16 clients with sessions; CPU us per applied entry, median of {args.rounds}"
    )
    for name, vals in us.items():
        rounds = ", ".join(f"{v:.1f}" for v in vals)
        print(f"  {name:8} {statistics.median(vals):8.1f}   (rounds: {rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
