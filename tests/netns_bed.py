"""A multi-host test bed on one machine: each node on a host of its own.

Each host is a Linux network namespace with one veth on a bridge the bed creates, an
address in 10.231.77.0/24 (the bridge is .1 in the root namespace, node ``nK`` is
.10+K), and nothing else: the nodes bind and advertise those addresses, and the
manager, in the root namespace, reaches them only over the bridge. The cluster is set
up the way docs/three-machines.md says: ``raft-manager certs init``, then ``certs
issue NODE --host IP --host NAME --peers ...`` per host, whose config file each
``raft-node --config`` reads (mutual TLS between peers, HTTPS for the API).

Network rule: traffic goes only to the bed's own addresses. The subnet is checked to be
unused before anything is made, and :func:`netns_bed` tears down every namespace (their
processes, their nftables tables), veth and the bridge even when the test fails. Beds in
concurrent pytest sessions take turns (a file lock, waited for a bounded time).

Needs root, ``ip`` (iproute2) and, for the nftables nemesis, ``nft``: missing ones fail
the test under ``CI`` and skip it elsewhere with the install command.

``python tests/netns_bed.py chaos DIR --duration 600 ...`` runs a long chaos run on a
bed by hand (and removes the bed after it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcp_server import cli  # noqa: E402
from mcp_server.local import LocalCluster, LocalNode, LocalSettings  # noqa: E402

SUBNET = "10.231.77"
PREFIX = "rmbed"
BRIDGE = f"{PREFIX}-br"
LOCK = Path("/tmp/raft-manager-netns-bed.lock")
LOCK_WAIT_S = 300.0
PEER_PORT, API_PORT = 7101, 7201
INSTALL = "apt-get install -y iproute2 nftables (and run the tests as root)"
# Fast elections for the tests (the node's defaults are 50 ms x 10).
TEST_OPTIONS = {"tick_ms": 30, "election_ticks": 10}


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=check)


def missing_capability(need_nft: bool = False) -> str | None:
    """Why a bed cannot be made here, or None."""
    if os.geteuid() != 0:
        return "the netns test bed needs root (network namespaces, veth, a bridge)"
    tools = ["ip", *(["nft"] if need_nft else [])]
    absent = [t for t in tools if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if absent:
        return f"{', '.join(absent)} not installed: {INSTALL}"
    probe = f"{PREFIX}-probe"
    made = _run("ip", "link", "add", probe, "type", "bridge", check=False)
    if made.returncode != 0:
        return f"cannot make network devices here (CAP_NET_ADMIN?): {made.stderr.strip()}"
    _run("ip", "link", "del", probe, check=False)
    return None


def require(need_nft: bool = False) -> None:
    """Fail under CI, else skip, when the bed cannot be made here."""
    from testkit import unavailable

    problem = missing_capability(need_nft)
    if problem is None:
        return
    unavailable(problem)


def host_ip(node: str) -> str:
    return f"{SUBNET}.{10 + int(node[1:])}"


@dataclass
class Bed:
    """The namespaces made so far (one per host) and the cluster's directory."""

    dir: Path
    hosts: dict[str, str] = field(default_factory=dict)  # node id -> namespace

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    def netns(self, node: str) -> str:
        return f"{PREFIX}-{node}"

    def add_host(self, node: str) -> str:
        """A namespace for ``node`` with its address on the bridge; its IP."""
        ns, veth, ip = self.netns(node), f"{PREFIX}-{node}h", host_ip(node)
        _run("ip", "netns", "add", ns)
        self.hosts[node] = ns
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "link", "set", veth, "master", BRIDGE, "up")
        _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        return ip

    def peers_arg(self, nodes: list[str]) -> str:
        return ",".join(f"{n}={host_ip(n)}" for n in nodes)

    def issue(self, node: str, members: list[str], *, join: bool = False) -> Path:
        """``certs issue`` for ``node`` (its host's IP and DNS name, the members' hosts),
        plus the test's timing options in the host's config file; the file's path."""
        argv = ["certs", "issue", node, "--dir", str(self.pki), "--host", host_ip(node)]
        argv += ["--host", f"{node}.raft.test", "--peers", self.peers_arg(members)]
        argv += ["--data-dir", str(self.dir / node)]
        argv += ["--peer-port", str(PEER_PORT), "--api-port", str(API_PORT)]
        assert cli.main([*argv, *(["--join"] if join else []), "--json"]) == 0
        path = self.pki / f"{node}.yaml"
        doc = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**doc, **TEST_OPTIONS}, sort_keys=False))
        return path

    def node(self, node: str, config_file: Path) -> LocalNode:
        return LocalNode(
            id=node,
            peer_address=f"{host_ip(node)}:{PEER_PORT}",
            api_address=f"{host_ip(node)}:{API_PORT}",
            data_dir=str(self.dir / node),
            netns=self.netns(node),
            config_file=str(config_file),
        )

    def start_cluster(self, nodes: int = 3, extra: dict[str, Any] | None = None) -> LocalCluster:
        """A ``nodes``-member cluster, one per namespace, certificates from the command;
        ``extra`` options go into every host's config file."""
        ids = [f"n{i}" for i in range(1, nodes + 1)]
        assert cli.main(["certs", "init", "--dir", str(self.pki), "--json"]) == 0
        lc = LocalCluster(
            self.dir,
            settings=LocalSettings(
                peer_auth="tls", api_scheme="https", ca_file=str(self.pki / "ca.pem")
            ),
        )
        for n in ids:
            self.add_host(n)
            path = self.issue(n, ids)
            if extra:
                doc = yaml.safe_load(path.read_text())
                path.write_text(yaml.safe_dump({**doc, **extra}, sort_keys=False))
            lc.nodes.append(self.node(n, path))
        for n in lc.nodes:
            lc.start(n.id, 20.0)
        lc.wait_for_leader(30.0)
        return lc

    def start_command(self, python: str = sys.executable) -> str:
        """The per-node restart command (clusters.yaml ``recover_command``) of this bed:
        what ``systemctl restart raft-node@ID`` is on a real host."""
        log = self.dir / "{id}.log"
        return (
            f"sh -c 'setsid -f ip netns exec {PREFIX}-{{id}} {python} -m raft_core.node.main "
            f"--config {self.pki}/{{id}}.yaml >> {log} 2>&1 < /dev/null'"
        )


def _subnet_in_use() -> str | None:
    for argv in (("ip", "-4", "-o", "addr"), ("ip", "-4", "route")):
        for line in _run(*argv).stdout.splitlines():
            if f"{SUBNET}." in line and BRIDGE not in line:
                return line.strip()
    return None


def teardown(bed_dir: Path | None = None) -> None:
    """Remove everything a bed makes (its namespaces' processes first); idempotent."""
    for line in _run("ip", "netns", "list").stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        if not ns.startswith(f"{PREFIX}-"):
            continue
        for pid in _run("ip", "netns", "pids", ns, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        _run("ip", "netns", "del", ns, check=False)
    for line in _run("ip", "-o", "link").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(f"{PREFIX}-"):
            _run("ip", "link", "del", name, check=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and f"{PREFIX}-" in _run("ip", "-o", "link").stdout:
        time.sleep(0.05)  # veth ends vanish asynchronously after their namespace
    if f"{PREFIX}-" in _run("ip", "-o", "link").stdout:
        raise RuntimeError(f"test bed links {PREFIX}-* still present after teardown")


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    with open(LOCK, "w") as f:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"another test bed held {LOCK} for {LOCK_WAIT_S:.0f}s"
                    ) from None
                time.sleep(0.2)
        yield


def make_bridge() -> None:
    teardown()  # what a killed run of ours left (our prefix only)
    used = _subnet_in_use()
    if used:
        raise RuntimeError(f"{SUBNET}.0/24 is in use here ({used}); the test bed will not share it")
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")


@contextlib.contextmanager
def netns_bed(directory: Path) -> Iterator[Bed]:
    """A bridge now, hosts as the test adds them; all of it removed afterwards."""
    with _lock():
        try:
            make_bridge()
            yield Bed(directory)
        finally:
            teardown()


def main(argv: list[str]) -> int:
    """``chaos DIR [CHAOS-ARGS...]``: a bed of three hosts, ``raft-manager chaos --network
    nft`` on it (its nodes without the fault API: partitions come from nftables alone),
    then the bed removed; ``down``: remove what a killed run left."""
    if argv[:1] == ["down"]:
        teardown()
        return 0
    if argv[:1] != ["chaos"] or len(argv) < 2:
        print("usage: python tests/netns_bed.py chaos DIR [CHAOS-ARGS...] | down", file=sys.stderr)
        return 2
    problem = missing_capability(need_nft=True)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    directory = Path(argv[1]).resolve()
    with netns_bed(directory / "bed") as bed:
        lc = bed.start_cluster(3)
        cfg = directory / "clusters.yaml"
        cfg.write_text(
            yaml.safe_dump({"clusters": {"hosts": {"dir": str(lc.dir), "mode": "sandbox"}}})
        )
        chaos = ["chaos", "--network", "nft", "--out", str(directory / "out"), *argv[2:]]
        return cli.main(["--config", str(cfg), "--cluster", "hosts", *chaos])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
