"""Process control for local clusters, kept apart from the cluster protocols.

The adapters speak their cluster's API (raft-node's HTTP API, etcd's gateway); these
objects run the member processes a local cluster's state file lists: kill, stop and
continue (SIGSTOP/SIGCONT), start, add, retire, and where a new member would listen.
``LocalProcesses`` runs ``raft-node`` clusters (``cluster up``), ``EtcdProcesses``
runs etcd clusters (``etcd up``). An adapter for a cluster whose processes
raft-manager does not run simply has none.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.config import TLSConfig
from ..core.errors import ManagerError, Unreachable
from ..core.port import MemberStatus, NewProcess
from ..local import pids
from ..local.cluster import CLUSTER_FILE, ClusterError, LocalCluster
from ..local.etcd import STATE_FILE, EtcdLocalCluster


class _Processes(ABC):
    """What both kinds of local cluster share: signals and the process state in status."""

    start_hint = "start it (or check `dir:`)"
    state_file: str  # the file in ``dir`` that ``_load`` reads (``state`` watches it)

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self._seen: tuple[int, int, int] | None = None  # the file read into _state
        self._state: Any = None

    @abstractmethod
    def _load(self) -> Any:
        """The local cluster as its state file describes it (raises ``ClusterError``)."""

    @abstractmethod
    def pids(self) -> dict[str, int | None]:
        """Each member's recorded pid, by id."""

    def cluster(self) -> Any:
        """The local cluster, read afresh: for the actions that change it."""
        try:
            return self._load()
        except ClusterError as e:
            raise Unreachable(str(e), self.start_hint) from None

    def state(self) -> Any:
        """The local cluster for reading only (never mutate it): read again only when the
        state file was replaced. Every writer replaces it whole (``os.replace``), so its
        inode, time and size identify its content: a view that asks for each member's
        pid, or a wait that builds a view every tenth of a second, costs one ``stat``
        per question and reads the file once per change."""
        try:
            st = (self.dir / self.state_file).stat()
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            seen = None
        if seen is None or seen != self._seen:
            self._state = self.cluster()
            self._seen = seen
        return self._state

    def running(self, node: str) -> bool | None:
        known = self.pids()
        return pids.alive(known[node]) if node in known else None

    def _signal(self, node: str, sig: signal.Signals) -> None:
        try:
            self.cluster().signal(node, sig)
        except ClusterError as e:
            raise ManagerError(str(e)) from None

    def kill(self, node: str) -> None:
        self._signal(node, signal.SIGKILL)

    def pause(self, node: str) -> None:
        self._signal(node, signal.SIGSTOP)

    def resume(self, node: str) -> None:
        self._signal(node, signal.SIGCONT)

    def decorate(self, st: MemberStatus) -> MemberStatus:
        """Add the process state (running, pid; frozen or stopped) to a member's status."""
        known = self.pids()
        if st.id not in known:
            return st
        pid = known[st.id]
        alive = pids.alive(pid)
        st.process = "running" if alive else "stopped"
        st.pid = pid if alive else None
        if pids.frozen(pid):
            st.error = "process stopped (SIGSTOP)"
        elif not alive and not st.reachable:
            st.error = "process stopped"
        return st

    @contextlib.contextmanager
    def _failing(self, node: str) -> Iterator[None]:
        """A launcher failure on ``node`` as a ``ManagerError`` pointing at its log."""
        try:
            yield
        except ClusterError as e:
            raise ManagerError(str(e), f"see {self.dir / (node + '.log')}") from None

    def _start_options(self) -> dict[str, Any]:
        """Keyword arguments the local cluster's ``start`` takes besides the name."""
        return {}

    def start(self, node: str) -> None:
        """Start a stopped member on its existing data."""
        with self._failing(node):
            self.cluster().start(node, **self._start_options())

    def retire_process(self, node: str) -> None:
        """Forget a removed member (the external kinds: ``retire`` stops it or waits for
        it to exit, and sets its data aside); an unknown one is already gone."""
        with contextlib.suppress(ClusterError):
            self.cluster().retire(node)


class SweptStatuses:
    """For adapters that learn every member's status in one sweep (etcd, NATS): one
    member's status is its row of that sweep, and each row carries the process state
    when raft-manager runs the processes (``processes``)."""

    processes: _Processes | None

    def statuses(self) -> dict[str, MemberStatus]:
        raise NotImplementedError  # the adapter's sweep

    def _decorate(self, out: dict[str, MemberStatus]) -> dict[str, MemberStatus]:
        if self.processes is not None:
            for st in out.values():
                self.processes.decorate(st)
        return out

    def status(self, node: str) -> MemberStatus:
        return self.statuses().get(node) or MemberStatus(
            id=node, reachable=False, error="not a member"
        )


class LocalProcesses(_Processes):
    """The ``raft-node`` processes of a ``cluster up`` cluster (``cluster.yaml``)."""

    start_hint = "start it with `raft-manager cluster up` (or check `dir:`)"
    state_file = CLUSTER_FILE

    def _load(self) -> LocalCluster:
        return LocalCluster.load(self.dir)

    def pids(self) -> dict[str, int | None]:
        return {n.id: n.pid for n in self.state().nodes}

    def api_addresses(self) -> dict[str, str]:
        """Every local member's API address, by id."""
        return {n.id: n.api_address for n in self.state().nodes}

    def api_tls(self) -> TLSConfig | None:
        """How to verify the members' HTTPS API (the cluster's own CA); None for HTTP or
        while the cluster does not exist yet."""
        try:
            s = self.state().settings
        except Unreachable:
            return None
        return TLSConfig(ca_file=s.ca_file) if s.api_scheme == "https" else None

    def new_process(self, node: str) -> NewProcess:
        lc = self.cluster()
        with self._failing(node):
            n = next((n for n in lc.nodes if n.id == node), None)
            if n is None:
                n = lc.add_node(node)
            elif not lc.alive(n):
                lc.start(node)
        return NewProcess(n.id, n.peer_address, n.api_address)

    def planned_addresses(self, node: str) -> tuple[str, str]:
        """Where ``new_process`` would put ``node``: (peer address, API address)."""
        return self.state().addresses_for(node)

    def retire_process(self, node: str) -> None:
        lc = self.cluster()
        try:
            n = lc.node(node)
        except ClusterError:
            return
        lc.forget(node)
        deadline = time.monotonic() + 5
        while lc.alive(n) and time.monotonic() < deadline:
            time.sleep(0.05)
        # A removed member's data must not come back if the id is reused.
        data = Path(n.data_dir)
        if data.exists():
            with contextlib.suppress(OSError):
                shutil.move(str(data), f"{data}.removed-{int(time.time())}")


class EtcdProcesses(_Processes):
    """The etcd members of an ``etcd up`` cluster (``etcd-cluster.yaml``).

    etcd's order differs from raft-node's: a member is added to the cluster first and
    its process started afterwards (``new_process`` joins it), and a removed member's
    process exits by itself (``retire_process`` waits for that, then sets its data
    aside). ``tls`` is what the readiness probes use on a TLS cluster.
    """

    start_hint = "start it with `raft-manager etcd up` (or check `dir:`)"
    state_file = STATE_FILE

    def __init__(self, directory: str | Path, tls: Any = None) -> None:
        super().__init__(directory)
        self.tls = tls

    def _load(self) -> EtcdLocalCluster:
        return EtcdLocalCluster.load(self.dir)

    def pids(self) -> dict[str, int | None]:
        return {m.name: m.pid for m in self.state().members}

    def endpoints(self) -> list[str]:
        """The members' client URLs."""
        return self.state().endpoints()

    def names(self) -> dict[str, str]:
        """Each member's name by peer URL (etcd knows a learner's name only once it runs)."""
        return {m.peer_url: m.name for m in self.state().members}

    def _start_options(self) -> dict[str, Any]:
        return {"tls": self.tls}

    def new_process(self, node: str) -> NewProcess:
        """Start the member the cluster has just added."""
        lc = self.cluster()
        with self._failing(node):
            m = lc.join(node, tls=self.tls)
        return NewProcess(node, m.peer_url, lc.client_url(m))

    def planned_addresses(self, node: str) -> tuple[str, str]:
        lc = self.state()
        m = lc.reserve(node)  # reserves nothing: picks ports, changes no state
        return m.peer_url, lc.client_url(m)
