"""What an operation receives: the cluster, its adapter, and the means to observe it.

Operations never see the ``Manager`` (which imports them): they get this small object,
so the dependency runs one way (manager -> operations -> context) and an operation can
be tested with any adapter.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import ClusterConfig
from .errors import ManagerError
from .models import Plan
from .plans import make_plan
from .port import ClusterAdapter
from .view import ClusterView

ProgressFn = Callable[[float, float | None, str], None]
"""``progress(done, total, message)``: the CLI shows a spinner, the MCP server notifies."""


def quiet(done: float, total: float | None, message: str) -> None:
    """A progress callback that shows nothing."""


@dataclass
class OperationContext:
    cluster: ClusterConfig
    adapter: ClusterAdapter
    plan_ttl_s: int = 900
    client_id: str = field(default_factory=lambda: f"raft-manager-{uuid.uuid4().hex[:12]}")
    _seq: int = 0

    @property
    def name(self) -> str:
        return self.cluster.name

    def next_seq(self) -> int:
        """The next session sequence number for this manager's writes (exactly-once)."""
        self._seq += 1
        return self._seq

    def view(self) -> ClusterView:
        return ClusterView.build(self.adapter.statuses())

    def plan(
        self, operation: str, arguments: dict[str, Any], view: ClusterView, **parts: Any
    ) -> Plan:
        """``make_plan`` for this cluster, with its plan lifetime; ``parts`` are the plan's
        ``steps``, ``reasons`` and ``risks``."""
        return make_plan(self.name, operation, arguments, view, ttl_s=self.plan_ttl_s, **parts)

    def wait_for(
        self,
        predicate: Callable[[ClusterView], bool],
        timeout_s: float,
        progress: ProgressFn,
        message: Callable[[ClusterView], str] | str,
        interval: float = 0.05,
    ) -> tuple[bool, ClusterView]:
        """Poll the cluster until ``predicate`` holds or ``timeout_s`` passes."""
        t0 = time.monotonic()
        while True:
            view = self.view()
            if predicate(view):
                return True, view
            elapsed = time.monotonic() - t0
            if elapsed >= timeout_s:
                return False, view
            progress(elapsed, timeout_s, message(view) if callable(message) else message)
            time.sleep(interval)

    def transfer_and_wait(
        self, target: str, progress: ProgressFn, timeout_s: float = 5.0
    ) -> ClusterView:
        """Ask the leader to hand over to ``target`` and wait until ``target`` leads.

        The one transfer-and-wait used by elections and by removing the leader; raises
        ``ManagerError`` saying which half failed.
        """
        try:
            self.adapter.transfer_leadership(target)
        except ManagerError as e:
            raise ManagerError(
                f"leadership transfer to {target} failed: {e.reason}",
                "check that the target is reachable from the leader and caught up; the old "
                "leader keeps leading when a transfer aborts",
            ) from None
        ok, v = self.wait_for(
            lambda v: v.leader is not None and v.leader.id == target,
            timeout_s,
            progress,
            f"waiting for {target} to lead",
        )
        if not ok:
            raise ManagerError(
                f"{target} did not become the leader (leader now: "
                f"{v.leader.id if v.leader else 'none'})",
                "check `raft-manager status`",
            )
        return v
