"""The tools' way to the manager: one ``Manager`` per cluster for the server's life,
each call on a worker thread, its progress as MCP progress, its errors as tool errors.

The manager does the work (policy, plans, approvals, refusals, audit); this module only
translates: ``Refused``/``ManagerError`` become tool errors carrying the reason and the
next step (a command it asks a human to run names this server's config and state dir),
and the manager's ``progress(done, total, message)`` becomes progress
notifications.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from ..core import Config, ManagerError, ProgressFn, Refused
from ..core.config import ENV_STATE_DIR
from ..local import ClusterError
from ..manager import Manager

T = TypeVar("T")


def tool_error(e: ManagerError) -> ToolError:
    """The manager's exception as a tool error: what happened, why, what to do next."""
    label = {"refused": "refused", "config": "bad arguments"}.get(e.code, "failed")
    op = f"{e.operation} " if e.operation else ""
    return ToolError(f"{op}{label}: {e}")


class Backend:
    """One Manager per cluster, kept for the server's life; calls run off the event loop.

    Reads run concurrently; mutations on one cluster run one at a time (the manager's
    session sequence numbers, and an operator's sanity, want that). The first call on
    the embedded default cluster starts it (``Manager.open(start_local=True)``, as the
    CLI does), says so in progress, and ``cluster_status`` lists it in ``notices``.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._managers: dict[str, Manager] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def manager(self, cluster: str | None, note: Callable[[str], None]) -> Manager:
        name = self.config.cluster(cluster).name
        with self._guard:
            mgr = self._managers.get(name)
            lock = self._locks.setdefault(name, threading.Lock())
        if mgr is None:
            with lock:  # the embedded cluster may be starting: once, under the lock
                mgr = self._managers.get(name) or Manager.open(
                    self.config, name, start_local=True, progress=note
                )
                self._managers[name] = mgr
        return mgr

    def for_a_human(self, text: str) -> str:
        """``text`` with each `raft-manager ...` command a human is asked to run made to
        reach this server's plans and audit log: its config file and, when the server
        was given one, its state dir (docs/design.md, section 6)."""
        prefix = "raft-manager"
        if self.config.path:
            prefix += f" --config {Path(self.config.path).expanduser().resolve()}"
        if state := os.environ.get(ENV_STATE_DIR):
            prefix = f"{ENV_STATE_DIR}={state} {prefix}"
        return text.replace("`raft-manager ", f"`{prefix} ")

    def close(self) -> None:
        with self._guard:
            managers, self._managers = list(self._managers.values()), {}
        for mgr in managers:
            mgr.close()

    async def run(
        self,
        ctx: Context | None,
        cluster: str | None,
        call: Callable[[Manager, ProgressFn], T],
        *,
        mutation: bool = False,
        cli: str | None = None,
    ) -> T:
        """Run ``call`` on the cluster's manager in a worker thread.

        ``cli`` is the CLI command (the catalog's hint) for tools that take no plan_id
        (the contract gives plans to elect_leader and change_membership only): a
        production cluster's "needs a plan id" refusal then points at the CLI, where the
        plan can be made and applied.
        """
        sent = 0

        def progress(done: float, total: float | None, message: str) -> None:
            # The manager's counters restart per phase; MCP progress must only grow, so
            # send a running count and keep the phase's own numbers in the message.
            nonlocal sent
            if ctx is None:
                return
            sent += 1
            text = message if total is None else f"{message} ({done:.3g}/{total:.3g})"
            with contextlib.suppress(Exception):  # a lost notification never fails the call
                anyio.from_thread.run(ctx.report_progress, sent, None, text)

        def work() -> T:
            mgr = self.manager(cluster, lambda msg: progress(0, None, msg))
            if not mutation:
                return call(mgr, progress)
            with self._locks[mgr.name]:
                return call(mgr, progress)

        try:
            return await anyio.to_thread.run_sync(work)
        except ManagerError as e:
            if cli and isinstance(e, Refused) and e.reason.endswith("needs a plan id"):
                name = self.config.cluster(cluster).name
                command = cli.replace("raft-manager", f"raft-manager --cluster {name}", 1)
                e.next_step = (
                    f"this tool takes no plan_id; on this cluster a human runs `{command} "
                    "--dry-run`, reviews the plan, then applies it with --plan-id"
                )
            if e.next_step:
                e.next_step = self.for_a_human(e.next_step)
            raise tool_error(e) from None
        except ClusterError as e:
            raise ToolError(
                f"failed: {e}\nnext: see the node logs in the cluster directory"
            ) from None
