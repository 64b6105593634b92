"""``raft-manager bench``: closed-loop write throughput and latency through the leader.

Uses ``benchmarks/loadgen.py`` (raw asyncio HTTP clients; an httpx client would cost
more CPU than the server under test). Sandbox clusters only: it writes real entries
(keys ``bench/<client>-<seq>``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from .errors import ManagerError, Refused
from .models import BenchResult
from .operations import Manager


def _loadgen():
    try:
        from benchmarks.loadgen import run_load
    except ImportError:
        root = str(Path(__file__).resolve().parents[1])
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            from benchmarks.loadgen import run_load
        except ImportError:
            raise ManagerError(
                "benchmarks/loadgen.py is not available in this installation",
                "run raft-manager bench from a checkout of the repository",
            ) from None
    return run_load


def run_bench(
    mgr: Manager, *, clients: int = 16, duration_s: float = 3.0, value_size: int = 64
) -> BenchResult:
    c = mgr.cluster
    args = {"bench": {"clients": clients, "duration_s": duration_s, "value_size": value_size}}
    if c.mode != "sandbox" or c.read_only:
        reason = "bench writes load into the cluster: sandbox clusters only"
        mgr.record("replicate", args, "refused", reason=reason)
        raise Refused(reason, "run it against a sandbox cluster", operation="replicate")

    def body() -> BenchResult:
        st = mgr.status()
        leader = next((m for m in st.members if m.id == st.leader), None)
        if leader is None or not leader.api_address:
            raise ManagerError("no leader to send load to", "check `raft-manager status`")
        host, _, port = leader.api_address.rpartition(":")
        value = json.dumps({"value": "x" * value_size}).encode()

        def make_request(client: int, seq: int) -> tuple[str, str, bytes]:
            return "PUT", f"/v1/kv/bench%2F{client}-{seq}", value

        headers = {}
        token = getattr(mgr.adapter, "_client", None)
        if token is not None and "authorization" in token.headers:
            headers["Authorization"] = token.headers["authorization"]
        run_load = _loadgen()
        res = asyncio.run(
            run_load(
                host,
                int(port),
                clients=clients,
                duration_s=duration_s,
                make_request=make_request,
                warmup_s=0.5,
                headers=headers,
            )
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

    return mgr.run_guarded("replicate", args, body)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)
