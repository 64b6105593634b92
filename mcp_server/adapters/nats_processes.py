"""Process control for a local NATS cluster (``raft-manager nats up``), apart from the
JetStream protocol code in ``adapters.nats``: kill, stop, continue, start, add (start a
new server with routes) and retire (stop a removed server, set its data aside)."""

from __future__ import annotations

from ..core.port import NewProcess
from ..local.nats import STATE_FILE, NatsLocalCluster
from .processes import _Processes


class NatsProcesses(_Processes):
    start_hint = "start it with `raft-manager nats up` (or check `dir:`)"
    state_file = STATE_FILE

    def _load(self) -> NatsLocalCluster:
        return NatsLocalCluster.load(self.dir)

    def pids(self) -> dict[str, int | None]:
        return {s.name: s.pid for s in self.state().servers}

    def monitors(self) -> dict[str, str]:
        """Each local server's monitoring URL -> its name."""
        return {s.monitor_url: s.name for s in self.state().servers}

    def client_urls(self) -> list[str]:
        return self.state().client_urls()

    def new_process(self, node: str) -> NewProcess:
        """Start a new server with routes to the others: that is how it joins."""
        with self._failing(node):
            s = self.cluster().join(node)
        return NewProcess(node, s.route_url, s.monitor_url)

    def planned_addresses(self, node: str) -> tuple[str, str]:
        s = self.state().reserve(node)  # reserves nothing: picks ports, changes no state
        return s.route_url, s.monitor_url
