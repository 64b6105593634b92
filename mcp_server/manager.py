"""The Manager: one cluster's guarded, audited operations, for every face.

The CLI, the MCP server, the demo and the benchmark all call these methods. Each one:

1. builds the operation's one request model from its arguments (bad input is a
   ``InputError`` naming the field);
2. runs under ``Guard.run``: policy, the dry-run rule, one audit line per mutation,
   plan and refusal;
3. for a mutation: the operation's ``plan(ctx, request)`` makes a plan against the
   cluster as it is; a dry run saves and returns it (``outcome: planned``); applying
   checks a saved plan still matches, asks for a human's approval where the cluster
   requires one (``core/approvals.py``), refuses an unsafe plan, and then
   ``run(ctx, plan, progress)`` carries it out (``outcome: applied``).

Refusals raise ``Refused``; failures raise ``ManagerError``; both say what to do next.
Long operations take ``progress(done, total, message)`` (the MCP server forwards it as
progress notifications, the CLI shows a spinner).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from .adapters.etcd import EtcdAdapter
from .adapters.nats import NatsAdapter
from .adapters.nats_processes import NatsProcesses
from .adapters.processes import EtcdProcesses, LocalProcesses
from .adapters.raft_node import RaftNodeAdapter
from .core import policy
from .core.approvals import ApprovalGate, ApprovalStore
from .core.audit import AuditLog
from .core.config import (
    ClusterConfig,
    Config,
    load_config,
    resolve_password,
    resolve_token,
    state_dir,
)
from .core.context import OperationContext, ProgressFn, quiet
from .core.errors import InputError, ManagerError
from .core.guard import Guard
from .core.models import (
    ClusterInfo,
    ClusterList,
    ClusterStatus,
    ElectionOutcome,
    ElectRequest,
    FaultOutcome,
    GroupRequest,
    HealthReport,
    HealthRequest,
    InjectFaultRequest,
    KVEntry,
    LocalStart,
    MembershipOutcome,
    MembershipRequest,
    OperationRequest,
    Outcome,
    Plan,
    ReadRequest,
    ReadResult,
    RecoverOutcome,
    RecoverRequest,
    ReplicateOutcome,
    ReplicateRequest,
    SnapshotOutcome,
    SnapshotRequest,
    StatusRequest,
    VerifyReport,
)
from .core.plans import Decision, PlanStore, check_saved, refuse_unsafe
from .core.port import ClusterAdapter
from .core.view import GROUP_PAGE, status_with_groups
from .local.cluster import CLUSTER_FILE, ClusterError, LocalCluster, ensure_running
from .operations import (
    faults,
    health,
    leadership,
    membership,
    read,
    recovery,
    replicate,
    snapshot,
    verify,
)

R = TypeVar("R", bound=OperationRequest)


class PlannedOperation(Protocol):
    """What ``mutate`` needs of an operation module (see ``mcp_server.operations``)."""

    OPERATION: str

    def plan(self, ctx: OperationContext, request: Any) -> Plan: ...

    def run(
        self, ctx: OperationContext, plan: Any, progress: ProgressFn, /, **options: Any
    ) -> Any: ...


@dataclass(frozen=True)
class Mutation:
    """A mutation's parts: its operation module, its one request model, its outcome."""

    op: PlannedOperation
    request: type[OperationRequest]
    outcome: type[Outcome]


MUTATIONS: dict[str, Mutation] = {
    m.op.OPERATION: m
    for m in (
        Mutation(leadership, ElectRequest, ElectionOutcome),
        Mutation(replicate, ReplicateRequest, ReplicateOutcome),
        Mutation(membership, MembershipRequest, MembershipOutcome),
        Mutation(snapshot, SnapshotRequest, SnapshotOutcome),
        Mutation(recovery, RecoverRequest, RecoverOutcome),
        Mutation(faults, InjectFaultRequest, FaultOutcome),
    )
}
"""Every mutation by its operation (MCP tool) name: the one table ``Manager.mutate`` reads."""


def make_adapter(c: ClusterConfig) -> tuple[ClusterAdapter, str | None]:
    """The adapter for cluster ``c`` and the token it uses (for redaction)."""
    if c.kind == "etcd":
        password = resolve_password(c)
        etcd = EtcdAdapter(
            endpoints=c.endpoints,
            processes=EtcdProcesses(c.dir, tls=c.tls) if c.dir else None,
            tls=c.tls,
            username=c.username,
            password=password,
        )
        return etcd, password
    if c.kind == "nats":
        password = resolve_password(c)
        nats = NatsAdapter(
            servers=c.servers,
            monitor=c.monitor,
            processes=NatsProcesses(c.dir) if c.dir else None,
            username=c.username,
            password=password,
            backup_dir=Path(c.dir) / "backups" if c.dir else state_dir() / "nats-backups",
        )
        return nats, password
    local_token = None
    if c.dir and (Path(c.dir) / CLUSTER_FILE).exists():
        try:
            local_token = LocalCluster.load(c.dir).settings.api_token_file
        except ClusterError:
            local_token = None
    token = resolve_token(c, local_token)
    processes = LocalProcesses(c.dir) if c.dir else None
    # Without `tls:` a local cluster's adapter uses the cluster's own CA (cluster.yaml).
    adapter = RaftNodeAdapter(endpoints=c.endpoints, processes=processes, token=token, tls=c.tls)
    return adapter, token


def list_clusters(config: Config) -> ClusterList:
    default = config.default or (next(iter(config.clusters)) if len(config.clusters) == 1 else None)
    return ClusterList(
        config=config.path,
        clusters=[
            ClusterInfo(
                name=c.name,
                kind=c.kind,
                mode=c.mode,
                read_only=c.read_only,
                allowed_operations=c.allowed_operations,
                require_approval=c.approval_required,
                location=c.location,
                default=c.name == default,
            )
            for c in config.clusters.values()
        ],
    )


def request(model: type[R], **fields: Any) -> R:
    """``model`` built from ``fields``; a ``InputError`` naming the bad field otherwise."""
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or model.__name__
        raise InputError(f"bad {where}: {err['msg']}", "check the arguments") from None


class Manager:
    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        config: Config | None = None,
        adapter: ClusterAdapter | None = None,
        audit: AuditLog | None = None,
        plans: PlanStore | None = None,
        started: LocalStart | None = None,
    ) -> None:
        self.cluster = cluster
        self.config = config or Config(clusters={cluster.name: cluster}, default=cluster.name)
        token = None
        if adapter is None:
            adapter, token = make_adapter(cluster)
        self.adapter = adapter
        self.audit = audit or AuditLog(self.config.audit_path())
        self.audit.add_secret(token)
        self.plans = plans or PlanStore(state_dir() / "plans")
        self.guard = Guard(cluster, self.audit)
        self.approvals = ApprovalGate(
            cluster, ApprovalStore(self.plans.dir / "approvals"), self.audit
        )
        self.ctx = OperationContext(cluster, adapter, plan_ttl_s=self.config.plan_ttl_s)
        self.started = started
        self._start_reported = False
        """Set when ``open(start_local=True)`` started the embedded local cluster."""

    @classmethod
    def open(
        cls,
        config: Config | str | None = None,
        cluster: str | None = None,
        *,
        start_local: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> Manager:
        """The manager for ``cluster`` in ``config`` (a path, a Config, or None: the default).

        With ``start_local``, a cluster marked ``auto_start`` (the embedded default) is
        started when none of its processes runs, and ``manager.started`` says so (the
        status answer repeats it in ``notices``). Without it nothing is started: a read
        of a stopped cluster reports it unreachable.
        """
        cfg = config if isinstance(config, Config) else load_config(config)
        c = cfg.cluster(cluster)
        started = None
        if start_local and c.auto_start and c.is_local:
            try:
                if ensure_running(c.dir, nodes=c.nodes, base_port=c.base_port, progress=progress):
                    started = LocalStart(
                        dir=str(c.dir), detail=f"started the local cluster in {c.dir}"
                    )
            except ClusterError as e:
                raise ManagerError(str(e), "see the node logs in the cluster directory") from None
        return cls(c, config=cfg, started=started)

    def close(self) -> None:
        self.adapter.close()

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.cluster.name

    # -- the guarded paths -------------------------------------------------------------------

    def guarded(self, operation: str, arguments: dict[str, Any], body: Callable[[], Any]) -> Any:
        """Run ``body`` under the guard (policy, audit) as ``operation``: for faces with
        work of their own, such as ``raft-manager bench --existing``."""
        return self.guard.run(operation, arguments, lambda _decision: body())

    def _ctx(self, group: str | None) -> OperationContext:
        """The context of one Raft group (``group``; None: the cluster's main one)."""
        if group is None:
            return self.ctx
        return OperationContext(
            self.cluster, self.adapter.for_group(group), plan_ttl_s=self.config.plan_ttl_s
        )

    def _read(self, operation: str, req: OperationRequest, body: Callable[[], Any]) -> Any:
        return self.guard.run(operation, req.arguments(), lambda _decision: body())

    def mutate(
        self,
        operation: str,
        fields: dict[str, Any],
        *,
        dry_run: bool,
        plan_id: str | None,
        progress: ProgressFn | None,
        **options: Any,
    ) -> Outcome:
        """The one path of every mutation: build the operation's request from ``fields``,
        plan it; then, as the dry-run rule decides, return the plan or apply it: a saved
        plan only while it still matches the cluster, with a human's approval where one
        is required, and never an unsafe one. ``options`` go to the operation's ``run``
        (its timeouts). A request naming a ``group`` plans and runs in that Raft group."""
        m = MUTATIONS[operation]
        req = request(m.request, **fields)
        ctx = self._ctx(getattr(req, "group", None))

        def body(decision: Decision) -> Outcome:
            plan = m.op.plan(ctx, req)
            gated = self.approvals.required(plan.operation)
            plan.requires_approval = gated and plan.safe
            if decision == "plan":
                self.plans.save(plan)
                return m.outcome(outcome="planned", plan=plan)
            if gated:  # before the plan is loaded: an expired plan's approval is audited
                self.approvals.expire()
            stored = None
            if decision == "apply_saved":
                assert plan_id is not None
                stored = check_saved(self.plans, plan_id, plan)
            if gated:
                self.approvals.check(plan.operation, stored)
            if stored is not None:  # used up, even if refused as unsafe below
                self.plans.discard(stored.plan_id)
                self.approvals.store.consume(stored.plan_id)
            refuse_unsafe(plan)
            result = m.op.run(ctx, plan, progress or quiet, **options)
            return m.outcome(outcome="applied", plan=plan, result=result)

        return self.guard.run(operation, req.arguments(), body, plan_id=plan_id, dry_run=dry_run)

    # -- reads ---------------------------------------------------------------------------------

    def list_clusters(self) -> ClusterList:
        return self._read("list_clusters", OperationRequest(), lambda: list_clusters(self.config))

    def status(
        self,
        group: str | None = None,
        *,
        group_offset: int = 0,
        group_limit: int = GROUP_PAGE,
    ) -> ClusterStatus:
        """The cluster's (or one group's) status, with one page of its Raft groups."""
        req = request(
            StatusRequest, group=group, group_offset=group_offset, group_limit=group_limit
        )

        def body() -> ClusterStatus:
            ctx = self._ctx(group)
            st = status_with_groups(
                ctx.adapter, req, cluster=self.name, kind=self.cluster.kind, mode=self.cluster.mode
            )
            if self.started is not None and not self._start_reported:
                # Said once, by the first status answer after the start; a long-lived
                # manager (the MCP server's) would otherwise repeat old news.
                st.notices.append(self.started.detail)
                self._start_reported = True
            return st

        return self._read("cluster_status", req, body)

    cluster_status = status  # the MCP tool's name

    def health_check(self, operation: str | None = None, group: str | None = None) -> HealthReport:
        if operation is not None:
            try:
                operation = policy.canonical(operation)
            except ValueError as e:
                raise InputError(str(e), "name one of the MCP tool operations") from None
        req = request(HealthRequest, operation=operation, group=group)
        return self._read(health.OPERATION, req, lambda: health.check(self._ctx(group), req))

    def read(self, key: str, consistency: str = "linearizable") -> ReadResult:
        req = request(ReadRequest, key=key, consistency=consistency)
        return self._read(read.OPERATION, req, lambda: read.read(self.ctx, req))

    def verify_consistency(self, group: str | None = None) -> VerifyReport:
        req = request(GroupRequest, group=group)
        return self._read(verify.OPERATION, req, lambda: verify.verify(self._ctx(group)))

    # -- mutations -----------------------------------------------------------------------------

    def elect_leader(
        self,
        target: str | None = None,
        *,
        dry_run: bool = False,
        plan_id: str | None = None,
        progress: ProgressFn | None = None,
        timeout_s: float = 15.0,
        group: str | None = None,
    ) -> ElectionOutcome:
        """Move leadership to ``target``, or make a leaderless cluster elect one (in
        ``group``, where leaders move by stepping down: the group's leader steps down)."""
        fields = {"target": target, "group": group}
        return self.mutate(  # type: ignore[return-value]
            leadership.OPERATION,
            fields,
            dry_run=dry_run,
            plan_id=plan_id,
            progress=progress,
            timeout_s=timeout_s,
        )

    def replicate(
        self,
        entries: list[KVEntry] | list[dict] | dict[str, str | None],
        *,
        dry_run: bool = False,
        plan_id: str | None = None,
        progress: ProgressFn | None = None,
    ) -> ReplicateOutcome:
        """Commit ``entries`` ([{key, value}], or {key: value}; a null value deletes)."""
        if isinstance(entries, dict):
            entries = [{"key": k, "value": v} for k, v in entries.items()]
        fields = {"entries": [e.model_dump() if isinstance(e, KVEntry) else e for e in entries]}
        return self.mutate(  # type: ignore[return-value]
            replicate.OPERATION, fields, dry_run=dry_run, plan_id=plan_id, progress=progress
        )

    def change_membership(
        self,
        action: str,
        node_id: str,
        peer_address: str | None = None,
        api_address: str | None = None,
        *,
        dry_run: bool = True,
        plan_id: str | None = None,
        progress: ProgressFn | None = None,
        catch_up_timeout_s: float = 30.0,
    ) -> MembershipOutcome:
        """Plan (``dry_run``) or apply a membership change.

        ``action``: add_learner, add_voter (learner, catch up, promote), promote, remove.
        """
        fields = {
            "action": action.replace("-", "_"),
            "node_id": node_id,
            "peer_address": peer_address,
            "api_address": api_address,
        }
        return self.mutate(  # type: ignore[return-value]
            membership.OPERATION,
            fields,
            dry_run=dry_run,
            plan_id=plan_id,
            progress=progress,
            catch_up_timeout_s=catch_up_timeout_s,
        )

    def snapshot(
        self,
        node: str | None = None,
        *,
        dry_run: bool = False,
        plan_id: str | None = None,
        progress: ProgressFn | None = None,
        group: str | None = None,
    ) -> SnapshotOutcome:
        return self.mutate(  # type: ignore[return-value]
            snapshot.OPERATION,
            {"node": node, "group": group},
            dry_run=dry_run,
            plan_id=plan_id,
            progress=progress,
        )

    def recover_node(
        self,
        node_id: str,
        *,
        dry_run: bool = False,
        plan_id: str | None = None,
        progress: ProgressFn | None = None,
        timeout_s: float = 60.0,
        group: str | None = None,
    ) -> RecoverOutcome:
        """Bring a crashed or lagging member back and wait until it has caught up (in
        ``group``, where the cluster has several Raft groups)."""
        fields = {"node_id": node_id, "group": group}
        return self.mutate(  # type: ignore[return-value]
            recovery.OPERATION,
            fields,
            dry_run=dry_run,
            plan_id=plan_id,
            progress=progress,
            timeout_s=timeout_s,
        )

    def inject_fault(
        self,
        kind: str,
        nodes: list[str] | None = None,
        *,
        dry_run: bool = False,
        plan_id: str | None = None,
        progress: ProgressFn | None = None,
    ) -> FaultOutcome:
        """partition (cut ``nodes`` off from the rest), heal, kill, restart, stop
        (SIGSTOP), continue (SIGCONT): sandbox only."""
        fields = {"kind": kind, "nodes": list(nodes or [])}
        return self.mutate(  # type: ignore[return-value]
            faults.OPERATION, fields, dry_run=dry_run, plan_id=plan_id, progress=progress
        )
