"""Our side of the comparison: a 3-node cluster of ``raft-node`` processes on loopback.

Writes are ``PUT /v1/kv/k{client}-{seq}`` to the leader; linearizable reads are
``GET /v1/kv/r?consistency=linearizable`` spread round-robin over all three nodes
(followers serve them through ReadIndex on the leader). Embedded proposals run in a
process of their own (:mod:`mcp_server.bench.embedded`). The catch-up measurement
fills the log to ``entries`` committed writes with compaction on, then adds an empty
learner.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import sys
import time
from typing import Any

import httpx

from ..local import LocalCluster, LocalSettings
from .failover import WriteProbe, measure_failover
from .loadgen import KVPutRequests, run_load_sync
from .procinfo import peak_rss_mb, proc_cpu_s
from .scratch import ScratchCluster, scratch_base_port

READ_KEY = "r"
WARMUP_S = 0.5
_HEADERS = {"Content-Type": "application/json"}


class OursCluster(ScratchCluster[LocalCluster]):
    """A fresh cluster in a temporary directory; a context manager."""

    def __init__(self, fsync: str, value_size: int = 64, tls: bool = False) -> None:
        """``tls``: the cluster as `cluster up` starts it (TLS for the API and peers);
        otherwise plain HTTP and no peer authentication, like etcd's plain gateway."""
        self.fsync = fsync
        self.tls = tls
        self.value_size = value_size
        super().__init__(prefix=f"raft-bench-{fsync}-")

    def __enter__(self) -> OursCluster:
        settings = LocalSettings(fsync=self.fsync)
        self.cluster = LocalCluster.up(
            self.dir, 3, scratch_base_port(21000), settings, insecure=not self.tls
        )
        self.http.close()
        self.http = self.cluster.http_client(timeout=5.0)
        return self

    def _url(self, api: str, path: str) -> str:
        return f"{self.c.settings.api_scheme}://{api}{path}"

    def _ssl(self) -> ssl.SSLContext | None:
        ca = self.c.settings.ca_file
        return ssl.create_default_context(cafile=ca) if self.tls and ca else None

    # -- helpers ---------------------------------------------------------------

    def leader_api(self) -> str:
        return self.c.node(self.c.wait_for_leader()).api_address

    def leader_pid(self) -> int:
        pid = self.c.node(self.c.wait_for_leader()).pid
        assert pid is not None
        return pid

    def _load(
        self, clients: int, duration_s: float, make_request: Any, *, all_nodes: bool = False
    ) -> dict:
        """Run the load against the leader, or with ``all_nodes`` round-robin over every
        node starting with the leader (``nodes_cpu_s`` then adds up all of them)."""
        lead = self.c.wait_for_leader()
        nodes = [self.c.node(lead)]
        if all_nodes:
            nodes += [n for n in self.c.nodes if n.id != lead]
        targets = []
        for n in nodes:
            host, _, port = n.api_address.rpartition(":")
            targets.append((host, int(port)))
        pids = [n.pid for n in nodes if n.pid is not None]
        cpu0 = {pid: proc_cpu_s(pid) for pid in pids}
        res = run_load_sync(
            *targets[0],
            clients=clients,
            duration_s=duration_s,
            make_request=make_request,
            warmup_s=WARMUP_S,
            headers=_HEADERS,
            tls=self._ssl(),
            extra_targets=targets[1:],
        )
        d = res.to_dict()
        used = {pid: proc_cpu_s(pid) - cpu0[pid] for pid in pids}
        d["leader_cpu_s"] = round(used.get(nodes[0].pid, 0.0), 2)
        if all_nodes:
            d["nodes_cpu_s"] = round(sum(used.values()), 2)
        return d

    # -- workloads -------------------------------------------------------------

    def write(self, clients: int, duration_s: float) -> dict:
        return self._load(clients, duration_s, KVPutRequests(self.value_size))

    def read(self, clients: int, duration_s: float) -> dict:
        api = self.leader_api()
        self.http.put(self._url(api, f"/v1/kv/{READ_KEY}"), json={"value": "x" * self.value_size})
        path = f"/v1/kv/{READ_KEY}?consistency=linearizable"
        return self._load(clients, duration_s, lambda c, s: ("GET", path, b""), all_nodes=True)

    def failover(self) -> float:
        old = self.c.wait_for_leader()
        leader = self.c.node(old).api_address
        survivors = [n.api_address for n in self.c.nodes if n.id != old]
        probe = WriteProbe("PUT", "/v1/kv/failover", lambda seq: {"value": str(seq)})
        try:
            return measure_failover(leader, survivors, lambda: self.c.kill(old), probe)
        finally:
            self.c.start(old)
            self._wait_caught_up(old)

    def _wait_caught_up(self, node_id: str, timeout_s: float = 30.0) -> None:
        api = self.c.node(node_id).api_address
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lead = self.http.get(self._url(self.leader_api(), "/v1/status")).json()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                st = self.http.get(self._url(api, "/v1/status")).json()
                if st["applied_index"] >= lead["commit_index"]:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{node_id} did not catch up within {timeout_s:.0f}s")

    # -- catch-up of a new learner ----------------------------------------------

    def catchup(self, entries: int, fill_clients: int = 64) -> dict:
        """Fill to ``entries`` committed writes, add an empty learner, time its catch-up."""
        api = self.leader_api()
        t_fill = time.monotonic()
        while self.http.get(self._url(api, "/v1/status")).json()["commit_index"] < entries:
            self.write(fill_clients, 5.0)
        fill_s = time.monotonic() - t_fill
        lead = self.http.get(self._url(api, "/v1/status")).json()
        catchup_s = self.add_learner_and_wait("n4")
        return {
            "entries": lead["commit_index"],
            "snapshot_index": lead["snapshot_index"],
            "fill_s": round(fill_s, 1),
            "catchup_s": round(catchup_s, 2),
            "peak_rss_mb": {n.id: peak_rss_mb(n.pid) for n in self.c.nodes if n.pid},
        }

    def add_learner_and_wait(self, node_id: str, timeout_s: float = 300.0) -> float:
        """Start an empty node, add it as a learner, and time it until it has applied
        the leader's commit index as of the addition (seconds)."""
        api = self.leader_api()
        target = self.http.get(self._url(api, "/v1/status")).json()["commit_index"]
        learner = self.c.add_node(node_id)
        t0 = time.monotonic()
        r = self.http.post(
            self._url(api, "/v1/admin/membership"),
            json={
                "action": "add_learner",
                "id": node_id,
                "peer_address": learner.peer_address,
                "api_address": learner.api_address,
            },
            timeout=30.0,
        )
        r.raise_for_status()
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                st = self.http.get(self._url(learner.api_address, "/v1/status")).json()
                if st["applied_index"] >= target:
                    return round(time.monotonic() - t0, 2)
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"the learner did not catch up within {timeout_s:.0f} s")
            time.sleep(0.02)


def run_embedded(fsync: str, clients: list[int], duration_s: float, runs: int) -> list[dict]:
    """Embedded proposals (:mod:`mcp_server.bench.embedded`), in a process of its own."""
    cmd = [sys.executable, "-m", "mcp_server.bench.embedded", "--fsync", fsync]
    cmd += ["--clients", ",".join(map(str, clients)), "--duration", str(duration_s)]
    cmd += ["--runs", str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"embedded benchmark failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)
