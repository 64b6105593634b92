"""Helpers for tests that run real ``raft-node`` processes through ``LocalCluster``.

* every cluster gets its own block of ports (``testkit.reserve_base_port``), checked
  free and reserved across concurrent test runs, so tests never collide.
* :class:`ClusterFactory` starts clusters with fast timing settings and always tears
  them down (``down()``), printing the tail of every node's log so a failing test shows
  what the nodes said (pytest only displays it on failure). Like ``cluster up`` it
  starts them secure by default (peer mutual TLS, HTTPS API; ``insecure=True`` for
  none): :func:`url` knows each node's scheme and :func:`http_client` trusts the CA of
  every cluster started so far.
* :class:`Client` is a small synchronous httpx client that follows 421 leader hints,
  rotates over nodes on connection errors and (optionally) retries 503s; with
  :class:`SessionClient` every write carries ``client_id``/``seq`` so retries are
  exactly-once.
* bounded polling (``testkit.wait_until``) instead of bare sleeps, WAL damage helpers, a
  Prometheus text parser.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from testkit import release_base_port, reserve_base_port, wait_until

from mcp_server.local import LocalCluster, LocalNode, LocalSettings

T = TypeVar("T")

# Fast timing: a 20 ms tick and elections after 10-20 ticks (200-400 ms).
FAST = {"tick_ms": 20, "election_ticks": 10}
ELECTION_TIMEOUT_MAX_S = FAST["tick_ms"] * FAST["election_ticks"] * 2 / 1000

# -- clusters ----------------------------------------------------------------------------


def log_path(cluster: LocalCluster, node_id: str) -> Path:
    return cluster.dir / f"{node_id}.log"


def log_text(cluster: LocalCluster, node_id: str) -> str:
    p = log_path(cluster, node_id)
    return p.read_text(errors="replace") if p.exists() else ""


class ClusterFactory:
    """Starts clusters for one test and always tears them down."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clusters: list[LocalCluster] = []
        self.base_ports: dict[int, int] = {}

    def up(self, nodes: int = 3, *, insecure: bool = False, **settings: Any) -> LocalCluster:
        s = LocalSettings(**{**FAST, **settings})
        base = reserve_base_port()
        d = self.tmp_path / f"cluster{len(self.clusters)}"
        try:
            c = LocalCluster.up(
                d, nodes=nodes, base_port=base, settings=s, wait_s=30, insecure=insecure
            )
            register(c)
        except BaseException:
            # up() leaves its processes running when no leader shows up: stop them too.
            with contextlib.suppress(Exception):
                c = LocalCluster.load(d)
                self.clusters.append(c)
                self.base_ports[id(c)] = base
            if not self.clusters or self.base_ports.get(id(self.clusters[-1])) != base:
                release_base_port(base)
            raise
        self.clusters.append(c)
        self.base_ports[id(c)] = base
        return c

    def base_port(self, cluster: LocalCluster) -> int:
        return self.base_ports[id(cluster)]

    def close(self) -> None:
        for c in self.clusters:
            try:
                c.down(grace_s=5.0)  # SIGTERM, then SIGKILL after the grace period
            except Exception as e:  # still make sure nothing outlives the test
                print(f"down() failed: {e!r}")
                for n in c.nodes:
                    if n.pid and c.alive(n):  # only our own, still-running children
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(n.pid, signal.SIGKILL)
            release_base_port(self.base_ports.pop(id(c), -1))
            for n in c.nodes:
                lines = log_text(c, n.id).splitlines()[-40:]
                print(f"----- {n.id}.log (last {len(lines)} lines) -----")
                print("\n".join(lines))


# -- HTTP --------------------------------------------------------------------------------


# Every CA of a cluster started by the tests; clients built here trust them all.
TEST_TLS = ssl.create_default_context()
_schemes: dict[str, str] = {}  # API address -> "http" / "https"
_clusters: list[Path] = []


def register(cluster: LocalCluster) -> None:
    """Remember a cluster's API scheme per address and trust its CA."""
    if cluster.dir not in _clusters:
        _clusters.append(cluster.dir)
        if cluster.settings.ca_file:
            TEST_TLS.load_verify_locations(cafile=cluster.settings.ca_file)
    for n in cluster.nodes:
        _schemes[n.api_address] = cluster.settings.api_scheme


def url(node: LocalNode | str, path: str) -> str:
    addr = node if isinstance(node, str) else node.api_address
    if addr not in _schemes:  # a member added since: its cluster.yaml names it now
        for d in reversed(_clusters):
            with contextlib.suppress(Exception):
                register(LocalCluster.load(d))
    return f"{_schemes.get(addr, 'http')}://{addr}{path}"


def http_client(**kw: Any) -> httpx.Client:
    """An httpx client for the tests' clusters (HTTPS ones included)."""
    return httpx.Client(verify=TEST_TLS, **kw)


def kv_path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="")


_local = threading.local()


def shared_http() -> httpx.Client:
    """A per-thread client for quick probes (creating one per call costs tens of ms)."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = http_client(timeout=3.0)
    return client


def status_of(node: LocalNode) -> dict | None:
    """GET /v1/status of one node, None if it does not answer 200."""
    try:
        r = shared_http().get(url(node, "/v1/status"))
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def find_leader(
    cluster: LocalCluster, among: Iterable[str] | None = None, min_term: int = 0
) -> dict | None:
    """Status of a node that says it is the leader (term >= min_term), else None."""
    ids = set(among) if among is not None else {n.id for n in cluster.nodes}
    best = None
    for n in cluster.nodes:
        if n.id not in ids:
            continue
        st = status_of(n)
        good = st and st["role"] == "leader" and st["term"] >= min_term
        if good and (best is None or st["term"] > best["term"]):
            best = st
    return best


def wait_leader(
    cluster: LocalCluster, among: Iterable[str] | None = None, min_term: int = 0, timeout=15.0
) -> dict:
    ids = list(among) if among is not None else None
    return wait_until(
        lambda: find_leader(cluster, ids, min_term), timeout, f"a leader (term >= {min_term})"
    )


def wait_applied(cluster: LocalCluster, node_id: str, index: int, timeout: float = 15.0) -> dict:
    n = cluster.node(node_id)

    def check() -> dict | None:
        st = status_of(n)
        return st if st and st["applied_index"] >= index else None

    return wait_until(check, timeout, f"{node_id} to apply index {index}")


def assert_error(r: httpx.Response, status: int | tuple[int, ...], code: str | None = None) -> dict:
    """The response is an error with the contract body ``{"error", "message"}``."""
    allowed = (status,) if isinstance(status, int) else status
    assert r.status_code in allowed, f"expected {allowed}, got {r.status_code}: {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["error"] == code, body
    return body


def digest_at(node, at: int) -> dict:
    r = shared_http().get(url(node, "/v1/admin/digest"), params={"at": at})
    assert r.status_code == 200, r.text
    return r.json()


def assert_same_digest(c: LocalCluster, ids: list[str], timeout: float = 15.0) -> int:
    """Wait until the nodes applied the same index, then compare their chains there."""

    def common() -> int | None:
        sts = [status_of(c.node(i)) for i in ids]
        if any(s is None for s in sts):
            return None
        applied = {s["applied_index"] for s in sts}
        return applied.pop() if len(applied) == 1 else None

    at = wait_until(common, timeout, f"{ids} to reach a common applied index")
    chains = {i: digest_at(c.node(i), at) for i in ids}
    assert len({d["chain"] for d in chains.values()}) == 1, chains
    assert len({d["applied_term"] for d in chains.values()}) == 1, chains
    return at


class Client:
    """Synchronous cluster client: follows 421 hints, rotates nodes on errors.

    ``only`` restricts it to some node ids (a partition's majority side).
    ``retry_unavailable`` also retries 503 answers (safe for reads and for writes that
    carry a session; an unsessioned write retried after a 503 may apply twice).
    """

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        token: str | None = None,
        timeout: float = 7.0,
        only: Iterable[str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.only = set(only) if only is not None else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http_client(timeout=timeout, headers=headers)
        self.target: str | None = None
        self._rr = itertools.count()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def addresses(self) -> list[str]:
        return [n.api_address for n in self.cluster.nodes if self.only is None or n.id in self.only]

    def _next(self) -> str:
        addrs = self.addresses()
        return addrs[next(self._rr) % len(addrs)]

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        deadline_s: float = 20.0,
        retry_unavailable: bool = True,
    ) -> httpx.Response:
        deadline = time.monotonic() + deadline_s
        target = self.target or self._next()
        while True:
            r: httpx.Response | None = None
            err: Exception | None = None
            try:
                r = self.http.request(method, url(target, path), json=json, params=params)
            except httpx.TransportError as e:
                err = e
            if r is not None and r.status_code == 421:
                hint = r.json().get("leader_api")
                if hint and hint != target and hint in self.addresses():
                    target = hint
                    continue  # follow the hint right away
                target = self._next()
            elif r is not None and r.status_code == 503 and retry_unavailable:
                target = self._next()
            elif r is not None:
                self.target = target
                return r
            else:
                target = self._next()
            if time.monotonic() >= deadline:
                if r is not None:
                    return r
                raise AssertionError(f"{method} {path}: no node answered ({err!r})")
            time.sleep(0.05)

    # conveniences ------------------------------------------------------------------

    def ok(self, method: str, path: str, **kw: Any) -> dict:
        r = self.request(method, path, **kw)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def get(self, key: str, consistency: str = "linearizable") -> dict:
        return self.ok("GET", kv_path(key), params={"consistency": consistency})

    def put(self, key: str, value: str) -> dict:
        # Retrying an unsessioned PUT is harmless: it writes the same value again.
        return self.ok("PUT", kv_path(key), json={"value": value})

    def leader_address(self) -> str:
        # Not a read: followers serve linearizable reads too (ReadIndex).
        lead = wait_leader(self.cluster, among=self.only)
        self.target = self.cluster.node(lead["id"]).api_address
        return self.target


class SessionClient:
    """Writes with a client session: each command gets the next ``seq`` and is retried
    with the same one until acknowledged, so it applies exactly once."""

    def __init__(self, client: Client, client_id: str) -> None:
        self.client = client
        self.client_id = client_id
        self.seq = 0

    def _write(self, method: str, path: str, body: dict, deadline_s: float) -> dict:
        self.seq += 1
        body = {**body, "client_id": self.client_id, "seq": self.seq}
        return self.client.ok(method, path, json=body, deadline_s=deadline_s)

    def put(self, key: str, value: str, deadline_s: float = 20.0) -> dict:
        return self._write("PUT", kv_path(key), {"value": value}, deadline_s)

    def delete(self, key: str, deadline_s: float = 20.0) -> dict:
        return self._write("DELETE", kv_path(key), {}, deadline_s)

    def cas(self, key: str, expected: str | None, value: str | None, deadline_s=20.0) -> dict:
        return self._write(
            "POST", kv_path(key) + "/cas", {"expected": expected, "value": value}, deadline_s
        )


@dataclass
class Ack:
    key: str
    value: str
    index: int
    term: int
    at: float  # time.monotonic() when the acknowledgement arrived


@dataclass
class BackgroundWriter:
    """A thread writing distinct keys (and rewriting one hot key) with a session,
    retrying through leader hints; it records every acknowledged write."""

    cluster: LocalCluster
    client_id: str
    prefix: str = "bg"
    acks: list[Ack] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{self.client_id}")
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the background writer did not stop"

    def snapshot(self) -> list[Ack]:
        with self._lock:
            return list(self.acks)

    def _run(self) -> None:
        with Client(self.cluster, timeout=3.0) as client:
            session = SessionClient(client, self.client_id)
            i = 0
            while not self._stop.is_set():
                i += 1
                key = f"{self.prefix}-hot" if i % 5 == 0 else f"{self.prefix}-{i}"
                value = f"v{i}"
                try:
                    out = session.put(key, value, deadline_s=20.0)
                except AssertionError as e:
                    self.errors.append(str(e))
                    return
                with self._lock:
                    self.acks.append(Ack(key, value, out["index"], out["term"], time.monotonic()))

    def expected(self) -> dict[str, str]:
        """The last acknowledged value of every key (the writer is sequential)."""
        out: dict[str, str] = {}
        for a in self.snapshot():
            out[a.key] = a.value
        return out


# -- metrics -----------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(name, ((label, value), ...)): sample}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        labels: tuple[tuple[str, str], ...] = ()
        name = head
        if "{" in head:
            name, _, rest = head.partition("{")
            pairs = []
            for item in filter(None, rest.rstrip("}").split(",")):
                k, _, v = item.partition("=")
                pairs.append((k, v.strip('"')))
            labels = tuple(sorted(pairs))
        out[(name, labels)] = float(value)
    return out


def metric(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def metrics_of(node: LocalNode) -> dict:
    r = shared_http().get(url(node, "/metrics"))
    assert r.status_code == 200, r.text
    return parse_metrics(r.text)


# -- WAL damage --------------------------------------------------------------------------


def wal_segments(data_dir: str | Path) -> list[Path]:
    return sorted((Path(data_dir) / "wal").glob("*.wal"))


def append_torn_tail(data_dir: str | Path, garbage: bytes) -> tuple[Path, int]:
    """Append bytes to the newest WAL segment, as a crash mid-write would leave them."""
    seg = wal_segments(data_dir)[-1]
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(garbage)
    return seg, size


def corrupt_early_record(data_dir: str | Path) -> tuple[Path, int]:
    """Flip bytes inside the first batch record of a segment that has later records.

    Returns (segment, byte offset of the damaged record).
    """
    from raft_core.node.wal import REC_HEADER_SIZE, scan_records

    for seg in wal_segments(data_dir):
        data = bytearray(seg.read_bytes())
        records, _bad = scan_records(bytes(data))
        if len(records) < 4:
            continue
        off, _rtype, payload = records[1]  # records[0] is the segment header
        mid = off + REC_HEADER_SIZE + len(payload) // 2
        data[mid] ^= 0xFF
        data[mid + 1 if len(payload) > 2 else mid] ^= 0x5A
        seg.write_bytes(bytes(data))
        return seg, off
    raise AssertionError(f"no WAL segment in {data_dir} with enough records to damage")


def node_argv(cluster: LocalCluster, n: LocalNode) -> list[str]:
    """Command line of the ``raft-node`` console script for a founding node."""
    founders = [m for m in cluster.nodes if not m.join]
    script = Path(sys.executable).parent / "raft-node"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "raft_core.node.main"]
    s = cluster.settings
    return [
        *head,
        "--id", n.id,
        "--data-dir", n.data_dir,
        "--peer-listen", n.peer_address,
        "--api-listen", n.api_address,
        "--peers", ",".join(f"{f.id}={f.peer_address}" for f in founders),
        "--peer-apis", ",".join(f"{f.id}={f.api_address}" for f in founders),
        "--fsync", s.fsync,
        "--tick-ms", str(s.tick_ms),
        "--election-ticks", str(s.election_ticks),
    ]  # fmt: skip


# -- raw peer connections ----------------------------------------------------------------


def peer_host_port(n: LocalNode) -> tuple[str, int]:
    host, _, port = n.peer_address.rpartition(":")
    return host, int(port)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True if the node closes (or resets) the connection within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not chunk:
            return True
    return False


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def read_frame(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < 4:
        chunk = sock.recv(4 - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    n = int.from_bytes(buf, "big")
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return body
