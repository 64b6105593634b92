"""Which embedded engine holds raft-node's state: LMDB or SQLite (WAL mode), measured.

The workload is the on-disk state machine's (docs/design.md, "The on-disk state
machine"): unique keys with 1 KiB values, applied in batches where each transaction
also writes the applied index and one client-session row; point reads of random keys;
and a snapshot (a consistent copy to a file, made on a second thread) while the
writer keeps going, whose duration and the writer's worst batch latency meanwhile are
reported. Commits are not fsynced (the Raft WAL is the durable record; see the design
doc), in both engines.

The machine is shared, so both engines run in the same process, interleaved round by
round, and the report gives medians over rounds and LMDB/SQLite ratios.

    python -m mcp_server.bench.store_engines --keys 20000 --rounds 3

LMDB needs ``pip install lmdb``; without it only SQLite is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

VALUE = b"v" * 1024


class SqliteEngine:
    name = "sqlite-wal"

    def __init__(self, d: Path) -> None:
        self.path = d / "state.db"
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
        self.db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
        self.db.execute("CREATE TABLE sessions (c BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def write_batch(self, items: list[tuple[bytes, bytes]], applied: int, session: bytes) -> None:
        db = self.db
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", items)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('applied', ?)", (applied,))
        db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?)", (session[:16], session))
        db.execute("COMMIT")

    def get(self, key: bytes) -> bytes | None:
        row = self.db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return row[0] if row else None

    def snapshot_to(self, path: Path) -> None:
        # A second connection: its one backup step is one read transaction, so the
        # copy is consistent while the writer's connection commits.
        src = sqlite3.connect(self.path, check_same_thread=False)
        dst = sqlite3.connect(path)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob("state.db*"))

    def close(self) -> None:
        self.db.close()


class LmdbEngine:
    name = "lmdb"

    def __init__(self, d: Path) -> None:
        import lmdb

        self.dir = d / "lmdb"
        self.env = lmdb.open(
            str(self.dir), map_size=64 << 30, max_dbs=4, sync=False, metasync=False
        )
        self.kv = self.env.open_db(b"kv")
        self.meta = self.env.open_db(b"meta")
        self.sessions = self.env.open_db(b"sessions")

    def write_batch(self, items: list[tuple[bytes, bytes]], applied: int, session: bytes) -> None:
        with self.env.begin(write=True) as txn:
            cur = txn.cursor(self.kv)
            cur.putmulti(items)
            txn.put(b"applied", applied.to_bytes(8, "big"), db=self.meta)
            txn.put(session[:16], session, db=self.sessions)

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin(buffers=False) as txn:
            return txn.get(key, db=self.kv)

    def snapshot_to(self, path: Path) -> None:
        path.mkdir()
        self.env.copy(str(path), compact=True)

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.dir.iterdir())

    def close(self) -> None:
        self.env.close()


def _dir_size(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.iterdir())


def run_round(make: Callable[[Path], Any], keys: int, batch: int, reads: int, seed: int) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        d = Path(tmp)
        eng = make(d)
        try:
            names = [f"key-{i:09d}-{rng.getrandbits(32):08x}".encode() for i in range(keys)]
            rng.shuffle(names)
            session = os.urandom(64)
            applied = 0
            t0 = time.perf_counter()
            c0 = time.process_time()
            for i in range(0, keys, batch):
                part = [(k, VALUE) for k in names[i : i + batch]]
                applied += len(part)
                eng.write_batch(part, applied, session)
            load_s = time.perf_counter() - t0
            load_cpu = time.process_time() - c0
            sample = rng.sample(names, min(reads, keys))
            t0 = time.perf_counter()
            for k in sample:
                assert eng.get(k) == VALUE
            read_s = time.perf_counter() - t0
            # Snapshot on a thread while this one keeps writing new keys.
            snap_path = d / "snap.copy"
            done = threading.Event()
            snap_s: list[float] = []

            def snap() -> None:
                s0 = time.perf_counter()
                eng.snapshot_to(snap_path)
                snap_s.append(time.perf_counter() - s0)
                done.set()

            th = threading.Thread(target=snap)
            th.start()
            worst = 0.0
            written = 0
            w0 = time.perf_counter()
            while not done.is_set():
                part = [(f"new-{applied + j:012d}".encode(), VALUE) for j in range(batch)]
                applied += batch
                b0 = time.perf_counter()
                eng.write_batch(part, applied, session)
                worst = max(worst, time.perf_counter() - b0)
                written += batch
            during_s = time.perf_counter() - w0
            th.join()
            return {
                "engine": eng.name,
                "load_writes_per_s": keys / load_s,
                "cpu_us_per_write": load_cpu / keys * 1e6,
                "read_us": read_s / len(sample) * 1e6,
                "snapshot_s": snap_s[0],
                "writes_per_s_during_snapshot": written / during_s if during_s else 0.0,
                "worst_batch_ms_during_snapshot": worst * 1000,
                "db_bytes": eng.size(),
                "snapshot_bytes": _dir_size(snap_path),
            }
        finally:
            eng.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=64, help="entries per applied batch")
    ap.add_argument("--reads", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the raw rounds as JSON")
    args = ap.parse_args(argv)
    engines: list[Callable[[Path], Any]] = [SqliteEngine]
    try:
        import lmdb  # noqa: F401

        engines.append(LmdbEngine)
    except ImportError:
        print("lmdb is not installed (pip install lmdb): measuring SQLite only")
    rows: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        order = engines if r % 2 == 0 else engines[::-1]
        for make in order:
            res = run_round(make, args.keys, args.batch, args.reads, seed=r)
            rows.setdefault(res["engine"], []).append(res)
    if args.json:
        print(json.dumps(rows, indent=1))
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "engine"}
        for name, rs in rows.items()
    }
    fields = list(next(iter(med.values())))
    print(f"{args.keys} keys x 1 KiB, batches of {args.batch}, {args.rounds} rounds (medians)")
    ratio = "   lmdb/sqlite" if len(med) > 1 else ""
    print(f"{'':34}" + "".join(f"{n:>14}" for n in med) + ratio)
    for f in fields:
        line = f"{f:34}" + "".join(f"{m[f]:14.1f}" for m in med.values())
        if len(med) > 1 and med["sqlite-wal"][f]:
            line += f"{med['lmdb'][f] / med['sqlite-wal'][f]:14.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
