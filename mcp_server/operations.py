"""The guarded, audited operations: what the CLI and the MCP server both call.

``Manager`` wraps one cluster (its config, adapter, audit log and plan store). Every
public method:

1. checks policy (``policy.check``: allowed_operations, read_only, production rules);
2. reads the cluster (``ClusterView``) and works out a plan with its safety reasons;
3. for a mutation: a dry run saves and returns the plan; ``plan_id`` applies a saved
   plan only if it still matches the cluster; otherwise (sandbox) a safe plan is
   applied at once and an unsafe one is refused;
4. appends one audit line for every mutation, plan and refusal.

Refusals raise ``Refused``; failures raise ``ManagerError``; both say what to do next.
Long operations take ``progress(done, total, message)`` (the MCP server forwards it as
progress notifications, the CLI shows a spinner).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from . import policy
from .adapters.base import ClusterAdapter, WriteResult
from .adapters.raft_core import RaftCoreAdapter
from .approvals import DESTRUCTIVE, ApprovalStore
from .audit import AuditLog
from .config import ClusterConfig, Config, load_config, resolve_token, state_dir
from .errors import (
    ConfigError,
    ManagerError,
    NodeRequestError,
    NotSupported,
    Refused,
)
from .faults import KINDS as FAULT_KINDS
from .faults import plan_fault, run_fault
from .health import report as health_report
from .leadership import plan_election, run_election
from .local import ensure_running
from .local_cluster import CLUSTER_FILE, ClusterError, LocalCluster
from .membership import ACTIONS, plan_change
from .membership_exec import apply_change
from .models import (
    ClusterInfo,
    ClusterList,
    ClusterStatus,
    ElectionResult,
    FaultResult,
    HealthReport,
    KVEntry,
    MembershipChange,
    NodeSnapshot,
    Plan,
    PlanStep,
    ReadResult,
    RecoverResult,
    ReplicateResult,
    SnapshotResult,
    VerifyReport,
    WrittenEntry,
)
from .plans import PlanStore, describe_change, plan_id, timestamps
from .recovery import plan_recovery, run_recovery
from .verify import verify
from .view import ClusterView, status_model

ProgressFn = Callable[[float, float | None, str], None]
T = TypeVar("T")


def _quiet(done: float, total: float | None, message: str) -> None:
    pass


def make_adapter(c: ClusterConfig) -> tuple[ClusterAdapter, str | None]:
    """The adapter for cluster ``c`` and the token it uses (for redaction)."""
    if c.kind == "etcd":
        raise NotSupported(
            f"cluster {c.name!r} is an etcd cluster: the etcd adapter is not available yet",
            "use a raft_core cluster for now",
        )
    local_token = None
    if c.dir and (Path(c.dir) / CLUSTER_FILE).exists():
        try:
            local_token = LocalCluster.load(c.dir).settings.api_token_file
        except ClusterError:
            local_token = None
    token = resolve_token(c, local_token)
    return RaftCoreAdapter(endpoints=c.endpoints, local_dir=c.dir, token=token, tls=c.tls), token


def list_clusters(config: Config) -> ClusterList:
    default = (
        config.default
        if config.default
        else (next(iter(config.clusters)) if len(config.clusters) == 1 else None)
    )
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


class Manager:
    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        config: Config | None = None,
        adapter: ClusterAdapter | None = None,
        audit: AuditLog | None = None,
        plans: PlanStore | None = None,
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
        self.approvals = ApprovalStore(self.plans.dir / "approvals")
        self.client_id = f"raft-manager-{uuid.uuid4().hex[:12]}"
        self._seq = 0

    @classmethod
    def open(
        cls,
        config: Config | str | None = None,
        cluster: str | None = None,
        *,
        start: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> Manager:
        """The manager for ``cluster`` in ``config`` (a path, a Config, or None for the default).

        With ``start``, a cluster marked ``auto_start`` (the embedded default) is started
        if none of its processes runs.
        """
        cfg = config if isinstance(config, Config) else load_config(config)
        c = cfg.cluster(cluster)
        if start and c.auto_start and c.is_local:
            try:
                ensure_running(c.dir, nodes=c.nodes, base_port=c.base_port, progress=progress)
            except ClusterError as e:
                raise ManagerError(str(e), "see the node logs in the cluster directory") from None
        return cls(c, config=cfg)

    def close(self) -> None:
        self.adapter.close()

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- guard + audit ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.cluster.name

    def record(
        self,
        operation: str,
        arguments: dict[str, Any],
        outcome: str,
        *,
        plan_id: str | None = None,
        reason: str | None = None,
        result: Any = None,
    ) -> None:
        self.audit.record(
            cluster=self.name,
            mode=self.cluster.mode,
            operation=operation,
            arguments=arguments,
            outcome=outcome,
            plan_id=plan_id,
            reason=reason,
            result=result,
        )

    def run_guarded(
        self,
        operation: str,
        arguments: dict[str, Any],
        body: Callable[[], T],
        *,
        plan_id: str | None = None,
        dry_run: bool = False,
    ) -> T:
        mutation = policy.is_mutation(operation)
        try:
            policy.check(
                cluster=self.name,
                mode=self.cluster.mode,
                read_only=self.cluster.read_only,
                allowed_operations=self.cluster.allowed_operations,
                operation=operation,
                plan_id=plan_id,
                dry_run=dry_run,
            )
            result = body()
        except Refused as e:
            e.operation = e.operation or operation
            self.record(
                operation,
                arguments,
                "refused",
                plan_id=plan_id,
                reason="; ".join(dict.fromkeys([e.reason, *e.reasons])),
            )
            raise
        except ManagerError as e:
            e.operation = e.operation or operation
            if mutation:
                self.record(operation, arguments, "failed", plan_id=plan_id, reason=e.reason)
            raise
        except Exception as e:
            if mutation:
                self.record(
                    operation,
                    arguments,
                    "failed",
                    plan_id=plan_id,
                    reason=f"{type(e).__name__}: {e}",
                )
            raise
        if mutation:
            planned = isinstance(result, Plan) and not result.applied
            self.record(
                operation,
                arguments,
                "planned" if planned else "ok",
                plan_id=plan_id or getattr(result, "plan_id", None),
                result=_summary(result),
            )
        return result

    def read_view(self) -> ClusterView:
        return ClusterView.build(self.adapter.statuses())

    def wait_for(
        self,
        predicate: Callable[[ClusterView], bool],
        timeout_s: float,
        progress: ProgressFn,
        message: Callable[[ClusterView], str] | str,
        interval: float = 0.05,
    ) -> tuple[bool, ClusterView]:
        t0 = time.monotonic()
        while True:
            view = self.read_view()
            if predicate(view):
                return True, view
            elapsed = time.monotonic() - t0
            if elapsed >= timeout_s:
                return False, view
            progress(elapsed, timeout_s, message(view) if callable(message) else message)
            time.sleep(interval)

    # -- plans -----------------------------------------------------------------------------

    def make_plan(
        self,
        operation: str,
        arguments: dict[str, Any],
        view: ClusterView,
        *,
        steps: list[PlanStep],
        reasons: list[str],
        risks: list[str] | None = None,
    ) -> Plan:
        created, expires = timestamps(self.config.plan_ttl_s)
        leader = view.leader.id if view.leader else None
        return Plan(
            plan_id=plan_id(
                self.name,
                operation,
                arguments,
                term=view.term,
                leader=leader,
                voters=view.voters,
                learners=view.learners,
            ),
            cluster=self.name,
            operation=operation,
            arguments=arguments,
            safe=not reasons,
            steps=steps,
            reasons=reasons,
            risks=risks or [],
            leader=leader,
            term=view.term,
            voters=view.voters,
            learners=view.learners,
            created_at=created,
            expires_at=expires,
        )

    def gate_plan(self, plan: Plan, dry_run: bool, given_plan_id: str | None) -> Plan | None:
        """Dry run: save and return the plan. Otherwise check it and return None to apply."""
        op = plan.operation
        needs_approval = op in DESTRUCTIVE and self.cluster.approval_required
        if dry_run:
            plan.requires_approval = needs_approval and plan.safe
            self.plans.save(plan)
            return plan
        if needs_approval:
            self._expire_approvals()
            if not given_plan_id:
                raise Refused(
                    f"cluster {self.name!r} requires a human's approval for {op}",
                    "make a plan with dry_run=true, ask a human to run "
                    "`raft-manager approve PLAN_ID` at a terminal, then apply that plan_id",
                    operation=op,
                )
        if given_plan_id:
            stored = self.plans.load(given_plan_id, self.name, op)
            if _norm(stored.arguments) != _norm(plan.arguments):
                raise Refused(
                    f"plan {given_plan_id} was made for {_args_text(stored.arguments)}, "
                    f"not {_args_text(plan.arguments)}",
                    "apply the plan with the arguments it was made for, or make a new plan",
                    operation=op,
                )
            if stored.plan_id != plan.plan_id:
                raise Refused(
                    f"plan {given_plan_id} no longer matches the cluster: "
                    f"{', '.join(describe_change(stored, plan))} since it was made",
                    "make a new plan with a dry run, review it, and apply its plan_id",
                    operation=op,
                )
            if needs_approval and self.approvals.valid_for(stored) is None:
                self.record("approve", {"operation": op}, "requested", plan_id=given_plan_id)
                raise Refused(
                    f"plan {given_plan_id} needs a human's approval before it is applied "
                    f"(cluster {self.name!r} has require_approval)",
                    f"ask a human to run `raft-manager approve {given_plan_id}` at a terminal "
                    "(it cannot be approved through MCP), then apply the same plan_id again",
                    operation=op,
                )
            self.plans.discard(given_plan_id)
            self.approvals.consume(given_plan_id)  # used once, even if refused below
        if not plan.safe:
            raise Refused(
                plan.reasons[0],
                "nothing was changed; fix the cause above (see `raft-manager health`) and retry",
                operation=op,
                reasons=plan.reasons,
            )
        return None

    def _expire_approvals(self) -> None:
        for a in self.approvals.sweep():
            self.audit.record(
                cluster=a.cluster,
                mode=self.cluster.mode,
                operation="approve",
                arguments={"operation": a.operation},
                outcome="expired",
                plan_id=a.plan_id,
                reason=f"the plan expired at {a.expires_at} before it was applied",
            )

    # -- reads -----------------------------------------------------------------------------

    def list_clusters(self) -> ClusterList:
        return self.run_guarded("list_clusters", {}, lambda: list_clusters(self.config))

    def status(self) -> ClusterStatus:
        return self.run_guarded(
            "cluster_status",
            {},
            lambda: status_model(
                self.read_view(), cluster=self.name, kind=self.cluster.kind, mode=self.cluster.mode
            ),
        )

    cluster_status = status  # the MCP tool's name

    def health_check(self, operation: str | None = None) -> HealthReport:
        if operation is not None:
            try:
                operation = policy.canonical(operation)
            except ValueError as e:
                raise ConfigError(str(e), "name one of the MCP tool operations") from None

        def body() -> HealthReport:
            return health_report(
                self.read_view(),
                cluster=self.name,
                mode=self.cluster.mode,
                read_only=self.cluster.read_only,
                allowed_operations=self.cluster.allowed_operations,
                operation=operation,
            )

        return self.run_guarded("health_check", {"operation": operation}, body)

    def read(self, key: str, consistency: str = "linearizable") -> ReadResult:
        if consistency not in ("linearizable", "stale"):
            raise ConfigError("consistency must be 'linearizable' or 'stale'")
        if not key:
            raise ConfigError("the key must not be empty")

        def body() -> ReadResult:
            out = self.adapter.get(key, consistency)
            return ReadResult(
                cluster=self.name,
                key=key,
                value=out.value,
                consistency=consistency,  # type: ignore[arg-type]
                applied_index=out.applied_index,
                served_by=out.node,
            )

        return self.run_guarded("read", {"key": key, "consistency": consistency}, body)

    def verify_consistency(self) -> VerifyReport:
        return self.run_guarded(
            "verify_consistency", {}, lambda: verify(self.adapter, self.read_view(), self.name)
        )

    # -- leadership ------------------------------------------------------------------------

    def elect_leader(
        self,
        target: str | None = None,
        *,
        dry_run: bool = False,
        plan_id: str | None = None,
        progress: ProgressFn | None = None,
        timeout_s: float = 15.0,
    ) -> ElectionResult | Plan:
        """Move leadership to ``target``, or make a leaderless cluster elect one."""
        args = {"target": target}

        def body() -> ElectionResult | Plan:
            view = self.read_view()
            ep = plan_election(view, target)
            plan = self.make_plan("elect_leader", args, view, steps=ep.steps, reasons=ep.reasons)
            early = self.gate_plan(plan, dry_run, plan_id)
            if early is not None:
                return early
            return run_election(self, view, ep, target, progress or _quiet, timeout_s)

        return self.run_guarded("elect_leader", args, body, plan_id=plan_id, dry_run=dry_run)

    # -- data ------------------------------------------------------------------------------

    def replicate(
        self,
        entries: list[KVEntry] | list[dict] | dict[str, str | None],
        *,
        dry_run: bool = False,
        plan_id: str | None = None,
    ) -> ReplicateResult | Plan:
        try:
            if isinstance(entries, dict):
                items = [KVEntry(key=k, value=v) for k, v in entries.items()]
            else:
                items = [
                    e if isinstance(e, KVEntry) else KVEntry.model_validate(e) for e in entries
                ]
        except ValidationError as e:
            raise ConfigError(
                f"bad entries: {e.errors()[0]['msg']}", "pass [{key, value}]"
            ) from None
        if not items:
            raise ConfigError("no entries to replicate")
        args = {"entries": [e.model_dump() for e in items]}

        def body() -> ReplicateResult | Plan:
            view = self.read_view()
            reasons = [] if view.has_quorum() else [view.no_quorum_reason()]
            risks = []
            if view.leader is None and not reasons:
                risks.append("no leader right now: the writes wait for an election")
            steps = [
                PlanStep(
                    action="put" if e.value is not None else "delete",
                    detail=f"{'put' if e.value is not None else 'delete'} {e.key}",
                )
                for e in items[:20]
            ]
            if len(items) > 20:
                steps.append(PlanStep(action="put", detail=f"... and {len(items) - 20} more"))
            plan = self.make_plan(
                "replicate", args, view, steps=steps, reasons=reasons, risks=risks
            )
            early = self.gate_plan(plan, dry_run, plan_id)
            if early is not None:
                return early
            t0 = time.monotonic()
            written: list[WrittenEntry] = []
            leader = None
            for e in items:
                try:
                    w = self._write_once(e)
                except ManagerError as err:
                    raise ManagerError(
                        f"wrote {len(written)} of {len(items)} entries; {e.key} failed: "
                        f"{err.reason}",
                        err.next_step or "check `raft-manager status` and retry",
                    ) from None
                leader = w.node
                written.append(
                    WrittenEntry(key=e.key, index=w.index, term=w.term, deleted=w.deleted)
                )
            return ReplicateResult(
                cluster=self.name,
                leader=leader,
                entries=written,
                seconds=round(time.monotonic() - t0, 3),
            )

        return self.run_guarded("replicate", args, body, plan_id=plan_id, dry_run=dry_run)

    def _write_once(self, e: KVEntry, attempts: int = 2) -> WriteResult:
        """One entry, retried under the same session sequence number when the outcome
        is unknown (a lost answer, an election): the node applies it at most once."""
        self._seq += 1
        for attempt in range(attempts):
            try:
                if e.value is None:
                    return self.adapter.delete(e.key, client_id=self.client_id, seq=self._seq)
                return self.adapter.put(e.key, e.value, client_id=self.client_id, seq=self._seq)
            except NodeRequestError as err:
                if not err.indeterminate or attempt + 1 == attempts:
                    raise
            time.sleep(0.2)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- membership ------------------------------------------------------------------------

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
    ) -> MembershipChange:
        """Plan (``dry_run``) or apply a membership change.

        ``action``: add_learner, add_voter (learner, catch up, promote), promote, remove.
        A sandbox cluster applies a safe plan at once when ``dry_run`` is false and no
        ``plan_id`` is given; production needs the ``plan_id`` of a prior dry run.
        """
        progress = progress or _quiet
        action = action.replace("-", "_")
        if action not in ACTIONS:
            raise ConfigError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if not node_id:
            raise ConfigError("node_id must not be empty")
        args = {
            "action": action,
            "node": node_id,
            "peer_address": peer_address,
            "api_address": api_address,
        }

        def body() -> MembershipChange:
            view = self.read_view()
            local = None
            if self.adapter.can_control_processes:
                planned = getattr(self.adapter, "planned_addresses", None)
                local = planned(node_id) if planned else None
            plan = plan_change(
                view,
                cluster=self.name,
                action=action,
                node=node_id,
                peer_address=peer_address,
                api_address=api_address,
                local_addresses=local,
                ttl_s=self.config.plan_ttl_s,
            )
            early = self.gate_plan(plan, dry_run, plan_id)
            if early is not None:
                return early  # type: ignore[return-value]
            return apply_change(self, plan, progress, catch_up_timeout_s)

        return self.run_guarded("change_membership", args, body, plan_id=plan_id, dry_run=dry_run)

    # -- maintenance -----------------------------------------------------------------------

    def snapshot(
        self, node: str | None = None, *, dry_run: bool = False, plan_id: str | None = None
    ) -> SnapshotResult | Plan:
        args = {"node": node}

        def body() -> SnapshotResult | Plan:
            view = self.read_view()
            reasons = []
            if node is not None:
                targets = [node]
                if node not in view.members():
                    reasons.append(f"{node} is not a member of this cluster")
                elif not view.reachable(node):
                    reasons.append(f"{node} is unreachable")
            else:
                targets = [
                    m
                    for m in view.members()
                    if (view.is_voter(m) or view.is_learner(m)) and view.reachable(m)
                ]
                if not targets:
                    reasons.append("no member is reachable")
            steps = [
                PlanStep(action="snapshot", detail=f"snapshot {t} and compact its log")
                for t in targets
            ]
            plan = self.make_plan("snapshot", args, view, steps=steps, reasons=reasons)
            early = self.gate_plan(plan, dry_run, plan_id)
            if early is not None:
                return early
            snaps = []
            for t in targets:
                try:
                    idx, size = self.adapter.snapshot(t)
                    snaps.append(NodeSnapshot(node=t, ok=True, snapshot_index=idx, bytes=size))
                except ManagerError as e:
                    snaps.append(NodeSnapshot(node=t, ok=False, error=e.reason))
            return SnapshotResult(cluster=self.name, snapshots=snaps)

        return self.run_guarded("snapshot", args, body, plan_id=plan_id, dry_run=dry_run)

    def recover_node(
        self,
        node_id: str,
        *,
        dry_run: bool = False,
        plan_id: str | None = None,
        progress: ProgressFn | None = None,
        timeout_s: float = 60.0,
    ) -> RecoverResult | Plan:
        """Bring a crashed or lagging member back and wait until it has caught up."""
        args = {"node": node_id}

        def body() -> RecoverResult | Plan:
            view = self.read_view()
            rp = plan_recovery(self, view, node_id)
            plan = self.make_plan("recover_node", args, view, steps=rp.steps, reasons=rp.reasons)
            early = self.gate_plan(plan, dry_run, plan_id)
            if early is not None:
                return early
            return run_recovery(self, view, node_id, rp, progress or _quiet, timeout_s)

        return self.run_guarded("recover_node", args, body, plan_id=plan_id, dry_run=dry_run)

    def inject_fault(
        self,
        kind: str,
        nodes: list[str] | None = None,
        *,
        dry_run: bool = False,
        plan_id: str | None = None,
    ) -> FaultResult | Plan:
        """partition (cut ``nodes`` off from the rest), heal, kill, restart: sandbox only."""
        nodes = list(nodes or [])
        args = {"kind": kind, "nodes": nodes}

        def body() -> FaultResult | Plan:
            if kind not in FAULT_KINDS:
                raise ConfigError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
            view = self.read_view()
            steps, reasons, risks = plan_fault(self, view, kind, nodes)
            plan = self.make_plan(
                "inject_fault", args, view, steps=steps, reasons=reasons, risks=risks
            )
            early = self.gate_plan(plan, dry_run, plan_id)
            if early is not None:
                return early
            return run_fault(self, view, kind, nodes)

        return self.run_guarded("inject_fault", args, body, plan_id=plan_id, dry_run=dry_run)


# -- helpers ---------------------------------------------------------------------------


def _norm(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}


def _args_text(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in _norm(args).items()) or "no arguments"


def _summary(result: Any) -> Any:
    if hasattr(result, "model_dump"):
        doc = result.model_dump(mode="json", exclude_none=True)
        for big in ("members", "checks", "steps"):
            doc.pop(big, None)
        return doc
    return result
