"""``raft-manager bench``: closed-loop write throughput and latency through the leader.

Uses ``mcp_server.bench.loadgen`` (raw asyncio HTTP clients; an httpx client would
cost more CPU than the server under test). It writes real entries (keys
``bench/<client>-<seq>``), so it runs under the guard as the ``bench`` operation:
sandbox clusters only, refused on read-only and production clusters, audited.
"""

from __future__ import annotations

import json

from ..core import BenchResult, ManagerError
from ..manager import Manager
from .loadgen import run_load_sync

WARMUP_S = 0.5


def run_bench(
    mgr: Manager, *, clients: int = 16, duration_s: float = 3.0, value_size: int = 64
) -> BenchResult:
    args = {"clients": clients, "duration_s": duration_s, "value_size": value_size}
    return mgr.guarded("bench", args, lambda: _bench(mgr, clients, duration_s, value_size))


def _bench(mgr: Manager, clients: int, duration_s: float, value_size: int) -> BenchResult:
    st = mgr.status()
    leader = next((m for m in st.members if m.id == st.leader), None)
    if leader is None or not leader.api_address:
        raise ManagerError("no leader to send load to", "check `raft-manager status`")
    host, _, port = leader.api_address.rpartition(":")
    value = json.dumps({"value": "x" * value_size}).encode()

    def make_request(client: int, seq: int) -> tuple[str, str, bytes]:
        return "PUT", f"/v1/kv/bench%2F{client}-{seq}", value

    res = run_load_sync(
        host,
        int(port),
        clients=clients,
        duration_s=duration_s,
        make_request=make_request,
        warmup_s=WARMUP_S,
        headers=mgr.adapter.auth_headers(),
        tls=mgr.adapter.api_ssl_context(),
    )
    d = res.to_dict()
    return BenchResult(
        cluster=mgr.name,
        leader=st.leader,
        clients=clients,
        duration_s=d["duration_s"],
        value_size=value_size,
        requests=d["requests"],
        errors=d["errors"],
        throughput=round(d["throughput"], 1),
        p50_ms=_r(d["p50_ms"]),
        p90_ms=_r(d["p90_ms"]),
        p99_ms=_r(d["p99_ms"]),
        max_ms=_r(d["max_ms"]),
    )


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)
