"""``raft-manager-mcp``: the MCP server, a thin face over the guarded operations.

Each tool opens the cluster's ``Manager``, calls the one method of the same name on a
worker thread and returns the pydantic model that method returns: the same document
``raft-manager ... --json`` prints, as structured output with an output schema. The
manager checks policy, plans, refuses and audits; the server adds nothing but the
translation: ``Refused``/``ManagerError`` become tool errors carrying the reason and
the next step, and the manager's progress callback becomes MCP progress notifications.

Scoping: ``--read-only`` serves only read-only tools, ``--disable-destructive`` drops
the destructive ones. A tool that is off is not listed and is refused if called anyway.

Transports: stdio (default; stdout carries only the protocol, logs go to stderr) and
streamable HTTP (``--http``), on loopback by default. Bound anywhere else it needs a
bearer token (``--token-file`` or ``$RAFT_MANAGER_MCP_TOKEN``) and then requires
``Authorization: Bearer`` on every request.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field, RootModel

from .approvals import DESTRUCTIVE, ENV_VIA_MCP
from .audit import AuditLog
from .config import Config, load_config
from .errors import ConfigError, ManagerError, Refused
from .local_cluster import ClusterError
from .mcp_args import ENV_TOKEN, add_arguments
from .models import (
    ClusterList,
    ClusterStatus,
    ElectionResult,
    FaultResult,
    HealthReport,
    KVEntry,
    MembershipChange,
    Plan,
    ReadResult,
    RecoverResult,
    ReplicateResult,
    SnapshotResult,
    VerifyReport,
)
from .operations import Manager, ProgressFn, list_clusters

SERVER_NAME = "agent-raft-manager"
AUDIT_TAIL = 50
T = TypeVar("T")

INSTRUCTIONS = """\
Operate Raft clusters safely. Work in this order: health_check (with the operation you
intend) -> plan (dry_run=true where offered) -> apply the plan_id -> verify_consistency.
Mutations are refused when unsafe (quorum, lag, a change in flight, a stale plan); a
refusal says why and what to do next - do that, do not retry blindly. On clusters with
require_approval a destructive plan needs a human to run `raft-manager approve PLAN_ID`
at a terminal; you cannot approve it yourself. `cluster` defaults to the embedded local
cluster (started on first use)."""


class ElectionOrPlan(RootModel[ElectionResult | Plan]):
    """elect_leader's answer: the election's result, or the plan of a dry run."""


# -- tool table: names, annotations, descriptions ------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    """A tool's annotations, and its group (observe, data, change, maintain), which is
    sent in the tool's ``_meta`` so clients can show related tools together."""

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool = True
    group: str = ""

    def annotations(self, title: str) -> ToolAnnotations:
        return ToolAnnotations(
            title=title,
            read_only_hint=self.read_only,
            destructive_hint=self.destructive,
            idempotent_hint=self.idempotent,
            open_world_hint=self.open_world,
        )


def _spec(
    name: str, *, read_only: bool, idempotent: bool, group: str, open_world: bool = True
) -> ToolSpec:
    """Destructive is not a per-tool choice: it is the DESTRUCTIVE set approvals use too."""
    return ToolSpec(read_only, name in DESTRUCTIVE, idempotent, open_world, group)


TOOLS: dict[str, ToolSpec] = {
    # observe
    "list_clusters": _spec(
        "list_clusters", read_only=True, idempotent=True, group="observe", open_world=False
    ),
    "cluster_status": _spec("cluster_status", read_only=True, idempotent=True, group="observe"),
    "health_check": _spec("health_check", read_only=True, idempotent=True, group="observe"),
    "verify_consistency": _spec(
        "verify_consistency", read_only=True, idempotent=True, group="observe"
    ),
    # data
    "read": _spec("read", read_only=True, idempotent=True, group="data"),
    "replicate": _spec("replicate", read_only=False, idempotent=False, group="data"),
    # change the cluster
    "elect_leader": _spec("elect_leader", read_only=False, idempotent=False, group="change"),
    "change_membership": _spec(
        "change_membership", read_only=False, idempotent=False, group="change"
    ),
    # maintain and recover
    "snapshot": _spec("snapshot", read_only=False, idempotent=False, group="maintain"),
    "recover_node": _spec("recover_node", read_only=False, idempotent=True, group="maintain"),
    "inject_fault": _spec("inject_fault", read_only=False, idempotent=False, group="maintain"),
}

ClusterArg = Annotated[
    str | None,
    Field(
        description="cluster name from clusters.yaml (see list_clusters); "
        "omit for the default cluster (the embedded local cluster when no config is given)"
    ),
]


def hidden_tools(*, read_only: bool, disable_destructive: bool) -> dict[str, str]:
    """Tools turned off by the scoping flags, each with the flag that turned it off."""
    off: dict[str, str] = {}
    for name, spec in TOOLS.items():
        if read_only and not spec.read_only:
            off[name] = "the server runs with --read-only"
        elif disable_destructive and spec.destructive:
            off[name] = "the server runs with --disable-destructive"
    return off


class ScopedServer(MCPServer):
    """An MCPServer that neither lists nor runs the tools its flags turned off."""

    def __init__(self, *args: Any, hidden: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden = hidden

    async def list_tools(self):  # type: ignore[override]
        return [t for t in await super().list_tools() if t.name not in self.hidden]

    async def call_tool(self, name: str, arguments: dict[str, Any], context=None):  # type: ignore[override]
        if name in self.hidden:
            raise ToolError(
                f"refused: {name} is turned off on this server ({self.hidden[name]})\n"
                "next: use the tools this server lists, or ask the operator to restart the "
                "server without that flag"
            )
        return await super().call_tool(name, arguments, context)


# -- running one manager call ----------------------------------------------------------------


def tool_error(e: ManagerError) -> ToolError:
    """The manager's exception as a tool error: what happened, why, what to do next."""
    label = {"refused": "refused", "config": "bad arguments"}.get(e.code, "failed")
    op = f"{e.operation} " if e.operation else ""
    return ToolError(f"{op}{label}: {e}")


class Backend:
    """One Manager per cluster, kept for the server's life; calls run off the event loop.

    Reads run concurrently; mutations on one cluster run one at a time (the manager's
    session sequence numbers, and an operator's sanity, want that).
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
                    self.config, name, start=True, progress=note
                )
                self._managers[name] = mgr
        return mgr

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

        ``cli`` names the CLI command for tools that take no plan_id (the contract gives
        plans to elect_leader and change_membership only): a production cluster's "needs
        a plan id" refusal then points at the CLI, where the plan can be made and applied.
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
                e.next_step = (
                    "this tool takes no plan_id; on this cluster a human runs "
                    f"`raft-manager --cluster {self.config.cluster(cluster).name} {cli} "
                    "--dry-run`, reviews the plan, then applies it with --plan-id"
                )
            raise tool_error(e) from None
        except ClusterError as e:
            raise ToolError(
                f"failed: {e}\nnext: see the node logs in the cluster directory"
            ) from None


# -- the server ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _closing(backend: Backend) -> AsyncIterator[None]:
    """The server's lifespan: the managers' connections close when it stops."""
    try:
        yield None
    finally:
        backend.close()


def build_server(
    config: Config | str | None = None,
    *,
    read_only: bool = False,
    disable_destructive: bool = False,
    runbooks: Path | None = None,
) -> ScopedServer:
    """The MCP server over ``config`` (a Config, a clusters.yaml path, or None: the default)."""
    cfg = config if isinstance(config, Config) else load_config(config)
    backend = Backend(cfg)
    server = ScopedServer(
        SERVER_NAME,
        version=_version(),
        instructions=INSTRUCTIONS,
        log_level="WARNING",
        lifespan=lambda _server: _closing(backend),
        hidden=hidden_tools(read_only=read_only, disable_destructive=disable_destructive),
    )

    def tool(name: str, title: str, description: str):
        spec = TOOLS[name]
        return server.tool(
            name=name,
            description=description,
            annotations=spec.annotations(title),
            meta={"group": spec.group},
        )

    # -- observe -----------------------------------------------------------------------------

    @tool(
        "list_clusters",
        "List clusters",
        "The clusters this server can operate (from clusters.yaml, or the embedded local "
        "cluster): name, kind, mode (sandbox|production), read_only, allowed_operations, "
        "require_approval, and which is the default. Use it first when you do not know the "
        "cluster's name. Reads the configuration only.",
    )
    async def list_clusters_tool() -> ClusterList:
        return list_clusters(cfg)

    @tool(
        "cluster_status",
        "Cluster status",
        "Who leads, in which term, every member with its role, reachability, indexes and lag "
        "behind the leader, the voters and learners, any change in flight, and warnings. "
        "Use it to look before you act and after you act. Safe at any time; never changes "
        "anything.",
    )
    async def cluster_status(ctx: Context, cluster: ClusterArg = None) -> ClusterStatus:
        return await backend.run(ctx, cluster, lambda m, p: m.cluster_status())

    @tool(
        "health_check",
        "Health check",
        "Pre-operation checks: quorum available, one stable leader, members caught up, no "
        "membership change pending. Name the `operation` you intend (e.g. change_membership, "
        "elect_leader, recover_node) and `safe` says whether it is safe right now, with "
        "`reasons` when not. Call it before any mutation. Never changes anything.",
    )
    async def health_check(
        ctx: Context,
        cluster: ClusterArg = None,
        operation: Annotated[
            str | None,
            Field(description="the operation you intend: one of the tool names, e.g. elect_leader"),
        ] = None,
    ) -> HealthReport:
        return await backend.run(ctx, cluster, lambda m, p: m.health_check(operation))

    @tool(
        "verify_consistency",
        "Verify consistency",
        "Compares every reachable member's applied-state hash at a common index and their "
        "committed log entries. `consistent` is true, false (divergences name the member, "
        "index and kind), or null when it could not verify (reasons say why, e.g. members "
        "unreachable). Run it after any change or incident. Never changes anything.",
    )
    async def verify_consistency(ctx: Context, cluster: ClusterArg = None) -> VerifyReport:
        return await backend.run(ctx, cluster, lambda m, p: m.verify_consistency())

    # -- data --------------------------------------------------------------------------------

    @tool(
        "read",
        "Read a key",
        "Reads one key from the cluster's key/value state. consistency=linearizable (default) "
        "goes through the leader and sees every committed write; stale may answer from any "
        "member and lag behind. `value` is null when the key is absent. Never changes "
        "anything.",
    )
    async def read(
        ctx: Context,
        key: Annotated[str, Field(min_length=1, description="the key to read")],
        cluster: ClusterArg = None,
        consistency: Literal["linearizable", "stale"] = "linearizable",
    ) -> ReadResult:
        return await backend.run(ctx, cluster, lambda m, p: m.read(key, consistency))

    @tool(
        "replicate",
        "Replicate entries",
        "Commits key/value entries through the leader, in order, each exactly once (client "
        "sessions make retries safe); returns the log index and term of each. A value "
        "overwrites the key; value null deletes it. Refused without a quorum, on read-only "
        "clusters, and on production clusters (which need a plan id; use the CLI there). "
        "If it fails part-way, the error says how many entries were written.",
    )
    async def replicate(
        ctx: Context,
        entries: Annotated[
            list[KVEntry], Field(min_length=1, description="[{key, value}], value null deletes")
        ],
        cluster: ClusterArg = None,
    ) -> ReplicateResult:
        return await backend.run(
            ctx, cluster, lambda m, p: m.replicate(entries), mutation=True, cli="put KEY VALUE"
        )  # type: ignore[return-value]

    # -- change the cluster -------------------------------------------------------------------

    @tool(
        "elect_leader",
        "Move or elect the leader",
        "Moves leadership to `target` (a caught-up, reachable voter) by a leadership "
        "transfer, or, with no target, makes a leaderless cluster elect one. Check "
        "health_check(operation='elect_leader') first. dry_run=true returns the plan and its "
        "plan_id without acting; apply it with plan_id (required on production clusters, "
        "and after a human's `raft-manager approve` where approval is required). Refused for "
        "a learner, unreachable, cut-off or lagging target, without quorum, or with a stale "
        "plan. Returns previous_leader, leader and term. Reports progress.",
    )
    async def elect_leader(
        ctx: Context,
        cluster: ClusterArg = None,
        target: Annotated[str | None, Field(description="voter id to lead, e.g. n2")] = None,
        dry_run: Annotated[bool, Field(description="only plan; returns plan_id")] = False,
        plan_id: Annotated[str | None, Field(description="apply this dry run's plan")] = None,
    ) -> ElectionOrPlan:
        result = await backend.run(
            ctx,
            cluster,
            lambda m, p: m.elect_leader(target, dry_run=dry_run, plan_id=plan_id, progress=p),
            mutation=True,
        )
        return ElectionOrPlan(result)

    @tool(
        "change_membership",
        "Change membership",
        "Plans, and applies only a still-valid plan, one membership change: add_learner "
        "(local clusters start the node's process), add_voter (learner, catch up, promote), "
        "promote (a caught-up learner), remove (the leader hands over first if it is the one "
        "removed). dry_run defaults to true: you get the plan (steps, safe, reasons, risks, "
        "quorum before/after, plan_id) and nothing changes. Then call again with "
        "dry_run=false and that plan_id. Refused when unsafe (quorum would break, a learner "
        "lags, another change is in flight), when the plan is stale or made for other "
        "arguments, and, where approval is required, until a human ran `raft-manager approve "
        "PLAN_ID`. Reports progress while it waits for catch-up and commits.",
    )
    async def change_membership(
        ctx: Context,
        action: Literal["add_learner", "add_voter", "promote", "remove"],
        node_id: Annotated[str, Field(min_length=1, description="the member, e.g. n4")],
        cluster: ClusterArg = None,
        peer_address: Annotated[
            str | None, Field(description="HOST:PORT for peers (remote clusters, adding)")
        ] = None,
        api_address: Annotated[
            str | None, Field(description="HOST:PORT of its API (remote clusters, adding)")
        ] = None,
        dry_run: Annotated[bool, Field(description="only plan (default)")] = True,
        plan_id: Annotated[str | None, Field(description="apply this dry run's plan")] = None,
    ) -> MembershipChange:
        return await backend.run(
            ctx,
            cluster,
            lambda m, p: m.change_membership(
                action,
                node_id,
                peer_address,
                api_address,
                dry_run=dry_run,
                plan_id=plan_id,
                progress=p,
            ),
            mutation=True,
        )

    # -- maintain and recover -----------------------------------------------------------------

    @tool(
        "snapshot",
        "Snapshot and compact",
        "Takes a snapshot on `node` (or every reachable member) and compacts its log; the "
        "state is unchanged. Returns each node's snapshot index and size, or its error. "
        "Refused on read-only clusters and on production clusters (use the CLI's plan "
        "there).",
    )
    async def snapshot(
        ctx: Context,
        cluster: ClusterArg = None,
        node: Annotated[str | None, Field(description="one member; omit for all")] = None,
    ) -> SnapshotResult:
        return await backend.run(
            ctx, cluster, lambda m, p: m.snapshot(node), mutation=True, cli="snapshot"
        )  # type: ignore[return-value]

    @tool(
        "recover_node",
        "Recover a node",
        "Brings a crashed or lagging member back: on a local cluster it restarts the "
        "node's process, then waits until the node has caught up with the leader "
        "(`caught_up`, applied_index vs target_index). For a remote cluster it cannot "
        "restart, it returns `instructions` for the operator. Use it after a crash or a "
        "partition healed. Reports progress.",
    )
    async def recover_node(
        ctx: Context,
        node_id: Annotated[str, Field(min_length=1, description="the member to recover")],
        cluster: ClusterArg = None,
    ) -> RecoverResult:
        return await backend.run(  # type: ignore[return-value]
            ctx,
            cluster,
            lambda m, p: m.recover_node(node_id, progress=p),
            mutation=True,
            cli=f"recover {node_id}",
        )

    @tool(
        "inject_fault",
        "Inject a fault (sandbox)",
        "For rehearsals on sandbox clusters only (refused on production): partition cuts "
        "`nodes` off from the rest, heal clears faults (all members when nodes is empty), "
        "kill SIGKILLs their processes, restart starts them again. Partitions need nodes "
        "started with --allow-fault-injection. Undo with heal / recover_node.",
    )
    async def inject_fault(
        ctx: Context,
        kind: Literal["partition", "heal", "kill", "restart"],
        nodes: Annotated[list[str], Field(description='member ids, e.g. ["n3"]')],
        cluster: ClusterArg = None,
    ) -> FaultResult:
        return await backend.run(
            ctx, cluster, lambda m, p: m.inject_fault(kind, nodes), mutation=True
        )  # type: ignore[return-value]

    _add_resources(server, cfg, runbooks if runbooks is not None else runbook_dir())
    _add_prompts(server)
    return server


# -- resources and prompts ---------------------------------------------------------------------


def runbook_dir() -> Path | None:
    """skill/references beside the package (a checkout or editable install), else the
    copy a wheel installs under ``<prefix>/share/agent-raft-manager``."""
    for d in (
        Path(__file__).resolve().parent.parent / "skill" / "references",
        Path(sys.prefix) / "share" / SERVER_NAME / "skill" / "references",
    ):
        if d.is_dir():
            return d
    return None


def _add_resources(server: MCPServer, cfg: Config, runbooks: Path | None) -> None:
    def status_of(name: str) -> Callable[[], str]:
        def status() -> str:
            try:
                with Manager.open(cfg, name, start=False) as mgr:
                    return mgr.status().model_dump_json(indent=2)
            except ManagerError as e:
                return json.dumps({"cluster": name, "error": e.code, "reason": str(e)})

        return status

    for name in cfg.clusters:
        server.resource(
            f"raft://clusters/{name}/status",
            name=f"{name}-status",
            description=f"cluster_status of {name!r}, read when the resource is read",
            mime_type="application/json",
        )(status_of(name))

    @server.resource(
        "raft://audit",
        name="audit-log",
        description=f"the last {AUDIT_TAIL} audit log lines (mutations, plans, refusals, "
        "approvals), oldest first",
        mime_type="application/json",
    )
    def audit() -> str:
        log_ = AuditLog(cfg.audit_path())
        return json.dumps({"path": str(log_.path), "entries": log_.read()[-AUDIT_TAIL:]}, indent=2)

    if runbooks is None:
        return
    for md in sorted(runbooks.glob("*.md")):
        server.resource(
            f"raft://runbooks/{md.stem}",
            name=f"runbook-{md.stem}",
            description=f"runbook: {md.stem.replace('-', ' ').replace('_', ' ')}",
            mime_type="text/markdown",
        )(_reader(md))


def _reader(path: Path) -> Callable[[], str]:
    return lambda: path.read_text()


def _add_prompts(server: MCPServer) -> None:
    def on(cluster: str | None) -> str:
        return f"cluster {cluster!r}" if cluster else "the default cluster"

    @server.prompt(
        name="planned_leader_change",
        description="Move leadership to another voter safely (maintenance on the leader).",
    )
    def planned_leader_change(cluster: str | None = None, target: str | None = None) -> str:
        who = f"to {target}" if target else "to the most caught-up other voter"
        return (
            f"Move the leadership of {on(cluster)} {who}.\n"
            "1. cluster_status: note the leader, term and each voter's lag.\n"
            "2. health_check with operation='elect_leader'; stop and report if not safe.\n"
            "3. elect_leader with dry_run=true (and the target); read the plan's reasons.\n"
            "4. elect_leader with the plan_id. If it needs a human's approval, ask them to run "
            "`raft-manager approve PLAN_ID` and wait; never try to approve it yourself.\n"
            "5. cluster_status: confirm the new leader and term; then verify_consistency."
        )

    @server.prompt(
        name="add_member",
        description="Add a node as a voter: learner first, catch up, promote, verify.",
    )
    def add_member(node_id: str, cluster: str | None = None) -> str:
        return (
            f"Add {node_id} to {on(cluster)} as a voter.\n"
            "1. health_check with operation='change_membership'; stop if not safe.\n"
            f"2. change_membership action=add_learner node_id={node_id} (dry run), review, "
            "then apply its plan_id with dry_run=false.\n"
            f"3. cluster_status until {node_id} is caught_up (lag near 0).\n"
            f"4. change_membership action=promote node_id={node_id}: dry run, then apply.\n"
            "5. verify_consistency. Report the new voters and quorum."
        )

    @server.prompt(
        name="recover_after_failure",
        description="Recover after a crash or a partition: find, restore, confirm.",
    )
    def recover_after_failure(node_id: str | None = None, cluster: str | None = None) -> str:
        who = node_id or "every member that cluster_status shows unreachable or lagging"
        return (
            f"Recover {on(cluster)} after a crash or partition.\n"
            "1. cluster_status: is there a leader and a quorum? Which members are unreachable "
            "or lagging?\n"
            f"2. For {who}: recover_node (a partition on a sandbox: inject_fault kind=heal "
            "first). Wait for caught_up=true.\n"
            "3. If there is no leader but a quorum is back, elect_leader without a target.\n"
            "4. Do not remove members while the cluster is degraded: quorum may break.\n"
            "5. verify_consistency; report divergences to a human, do not repair them."
        )

    @server.prompt(
        name="verify_after_incident",
        description="Check that logs and state agree after an incident, and report.",
    )
    def verify_after_incident(cluster: str | None = None) -> str:
        return (
            f"Verify {on(cluster)} after an incident.\n"
            "1. cluster_status: one leader, every member reachable, lag near 0? If not, "
            "recover first (prompt recover_after_failure).\n"
            "2. verify_consistency. consistent=true: report the common index. false: list the "
            "divergences (member, index, kind) and stop: a human decides. null: report why it "
            "could not verify and what is missing.\n"
            "3. Read the audit log resource (raft://audit) for what changed during the incident."
        )


# -- HTTP: loopback by default, bearer token elsewhere ------------------------------------------


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps(
                    {"error": "unauthorized", "message": "missing or wrong bearer token"}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None) -> str | None:
    """The HTTP bearer token: from ``--token-file``, else ``$RAFT_MANAGER_MCP_TOKEN``."""
    if token_file:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read --token-file {token_file}: {e.strerror}") from None
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty")
        return token
    return (os.environ.get(ENV_TOKEN) or "").strip() or None


def http_app(server: MCPServer, host: str, token: str | None) -> Any:
    """The streamable HTTP ASGI app (``/mcp``), behind the token check when there is one."""
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"refusing to serve MCP on {host} without a bearer token",
            f"put a token in a file and pass --token-file FILE, or set {ENV_TOKEN}; "
            "or bind to 127.0.0.1",
        )
    app = server.streamable_http_app(host=host)
    return BearerAuth(app, token) if token else app


# -- entry point ----------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    """Run the server the parsed flags describe; returns an exit code."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    # Mark this process: `raft-manager approve` refuses to run under the MCP server.
    os.environ[ENV_VIA_MCP] = "1"
    try:
        cfg = load_config(args.config)
        if getattr(args, "cluster", None):  # `raft-manager --cluster NAME mcp`: the default
            cfg.default = cfg.cluster(args.cluster).name
        server = build_server(
            cfg, read_only=args.read_only, disable_destructive=args.disable_destructive
        )
        if not args.http:
            server.run()
            return 0
        app = http_app(server, args.host, read_token(args.token_file))
    except ManagerError as e:
        sys.stderr.write(f"raft-manager-mcp: {e}\n")
        return e.exit_code
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="raft-manager-mcp",
        description="The agent-raft-manager MCP server (stdio by default).",
    )
    p.add_argument("--config", help="clusters.yaml (default: $RAFT_MANAGER_CONFIG, else embedded)")
    add_arguments(p)
    return serve(p.parse_args(argv))


def _version() -> str:
    try:
        return version("agent-raft-manager")
    except PackageNotFoundError:
        return "0"


if __name__ == "__main__":
    sys.exit(main())
