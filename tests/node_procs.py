"""Start ``raft-node`` processes with arbitrary extra flags (TLS, limits, secrets).

``LocalCluster`` (the launcher) speaks plain HTTP and knows only its own settings; the
tests of node-level hardening need nodes started with flags the launcher does not pass
yet, so this helper builds the command lines itself. Ports come from
:func:`testkit.reserve_base_port` and are released at teardown, after every process is
stopped.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from proc_helpers import FAST
from testkit import release_base_port, reserve_base_port, wait_until


@dataclass
class NodeProc:
    id: str
    peer: str
    api: str
    data_dir: Path
    log: Path
    argv: list[str]
    proc: subprocess.Popen | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class NodeProcs:
    tmp_path: Path
    nodes: dict[str, NodeProc] = field(default_factory=dict)
    bases: list[int] = field(default_factory=list)

    def define(
        self,
        ids: Sequence[str],
        extra: Callable[[str], list[str]] = lambda _id: [],
        *,
        founders: Sequence[str] | None = None,
    ) -> dict[str, NodeProc]:
        """Command lines for ``ids`` (founding members: ``founders`` or all of them)."""
        base = reserve_base_port()
        self.bases.append(base)
        founders = list(founders if founders is not None else ids)
        addrs = {
            nid: (f"127.0.0.1:{base + i + 1}", f"127.0.0.1:{base + 101 + i}")
            for i, nid in enumerate(ids)
        }
        peers = ",".join(f"{f}={addrs[f][0]}" for f in founders)
        apis = ",".join(f"{f}={addrs[f][1]}" for f in founders)
        for nid in ids:
            d = self.tmp_path / nid
            d.mkdir(parents=True, exist_ok=True)
            argv = [
                sys.executable, "-m", "raft_core.node.main",
                "--id", nid,
                "--data-dir", str(d / "data"),
                "--peer-listen", addrs[nid][0],
                "--api-listen", addrs[nid][1],
                "--peers", peers,
                "--peer-apis", apis,
                "--fsync", "never",
                "--tick-ms", str(FAST["tick_ms"]),
                "--election-ticks", str(FAST["election_ticks"]),
                *extra(nid),
            ]  # fmt: skip
            self.nodes[nid] = NodeProc(nid, *addrs[nid], d / "data", d / "node.log", argv)
        return {nid: self.nodes[nid] for nid in ids}

    def start(self, nid: str) -> NodeProc:
        n = self.nodes[nid]
        with open(n.log, "ab") as out:
            n.proc = subprocess.Popen(n.argv, stdout=out, stderr=subprocess.STDOUT)
        return n

    def stop(self, nid: str) -> None:
        n = self.nodes[nid]
        if n.proc is None or n.proc.poll() is not None:
            return
        n.proc.send_signal(signal.SIGTERM)
        try:
            n.proc.wait(5)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait(5)

    def close(self) -> None:
        for nid in self.nodes:
            with contextlib.suppress(Exception):
                self.stop(nid)
        for n in self.nodes.values():
            tail = n.log_text().splitlines()[-30:]
            print(f"----- {n.id} log (last {len(tail)} lines) -----")
            print("\n".join(tail))
        for base in self.bases:
            release_base_port(base)


def wait_for_leader(
    http: httpx.Client, scheme: str, nodes: Sequence[NodeProc], timeout: float = 20.0
) -> dict[str, Any]:
    """Status of the node that says it leads (polling every node's /v1/status)."""

    def probe() -> dict[str, Any] | None:
        for n in nodes:
            try:
                r = http.get(f"{scheme}://{n.api}/v1/status")
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and r.json()["role"] == "leader":
                return r.json()
        return None

    return wait_until(probe, timeout, "a leader")
