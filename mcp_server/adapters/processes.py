"""Process control for a local cluster, kept apart from the cluster protocol.

The node adapter speaks the HTTP API; this object runs the ``raft-node`` processes a
local cluster's ``cluster.yaml`` lists (kill, start, add, retire) and knows where a new
member would listen. An adapter for a cluster whose processes raft-manager does not
run simply has none.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

from ..core.errors import ManagerError, Unreachable
from ..local.cluster import ClusterError, LocalCluster
from .base import NewProcess, NodeStatus


class LocalProcesses:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def cluster(self) -> LocalCluster:
        try:
            return LocalCluster.load(self.dir)
        except ClusterError as e:
            raise Unreachable(
                str(e), "start it with `raft-manager cluster up` (or check `dir:`)"
            ) from None

    def api_addresses(self) -> dict[str, str]:
        """Every local member's API address, by id."""
        return {n.id: n.api_address for n in self.cluster().nodes}

    def running(self, node: str) -> bool | None:
        lc = self.cluster()
        try:
            return lc.alive(lc.node(node))
        except ClusterError:
            return None

    def kill(self, node: str) -> None:
        try:
            self.cluster().kill(node)
        except ClusterError as e:
            raise ManagerError(str(e)) from None

    def start(self, node: str) -> None:
        try:
            self.cluster().start(node)
        except ClusterError as e:
            raise ManagerError(str(e), f"see {self.dir / (node + '.log')}") from None

    def new_process(self, node: str) -> NewProcess:
        lc = self.cluster()
        try:
            n = next((n for n in lc.nodes if n.id == node), None)
            if n is None:
                n = lc.add_node(node)
            elif not lc.alive(n):
                lc.start(node)
        except ClusterError as e:
            raise ManagerError(str(e), f"see {self.dir / (node + '.log')}") from None
        return NewProcess(n.id, n.peer_address, n.api_address)

    def planned_addresses(self, node: str) -> tuple[str, str]:
        """Where ``new_process`` would put ``node``: (peer address, API address)."""
        return self.cluster().addresses_for(node)

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

    def decorate(self, st: NodeStatus) -> NodeStatus:
        """Add the process state (running, pid) to a member's status."""
        lc = self.cluster()
        for n in lc.nodes:
            if n.id == st.id:
                alive = lc.alive(n)
                st.process = "running" if alive else "stopped"
                st.pid = n.pid if alive else None
                if not alive and not st.reachable:
                    st.error = "process stopped"
        return st
