"""What the nemesis and the clients need of a local cluster, per kind of cluster.

* :class:`RaftNodeTarget`: a ``raft-manager cluster up`` cluster (``cluster.yaml``):
  ``/v1/status`` for roles and indexes, the node fault API for partitions (both ways
  and one-way) and slow disks.
* :class:`EtcdTarget`: a ``raft-manager etcd up`` cluster (``etcd-cluster.yaml``):
  ``maintenance/status`` and ``cluster/member/list`` through etcd's JSON gateway. etcd
  has no fault API, so the partition and disk nemeses (and the pause of an isolated
  leader, which needs one) are not offered; the verdict's notes say so.

Both re-read their state file on every call: the manager rewrites it when it starts or
retires a member.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import httpx

from ..core import ClusterConfig, InputError, ManagerError
from ..local import ClusterError, LocalCluster
from ..local.etcd import EtcdLocalCluster
from .schedule import VARIANTS
from .workload import ETCD, RAFT_NODE, Dialect

STATUS_TIMEOUT_S = 0.5
# A node whose disk is slowed syncs on its event loop thread: give it time to answer.
FAULT_TIMEOUT_S = 3.0

ETCD_VARIANTS: dict[str, tuple[str, ...]] = {
    "kill": VARIANTS["kill"],
    "pause": ("pause-leader", "pause-follower"),
    "membership": VARIANTS["membership"],
    "transfer": VARIANTS["transfer"],
}
ETCD_NOTES: dict[str, str] = {
    "partition": "partition: not supported on etcd (it has no fault API); pause-isolated-leader "
    "is left out for the same reason",
    "disk": "disk: not supported on etcd (it has no fault API to slow its disk)",
}


class Target(ABC):
    """One local cluster's processes and status, as the chaos run sees them."""

    kind: str
    dialect: Dialect
    variants: dict[str, tuple[str, ...]]
    notes: dict[str, str]  # a nemesis asked for that this kind cannot serve -> why
    nft = False  # its partitions can be nftables rules (``--network nft``): raft-node only

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @classmethod
    def refuse(cls, cluster: ClusterConfig) -> None:
        """Raise ``InputError`` when ``cluster`` is configured in a way the chaos clients
        of this kind cannot drive (checked before anything runs); by default none."""
        return None

    @abstractmethod
    def addresses(self) -> dict[str, str]:
        """Each member's client ``host:port``, by id."""

    def scheme(self) -> str:
        """How the members' APIs are reached: ``http`` or ``https``."""
        return "http"

    def verify(self) -> ssl.SSLContext | bool:
        """What the clients trust for ``https`` (the cluster's own CA)."""
        return True

    @abstractmethod
    def pid(self, node: str) -> int | None: ...

    @abstractmethod
    def alive(self, node: str) -> bool: ...

    @abstractmethod
    def kill(self, node: str) -> None: ...

    @abstractmethod
    def start(self, node: str, wait_s: float) -> None: ...

    @abstractmethod
    def wait_ready(self, node: str, wait_s: float) -> None:
        """Until ``node``'s API answers (``ClusterError`` after ``wait_s``)."""

    def start_all(self, nodes: list[str], wait_s: float) -> None:
        """Start every one of ``nodes`` before waiting for any: an etcd member restarted
        alone after all were killed does not serve its API until it has a quorum."""
        for node in nodes:
            with contextlib.suppress(ClusterError):  # spawned and recorded; not ready yet
                self.start(node, 0.05)
        for node in nodes:
            self.wait_ready(node, wait_s)

    @abstractmethod
    async def statuses(self, http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
        """Every answering member's ``role, term, leader, commit_index, applied_index,
        voters`` (raft-node's status field names)."""

    def dead(self) -> list[str]:
        return [n for n in self.addresses() if not self.alive(n)]

    def logs(self) -> list[str]:
        return sorted(str(p) for p in self.dir.glob("*.log"))

    def notes_for(self, nemeses: list[str]) -> list[str]:
        return [self.notes[k] for k in nemeses if k in self.notes]

    async def set_faults(self, http: httpx.AsyncClient, faults: dict[str, dict[str, Any]]) -> None:
        """Give each named member this fault set (a ``/v1/admin/faults`` body; ``{}``:
        none), replacing what it had; raft-node only."""
        if any(faults.values()):
            raise ManagerError(f"{self.kind} clusters have no fault API")


class RaftNodeTarget(Target):
    kind = "raft_core"
    dialect = RAFT_NODE
    variants = VARIANTS
    notes: dict[str, str] = {}
    nft = True

    def cluster(self) -> LocalCluster:
        return LocalCluster.load(self.dir)

    def addresses(self) -> dict[str, str]:
        return {n.id: n.api_address for n in self.cluster().nodes}

    def scheme(self) -> str:
        return self.cluster().settings.api_scheme

    def verify(self) -> ssl.SSLContext | bool:
        ca = self.cluster().settings.ca_file
        return ssl.create_default_context(cafile=ca) if ca else True

    def pid(self, node: str) -> int | None:
        return self.cluster().node(node).pid

    def alive(self, node: str) -> bool:
        lc = self.cluster()
        return lc.alive(lc.node(node))

    def kill(self, node: str) -> None:
        self.cluster().kill(node)

    def start(self, node: str, wait_s: float) -> None:
        self.cluster().start(node, wait_s)

    def wait_ready(self, node: str, wait_s: float) -> None:
        lc = self.cluster()
        lc.wait_for_api(lc.node(node), wait_s)

    async def statuses(self, http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
        scheme = self.scheme()

        async def one(node: str, addr: str) -> tuple[str, dict[str, Any] | None]:
            try:
                r = await http.get(f"{scheme}://{addr}/v1/status", timeout=STATUS_TIMEOUT_S)
                return node, r.json() if r.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                return node, None

        got = await asyncio.gather(*(one(n, a) for n, a in self.addresses().items()))
        return {n: st for n, st in got if st is not None}

    async def set_faults(self, http: httpx.AsyncClient, faults: dict[str, dict[str, Any]]) -> None:
        addresses, scheme = self.addresses(), self.scheme()

        async def one(node: str, fault: dict[str, Any]) -> None:
            body = {"clear": True, **fault}
            for _ in range(10):
                try:
                    r = await http.post(
                        f"{scheme}://{addresses[node]}/v1/admin/faults",
                        json=body,
                        timeout=FAULT_TIMEOUT_S,
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
                    continue
                if r.status_code == 403:
                    raise ManagerError(
                        f"{node} refuses fault injection: start it with --allow-fault-injection"
                    )
                if r.status_code == 400:
                    raise ManagerError(f"{node} refused the fault set {fault}: {r.text[:300]}")
                if r.status_code == 200:
                    return
            if fault:
                raise ManagerError(f"could not set the fault set of {node}")

        await asyncio.gather(*(one(n, f) for n, f in faults.items() if n in addresses))


class EtcdTarget(Target):
    kind = "etcd"
    dialect = ETCD
    variants = ETCD_VARIANTS
    notes = ETCD_NOTES

    @classmethod
    def refuse(cls, cluster: ClusterConfig) -> None:
        """The etcd chaos clients speak plain HTTP without credentials."""
        if cluster.tls:
            raise InputError(
                f"etcd cluster {cluster.name!r} uses TLS; the etcd chaos clients speak plain HTTP",
                "run chaos on an etcd sandbox without TLS (as `raft-manager etcd up` starts it)",
            )
        if cluster.username:
            raise InputError(
                f"etcd cluster {cluster.name!r} uses authentication; the chaos clients do not",
                "run chaos on an etcd sandbox without auth (as `raft-manager etcd up` starts it)",
            )

    def cluster(self) -> EtcdLocalCluster:
        return EtcdLocalCluster.load(self.dir)

    def addresses(self) -> dict[str, str]:
        return {m.name: f"127.0.0.1:{m.client_port}" for m in self.cluster().members}

    def pid(self, node: str) -> int | None:
        return self.cluster().member(node).pid

    def alive(self, node: str) -> bool:
        lc = self.cluster()
        return lc.alive(lc.member(node))

    def kill(self, node: str) -> None:
        self.cluster().signal(node, signal.SIGKILL)

    def start(self, node: str, wait_s: float) -> None:
        self.cluster().start(node, wait_s=wait_s)

    def wait_ready(self, node: str, wait_s: float) -> None:
        lc = self.cluster()
        lc.wait_for_api(lc.member(node), wait_s)

    async def statuses(self, http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
        async def post(addr: str, path: str) -> dict[str, Any] | None:
            try:
                r = await http.post(f"http://{addr}/v3/{path}", json={}, timeout=STATUS_TIMEOUT_S)
                doc = r.json()
            except (httpx.HTTPError, ValueError):
                return None
            return doc if r.status_code == 200 and isinstance(doc, dict) else None

        addresses = self.addresses()
        got = await asyncio.gather(*(post(a, "maintenance/status") for a in addresses.values()))
        answered = {n: st for n, st in zip(addresses, got, strict=True) if st is not None}
        listing = None
        for addr in (addresses[n] for n in answered):
            listing = await post(addr, "cluster/member/list")
            if listing is not None:
                break
        names = {str(m.get("ID")): m.get("name") for m in (listing or {}).get("members", [])}
        voters = sorted(
            m.get("name") for m in (listing or {}).get("members", []) if not m.get("isLearner")
        )
        out: dict[str, dict[str, Any]] = {}
        for node, st in answered.items():
            header = st.get("header") or {}
            me, lead = str(header.get("member_id")), str(st.get("leader", "0"))
            commit = int(st.get("raftIndex", 0))
            out[node] = {
                "role": "leader"
                if lead == me
                else ("learner" if st.get("isLearner") else "follower"),
                "term": int(header.get("raft_term", 0)),
                "leader": names.get(lead),
                "commit_index": commit,
                "applied_index": int(st.get("raftAppliedIndex", commit)),
                "voters": voters,
            }
        return out


# The target of each kind whose clients the shared HTTP loop drives (``runner._run``).
TARGETS: dict[str, type[Target]] = {"raft_core": RaftNodeTarget, "etcd": EtcdTarget}


def target_class(kind: str) -> type[Target]:
    """The target class for clusters of ``kind`` (raft-node's when the kind has none)."""
    return TARGETS.get(kind, RaftNodeTarget)
