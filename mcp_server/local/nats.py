"""A local NATS JetStream cluster of real ``nats-server`` processes (`raft-manager nats up`).

State lives in ``DIR/nats-cluster.yaml`` (servers, ports, pids); each server has its
config in ``DIR/<name>.conf``, logs to ``DIR/<name>.log`` and keeps JetStream data in
``DIR/<name>/``. Servers listen on loopback: clients on ``base+i``, cluster routes on
``base+50+i``, monitoring (HTTP) on ``base+100+i``, inside one 200-port block.

Accounts: ``APP`` (JetStream enabled; the default for connections without a user, so
clients need no credentials on this loopback sandbox) and ``SYS``, the system account
whose user ``sys`` may remove servers from the meta group (``$JS.API.SERVER.REMOVE``);
its password is generated into ``DIR/sys.password`` and clusters.yaml names that file.

NATS's own rules shape the API (docs/design.md, "NATS JetStream"): a server joins by
being started with routes to the others (there is no "member add"); a server removed
from the peer set disables JetStream on itself and must not come back under the same
name with its old data, so ``retire`` stops it and sets its data aside.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import pids
from .cluster import ClusterError, check_can_start
from .external import ExternalCluster, set_aside

STATE_FILE = "nats-cluster.yaml"
CLUSTER_NAME = "raft-manager"
SYS_USER = "sys"
INSTALL_HINT = (
    "install it: `apt-get install nats-server` (Debian/Ubuntu ship 2.9), or set "
    "NATS_SERVER_BIN to a nats-server binary"
)
ROUTE_OFFSET, MONITOR_OFFSET = 50, 100


def find_binary() -> str | None:
    """``$NATS_SERVER_BIN``, ``nats-server`` on PATH, ``/usr/sbin/nats-server``; else None."""
    for c in (
        os.environ.get("NATS_SERVER_BIN"),
        shutil.which("nats-server"),
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


def binary_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip().rsplit("v", 1)[-1] or "unknown"


def get_json(url: str, timeout: float = 2.0) -> dict:
    """GET a monitoring endpoint; ``OSError``/``ValueError`` when it does not answer JSON."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        doc = json.loads(r.read())
    return doc if isinstance(doc, dict) else {}


@dataclass
class NatsServer:
    name: str
    client_port: int
    route_port: int
    monitor_port: int
    data_dir: str
    pid: int | None = None

    @property
    def client_url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def route_url(self) -> str:
        return f"nats://127.0.0.1:{self.route_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"


@dataclass
class NatsLocalCluster(ExternalCluster):
    state_file = STATE_FILE
    member_type = NatsServer
    key = "servers"
    noun = "server"
    up_command = "nats up"

    dir: Path
    binary: str
    base_port: int
    servers: list[NatsServer] = field(default_factory=list)

    def server(self, name: str) -> NatsServer:
        return self.find(name)

    @property
    def password_file(self) -> Path:
        return self.dir / "sys.password"

    def client_urls(self) -> list[str]:
        return [s.client_url for s in self.servers]

    def monitor_urls(self) -> list[str]:
        return [s.monitor_url for s in self.servers]

    # -- processes -------------------------------------------------------------

    def _config(self, s: NatsServer) -> str:
        routes = ", ".join(json.dumps(x.route_url) for x in self.servers if x.name != s.name)
        password = self.password_file.read_text().strip()
        return "\n".join(
            [
                f"server_name: {json.dumps(s.name)}",
                f"listen: 127.0.0.1:{s.client_port}",
                f"http: 127.0.0.1:{s.monitor_port}",
                f"jetstream {{ store_dir: {json.dumps(s.data_dir)} }}",
                "accounts {",
                f"  SYS {{ users = [{{user: {SYS_USER}, password: {json.dumps(password)}}}] }}",
                "  APP { jetstream: enabled, users = [{user: app, password: app}] }",
                "}",
                "system_account: SYS",
                "no_auth_user: app",
                f"cluster {{ name: {CLUSTER_NAME}, listen: 127.0.0.1:{s.route_port}, "
                f"routes: [{routes}] }}",
                "",
            ]
        )

    def _spawn(self, s: NatsServer) -> None:
        conf = self.dir / f"{s.name}.conf"
        conf.write_text(self._config(s))
        s.pid = pids.spawn([self.binary, "-c", str(conf)], self.dir / f"{s.name}.log", self.dir)

    @classmethod
    def up(
        cls,
        directory: Path | str,
        *,
        nodes: int = 3,
        base_port: int,
        binary: str | None = None,
        wait_s: float = 30.0,
    ) -> NatsLocalCluster:
        """Start ``nodes`` servers and wait until JetStream has a meta leader everywhere."""
        d = Path(directory).resolve()
        old = cls.load(d) if (d / STATE_FILE).exists() else None
        running = old and [s.name for s in old.servers if old.alive(s)]
        check_can_start(d, nodes, running, "nats down", "a NATS cluster")
        binary = binary or find_binary()
        if binary is None:
            raise ClusterError(f"no nats-server binary found; {INSTALL_HINT}")
        d.mkdir(parents=True, exist_ok=True)
        c = cls(dir=d, binary=binary, base_port=base_port)
        c.password_file.write_text(secrets.token_urlsafe(24))
        c.password_file.chmod(0o600)
        for i in range(1, nodes + 1):
            c.servers.append(c._new_server(f"n{i}", i))
        for s in c.servers:
            shutil.rmtree(s.data_dir, ignore_errors=True)  # `up` always starts a new cluster
            c._spawn(s)
        c.save()
        try:
            c.wait_ready(c.servers, wait_s)
        except ClusterError:
            c.down(grace_s=1.0)
            raise
        return c

    def _new_server(self, name: str, slot: int) -> NatsServer:
        b = self.base_port
        return NatsServer(
            name, b + slot, b + ROUTE_OFFSET + slot, b + MONITOR_OFFSET + slot, str(self.dir / name)
        )

    def start(self, name: str, wait_s: float = 20.0) -> None:
        """Start a stopped server on its existing data; wait until it sees a meta leader."""
        s = self.server(name)
        if self.alive(s):
            raise ClusterError(f"{name} is already running (pid {s.pid})")
        self._spawn(s)
        self.save()
        self.wait_ready([s], wait_s)

    def reserve(self, name: str) -> NatsServer:
        """Ports and a data dir for a server to be added (not started, not saved)."""
        for s in self.servers:
            if s.name == name:
                return s
        taken = {s.client_port - self.base_port for s in self.servers}
        slot = next(i for i in range(1, ROUTE_OFFSET) if i not in taken)
        return self._new_server(name, slot)

    def join(self, name: str, wait_s: float = 20.0) -> NatsServer:
        """Start a new, empty server ``name`` with routes to the others."""
        s = self.reserve(name)
        if s not in self.servers:
            self.servers.append(s)
        if self.alive(s):
            return s
        if Path(s.data_dir).exists():
            set_aside(Path(s.data_dir))
        self._spawn(s)
        self.save()
        self.wait_ready([s], wait_s)
        return s

    def retire(self, name: str) -> None:
        """Forget a server removed from the peer set: stop it, set its data aside."""
        s = self.server(name)
        if self.alive(s):
            with contextlib.suppress(ProcessLookupError):
                pids.send(s.pid, signal.SIGCONT)  # type: ignore[arg-type]
                pids.send(s.pid, signal.SIGKILL)  # type: ignore[arg-type]
        self.servers = [x for x in self.servers if x.name != name]
        self.save()
        if Path(s.data_dir).exists():
            set_aside(Path(s.data_dir))

    # -- readiness -------------------------------------------------------------

    def wait_ready(self, servers: list[NatsServer], wait_s: float) -> None:
        """Until each of ``servers`` answers /healthz ok and names a meta leader."""
        deadline = time.monotonic() + wait_s
        pending = list(servers)
        while pending:
            s = pending[0]
            if not self.alive(s):
                raise ClusterError(f"{s.name} exited; see {self.dir / (s.name + '.log')}")
            if _ready(s):
                pending.pop(0)
                continue
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{s.name} has no JetStream meta leader after {wait_s:.0f}s; see "
                    f"{self.dir / (s.name + '.log')}"
                )
            time.sleep(0.1)


def _ready(s: NatsServer) -> bool:
    try:
        if get_json(f"{s.monitor_url}/healthz").get("status") != "ok":
            return False
        return bool((get_json(f"{s.monitor_url}/jsz").get("meta_cluster") or {}).get("leader"))
    except (OSError, ValueError):
        return False
