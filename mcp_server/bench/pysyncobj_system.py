"""PySyncObj's side of the comparison: 3 processes of :mod:`.pysyncobj_node` on loopback.

The leader process runs the closed-loop callers and reports, as PySyncObj's own
benchmark does; there is no HTTP in the path and PySyncObj never fsyncs, so its
figures are an in-process, in-memory reference, compared with our embedded proposals
as well as with our HTTP writes. It has no linearizable read, so no read row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

from .scratch import scratch_base_port

NOTE = "PySyncObj never fsyncs; callers run inside its leader process (no HTTP)"


@dataclass
class _Member:
    addr: str
    proc: subprocess.Popen | None = None


class PySyncObjCluster:
    """A fresh 3-process PySyncObj cluster; a context manager."""

    def __init__(self) -> None:
        self.members: list[_Member] = []

    def __enter__(self) -> PySyncObjCluster:
        base = scratch_base_port(27000)
        self.members = [_Member(f"127.0.0.1:{base + i}") for i in (1, 2, 3)]
        for m in self.members:
            self._spawn(m)
        self.leader()
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.members:
            self._stop(m)

    def _spawn(self, m: _Member) -> None:
        partners = [x.addr for x in self.members if x is not m]
        m.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_server.bench.pysyncobj_node", m.addr, *partners],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    @staticmethod
    def _stop(m: _Member) -> None:
        if m.proc is None:
            return
        if m.proc.poll() is None:
            m.proc.kill()
        m.proc.wait()
        for f in (m.proc.stdin, m.proc.stdout):
            if f is not None:
                f.close()
        m.proc = None

    @staticmethod
    def _ask(m: _Member, command: str) -> dict:
        assert m.proc is not None and m.proc.stdin is not None and m.proc.stdout is not None
        m.proc.stdin.write(command + "\n")
        m.proc.stdin.flush()
        line = m.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"PySyncObj member {m.addr} exited")
        return json.loads(line)

    def leader(self, timeout_s: float = 30.0) -> _Member:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is not None and self._ask(m, "status")["leader"]:
                    return m
            time.sleep(0.05)
        raise RuntimeError(f"PySyncObj elected no leader within {timeout_s:.0f}s")

    def write(self, clients: int, duration_s: float) -> dict:
        return self._ask(self.leader(), f"load {clients} {duration_s}")

    def failover(self) -> float:
        """Kill -9 the leader after a moment of light load; seconds until a survivor's
        write commits (each survivor probes every 10 ms and reports the commit time)."""
        old = self.leader()
        self._ask(old, "load 1 0.5")
        survivors = [m for m in self.members if m is not old]
        assert old.proc is not None
        old.proc.kill()
        t0 = time.time()
        for m in survivors:
            assert m.proc is not None and m.proc.stdin is not None
            m.proc.stdin.write("probe\n")
            m.proc.stdin.flush()
        times = []
        for m in survivors:
            assert m.proc is not None and m.proc.stdout is not None
            ok = json.loads(m.proc.stdout.readline())["probe_ok"]
            if ok is not None:
                times.append(ok - t0)
        self._stop(old)
        self._spawn(old)
        self._wait_ready(old)
        if not times:
            raise RuntimeError("no PySyncObj write committed within 30 s of the kill")
        return min(times)

    def _wait_ready(self, m: _Member, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ask(m, "status")["ready"]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"PySyncObj member {m.addr} was not ready within {timeout_s:.0f}s")
