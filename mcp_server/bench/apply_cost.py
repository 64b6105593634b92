"""CPU per applied entry: the in-memory Replica against the on-disk one.

The same seeded entries (16 clients with sessions, unique keys, ``--value-bytes``
values) are applied in batches of ``--batch`` with a commit after each, as raft-node's
driver does; the report is process CPU time per entry, median over rounds, with the
machines interleaved round by round (the machine is shared).

    python -m mcp_server.bench.apply_cost --entries 20000 --value-bytes 64

It also runs against an older checkout (``PYTHONPATH=<old tree>``): a Replica without
``commit`` is measured without it, and without ``raft_core.diskstate`` only the
in-memory machine is.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--value-bytes", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
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
