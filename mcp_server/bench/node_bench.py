"""Benchmark a local 3-node raft_core cluster: write throughput/latency and failover.

    python -m mcp_server.bench.node_bench [--fsync always,never] [--clients 1,16,64]
        [--duration 5] [--runs 3] [--failovers 5] [--json]

For each fsync mode it starts a fresh cluster of real ``raft-node`` processes, points
the load generator (a separate process, raw HTTP on asyncio streams) at the leader
with 64-byte values, and reports the median of ``--runs`` runs per concurrency level.
Failover: SIGKILL the leader while a writer keeps writing; the time from the kill to
the first write acknowledged by the new leader, median of ``--failovers`` rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mcp_server.local import LocalCluster, LocalSettings


def _leader(c: LocalCluster, client: httpx.Client) -> tuple[str, str] | None:
    for n in c.nodes:
        if not c.alive(n):
            continue
        try:
            st = client.get(f"http://{n.api_address}/v1/status").json()
        except (httpx.HTTPError, ValueError):
            continue
        if st.get("role") == "leader":
            return n.id, n.api_address
    return None


def _wait_leader(c: LocalCluster, client: httpx.Client, timeout: float = 20.0) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _leader(c, client)
        if found:
            return found
        time.sleep(0.02)
    raise RuntimeError("no leader")


def _load(api: str, clients: int, duration: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "mcp_server.bench.loadgen", "--target", api, "--clients",
         str(clients), "--duration", str(duration), "--value-size", "64", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    doc = json.loads(out.stdout)
    return doc["results"][0] if isinstance(doc, dict) and "results" in doc else doc[0]


def _failover(c: LocalCluster, client: httpx.Client) -> float:
    """Kill the leader; seconds until a write is acknowledged by its successor."""
    old, _ = _wait_leader(c, client)
    others = [n for n in c.nodes if n.id != old]
    seq = 0
    c.kill(old)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 30:
            for n in others:
                seq += 1
                try:
                    r = client.put(
                        f"http://{n.api_address}/v1/kv/failover", json={"value": str(seq)}
                    )
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    return time.monotonic() - t0
            time.sleep(0.005)
        raise RuntimeError("no new leader accepted a write within 30 s")
    finally:
        c.start(old)


def bench_mode(fsync: str, clients: list[int], duration: float, runs: int, failovers: int,
               base_port: int) -> dict:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f"raft-bench-{fsync}-") as d:
        settings = LocalSettings(fsync=fsync, snapshot_entries=50_000, keep_entries=5_000)
        # Plain HTTP: loadgen speaks http (this measures the engine, not TLS).
        c = LocalCluster.up(Path(d), 3, base_port, settings, insecure=True)
        try:
            with httpx.Client(timeout=2.0) as client:
                _, api = _wait_leader(c, client)
                rows = []
                for n in clients:
                    results = [_load(api, n, duration) for _ in range(runs)]
                    rows.append(
                        {
                            "clients": n,
                            "writes_per_s": statistics.median(r["throughput"] for r in results),
                            "p50_ms": statistics.median(r["p50_ms"] for r in results),
                            "p99_ms": statistics.median(r["p99_ms"] for r in results),
                            "errors": sum(r["errors"] for r in results),
                        }
                    )
                times = []
                for _ in range(failovers):
                    times.append(_failover(c, client))
                    time.sleep(1.0)  # let the restarted node catch up
            return {
                "fsync": fsync,
                "load": rows,
                "failover_s": [round(t, 3) for t in times],
                "failover_median_s": round(statistics.median(times), 3) if times else None,
            }
        finally:
            c.down()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mcp_server.bench.node_bench", description=__doc__)
    p.add_argument("--fsync", default="always,never")
    p.add_argument("--clients", default="1,16,64")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--failovers", type=int, default=5)
    p.add_argument("--base-port", type=int, default=27100)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    out = []
    for i, mode in enumerate(a.fsync.split(",")):
        res = bench_mode(mode, [int(x) for x in a.clients.split(",")], a.duration, a.runs,
                         a.failovers, a.base_port + 300 * i)  # fmt: skip
        out.append(res)
        if not a.json:
            print(f"fsync={mode}")
            print(f"  {'clients':>7} {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
            for r in res["load"]:
                print(f"  {r['clients']:>7} {r['writes_per_s']:>9.0f} {r['p50_ms']:>7.2f} "
                      f"{r['p99_ms']:>7.2f} {r['errors']:>6}")  # fmt: skip
            print(f"  failover after kill -9 of the leader: median {res['failover_median_s']} s "
                  f"({res['failover_s']})")  # fmt: skip
    if a.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
