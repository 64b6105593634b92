"""Start, stop, kill and restart a local raft_core cluster of ``raft-node`` processes.

State lives in ``DIR/cluster.yaml`` (its ``nodes`` list is a contract other tools
read) and each node writes ``DIR/<id>.log``. Processes run in their own session, so
they outlive the command that started them, as ``cluster up`` promises.
``ensure_running`` starts the embedded default cluster when asked to (never as a side
effect of a read: ``Manager.open(start_local=True)`` is the one caller).

Peer authentication is on by default (``security``): ``settings.peer_auth`` says which,
``settings.api_scheme`` how to reach the API (``https`` on a TLS cluster, verified with
``settings.ca_file``); the address strings stay ``HOST:PORT``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import yaml

from . import pids, security
from .ports import free_base_port
from .security import PeerAuth

CLUSTER_FILE = "cluster.yaml"
# LocalNode fields written to cluster.yaml only when set (older files have none of them).
_OPTIONAL = ("join", "netns", "config_file")


class ClusterError(RuntimeError):
    """A launcher problem, phrased for the operator."""


@dataclass
class LocalNode:
    id: str
    peer_address: str
    api_address: str
    data_dir: str
    pid: int | None = None
    join: bool = False
    # A member on a host of its own (docs/design.md, "Beyond one machine"): the network
    # namespace it runs in (``ip netns exec``) and its host's ``raft-node --config``
    # file (``certs issue --peers``), which then holds every option of the process.
    netns: str | None = None
    config_file: str | None = None


@dataclass
class LocalSettings:
    fsync: str = "always"
    allow_fault_injection: bool = False
    tick_ms: int = 50
    election_ticks: int = 10
    api_token_file: str | None = None
    cluster_secret_file: str | None = None
    snapshot_entries: int = 10_000
    keep_entries: int = 1_000
    # Peer authentication the launcher set up (see ``security``). The defaults describe
    # a cluster.yaml written before there was any: no peer authentication, plain HTTP.
    peer_auth: PeerAuth = "none"
    api_scheme: str = "http"
    ca_file: str | None = None


def check_can_start(
    d: Path, nodes: int, running: list[str] | None, down: str, what: str = "a cluster"
) -> None:
    """Refuse an ``up`` in ``d`` while members of an earlier cluster there still run
    (``running``), or of a size the launchers do not make. ``what`` names the cluster
    in the message ("a NATS cluster")."""
    if running:
        raise ClusterError(
            f"{what} is already running in {d} ({', '.join(running)}); "
            f"run `{down}` first or pick another --dir"
        )
    if not 1 <= nodes <= 9:
        raise ClusterError("--nodes must be between 1 and 9")


@dataclass
class LocalCluster:
    dir: Path
    nodes: list[LocalNode] = field(default_factory=list)
    settings: LocalSettings = field(default_factory=LocalSettings)

    # -- persistence -----------------------------------------------------------

    @classmethod
    def load(cls, directory: Path | str) -> LocalCluster:
        d = Path(directory)
        path = d / CLUSTER_FILE
        if not path.exists():
            raise ClusterError(
                f"no cluster at {d} ({CLUSTER_FILE} missing); run `cluster up` first"
            )
        try:
            doc = yaml.safe_load(path.read_text()) or {}
            nodes = [LocalNode(**n) for n in doc.get("nodes", [])]
            settings = LocalSettings(**doc.get("settings", {}))
        except (yaml.YAMLError, TypeError) as e:
            raise ClusterError(f"{path} is not a cluster file this tool wrote: {e}") from e
        return cls(d, nodes, settings)

    def save(self) -> None:
        doc = {
            "nodes": [
                {k: v for k, v in asdict(n).items() if v or k not in _OPTIONAL} for n in self.nodes
            ],
            "settings": asdict(self.settings),
        }
        tmp = self.dir / (CLUSTER_FILE + ".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.replace(tmp, self.dir / CLUSTER_FILE)

    def node(self, node_id: str) -> LocalNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ClusterError(
            f"unknown node {node_id!r}; this cluster has {', '.join(n.id for n in self.nodes)}"
        )

    # -- processes -------------------------------------------------------------

    def _args(self, n: LocalNode, founders: list[LocalNode]) -> list[str]:
        s = self.settings
        peers = ",".join(f"{f.id}={f.peer_address}" for f in founders)
        apis = ",".join(f"{f.id}={f.api_address}" for f in founders)
        args = [
            sys.executable, "-m", "raft_core.node.main",
            "--id", n.id,
            "--data-dir", n.data_dir,
            "--peer-listen", n.peer_address,
            "--api-listen", n.api_address,
            "--peers", peers,
            "--peer-apis", apis,
            "--fsync", s.fsync,
            "--tick-ms", str(s.tick_ms),
            "--election-ticks", str(s.election_ticks),
            "--snapshot-entries", str(s.snapshot_entries),
            "--keep-entries", str(s.keep_entries),
        ]  # fmt: skip
        if n.join:
            args.append("--join")
        if s.allow_fault_injection:
            args.append("--allow-fault-injection")
        if s.api_token_file:
            args += ["--api-token-file", s.api_token_file]
        if s.cluster_secret_file:
            args += ["--cluster-secret-file", s.cluster_secret_file]
        return args + security.node_args(s, n.id)

    def _spawn(self, n: LocalNode) -> None:
        # A joining node learns the others' addresses from its peers list.
        founders = self.nodes if n.join else [m for m in self.nodes if not m.join]
        if n.join and n not in founders:
            founders = [*founders, n]
        if n.config_file:
            args = [sys.executable, "-m", "raft_core.node.main", "--config", n.config_file]
        else:
            args = self._args(n, founders)
        if n.netns:
            args = ["ip", "netns", "exec", n.netns, *args]  # exec: the pid is raft-node's
        n.pid = pids.spawn(args, self.dir / f"{n.id}.log", self.dir)

    def alive(self, n: LocalNode) -> bool:
        return pids.alive(n.pid)

    @classmethod
    def up(
        cls,
        directory: Path | str,
        nodes: int = 3,
        base_port: int = 7100,
        settings: LocalSettings | None = None,
        wait_s: float = 20.0,
        progress: Callable[[str], None] | None = None,
        insecure: bool = False,
    ) -> LocalCluster:
        """Start ``nodes`` processes in ``directory``. Unless ``insecure`` (or ``settings``
        already name a cluster secret), peer authentication is set up first: TLS
        certificates from a new CA, else a cluster secret (``security``)."""
        d = Path(directory).resolve()
        old = cls.load(d) if (d / CLUSTER_FILE).exists() else None
        check_can_start(d, nodes, old and [n.id for n in old.nodes if old.alive(n)], "cluster down")
        d.mkdir(parents=True, exist_ok=True)
        c = cls(d, [], settings or LocalSettings())
        for i in range(1, nodes + 1):
            c.nodes.append(
                LocalNode(
                    id=f"n{i}",
                    peer_address=f"127.0.0.1:{base_port + i}",
                    api_address=f"127.0.0.1:{base_port + 100 + i}",
                    data_dir=str(d / f"n{i}"),
                )
            )
        if not insecure and c.settings.peer_auth == "none" and not c.settings.cluster_secret_file:
            security.provision(d, [n.id for n in c.nodes], security.default_peer_auth(), c.settings)
        elif c.settings.cluster_secret_file:
            c.settings.peer_auth = "secret"
        for n in c.nodes:
            c._spawn(n)
        c.save()
        if progress:
            progress(f"started {nodes} raft-node processes in {d}")
        c.wait_for_leader(wait_s)
        return c

    def down(self, grace_s: float = 5.0) -> list[str]:
        """Stop every node (see ``pids.stop``); the ids of those that were running."""
        running = pids.stop([n.pid for n in self.nodes], grace_s)
        for n in self.nodes:
            n.pid = None
        self.save()
        return [n.id for n, up in zip(self.nodes, running, strict=True) if up]

    def kill(self, node_id: str) -> None:
        self.signal(node_id, signal.SIGKILL)

    def signal(self, node_id: str, sig: signal.Signals) -> None:
        """Send ``sig`` (SIGKILL, SIGSTOP, SIGCONT) to a running node."""
        n = self.node(node_id)
        if not self.alive(n):
            raise ClusterError(f"{node_id} is not running")
        pids.send(n.pid, sig)  # type: ignore[arg-type]

    def frozen(self, n: LocalNode) -> bool:
        return pids.frozen(n.pid)

    def start(self, node_id: str, wait_s: float = 10.0) -> None:
        n = self.node(node_id)
        if self.alive(n):
            raise ClusterError(f"{node_id} is already running (pid {n.pid})")
        self._spawn(n)
        self.save()
        self.wait_for_api(n, wait_s)

    def addresses_for(self, node_id: str, base_port: int | None = None) -> tuple[str, str]:
        """(peer, API) address of ``node_id``: its own if known, else the next free pair
        above ``base_port`` (default: above the highest peer port in use)."""
        for n in self.nodes:
            if n.id == node_id:
                return n.peer_address, n.api_address
        ports = [int(n.peer_address.rpartition(":")[2]) for n in self.nodes]
        port = (base_port or max(ports)) + 1
        while any(n.peer_address.endswith(f":{port}") for n in self.nodes):
            port += 1
        return f"127.0.0.1:{port}", f"127.0.0.1:{port + 100}"

    def add_node(self, node_id: str, base_port: int | None = None) -> LocalNode:
        """Start an empty process that the cluster can then add (``member add-learner``)."""
        if any(n.id == node_id for n in self.nodes):
            raise ClusterError(f"{node_id} already exists in this cluster")
        if any(n.netns for n in self.nodes):
            raise ClusterError(
                f"this cluster's members run on hosts of their own: start {node_id} on its "
                "host with --join (docs/three-machines.md), then add it with "
                "`member add-learner --peer-address ... --api-address ...`"
            )
        peer, api = self.addresses_for(node_id, base_port)
        n = LocalNode(
            id=node_id,
            peer_address=peer,
            api_address=api,
            data_dir=str(self.dir / node_id),
            join=True,
        )
        security.issue_member(self.settings, node_id)
        self.nodes.append(n)
        self._spawn(n)
        self.save()
        self.wait_for_api(n, 10.0)
        return n

    def forget(self, node_id: str) -> None:
        """Stop a removed node's process and drop it from cluster.yaml."""
        n = self.node(node_id)
        if self.alive(n):
            with contextlib.suppress(ProcessLookupError):
                os.kill(n.pid, signal.SIGTERM)  # type: ignore[arg-type]
        self.nodes = [m for m in self.nodes if m.id != node_id]
        self.save()

    # -- the API ---------------------------------------------------------------

    def url(self, n: LocalNode, path: str) -> str:
        return f"{self.settings.api_scheme}://{n.api_address}{path}"

    def http_client(self, timeout: float | httpx.Timeout = 1.0) -> httpx.Client:
        """An HTTP client for this cluster's API: it trusts the cluster's CA, if any.
        Keep one for many requests: each new TLS connection costs a handshake."""
        verify: ssl.SSLContext | bool = True
        if self.settings.ca_file:
            verify = ssl.create_default_context(cafile=self.settings.ca_file)
        return httpx.Client(timeout=timeout, verify=verify)

    # -- readiness -------------------------------------------------------------

    def _status(self, n: LocalNode, client: httpx.Client) -> dict | None:
        try:
            r = client.get(self.url(n, "/v1/status"))
            return r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def wait_for_api(self, n: LocalNode, wait_s: float) -> dict:
        deadline = time.monotonic() + wait_s
        with self.http_client() as client:
            while time.monotonic() < deadline:
                st = self._status(n, client)
                if st is not None:
                    return st
                if not self.alive(n):
                    raise ClusterError(f"{n.id} exited; see {self.dir / (n.id + '.log')}")
                time.sleep(0.05)
        raise ClusterError(f"{n.id} did not answer on {n.api_address} within {wait_s:.0f}s")

    def wait_for_leader(self, wait_s: float = 20.0) -> str:
        deadline = time.monotonic() + wait_s
        with self.http_client() as client:
            while time.monotonic() < deadline:
                for n in self.nodes:
                    st = self._status(n, client)
                    if st and st.get("role") == "leader":
                        return n.id
                dead = [n.id for n in self.nodes if not self.alive(n)]
                if dead and len(dead) == len(self.nodes):
                    logs = ", ".join(str(self.dir / f"{d}.log") for d in dead)
                    raise ClusterError(f"every node exited; see {logs}")
                time.sleep(0.05)
        raise ClusterError(f"no leader elected within {wait_s:.0f}s; see the logs in {self.dir}")


def is_running(directory: Path | str) -> bool:
    d = Path(directory)
    if not (d / CLUSTER_FILE).exists():
        return False
    lc = LocalCluster.load(d)
    return any(lc.alive(n) for n in lc.nodes)


def ensure_running(
    directory: Path | str,
    *,
    nodes: int = 3,
    base_port: int | None = None,
    settings: LocalSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """Start the local cluster in ``directory`` unless some of it runs; True if started.
    A new one gets peer authentication, as every ``LocalCluster.up`` cluster does."""
    d = Path(directory)
    say = progress or (lambda _: None)
    if (d / CLUSTER_FILE).exists():
        lc = LocalCluster.load(d)
        if any(lc.alive(n) for n in lc.nodes):
            return False
        say(f"starting the local cluster in {d}")
        for n in lc.nodes:
            lc.start(n.id)
        lc.wait_for_leader()
        return True
    say(f"creating a local {nodes}-node cluster in {d}")
    base = base_port if base_port is not None else free_base_port()
    if base is None:
        raise ClusterError("no free block of loopback ports found; set base_port")
    LocalCluster.up(
        d,
        nodes=nodes,
        base_port=base,
        settings=settings or LocalSettings(allow_fault_injection=True),
        progress=progress,
    )
    return True
