"""The manager's answers as pydantic models.

These are at once the CLI's ``--json`` output and the MCP tools' structured output, so
field names are a contract (docs/design.md lists the ones that must never change; the
README documents all of them). Add fields freely; rename or remove only with a reason.

Inputs are models too (``*OperationRequest``): each operation takes one request shape, whichever
face builds it. A mutation answers an ``*Outcome``: ``outcome`` says whether the plan was
only made (``planned``: ``plan`` set, ``result`` null) or carried out (``applied``: both
set), so a caller never has to guess which of two models it got.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["leader", "follower", "candidate", "pre_candidate", "learner", "unknown"]
Mode = Literal["sandbox", "production"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- status ------------------------------------------------------------------------------


class Member(_Model):
    id: str
    role: Role = Field(description="the member's own view; 'unknown' when unreachable")
    reachable: bool = Field(description="its API answered the manager")
    voter: bool = Field(description="a voter in the current configuration")
    learner: bool = Field(description="a learner in the current configuration")
    term: int | None = None
    leader: str | None = Field(None, description="whom this member believes leads")
    commit_index: int | None = None
    applied_index: int | None = None
    last_index: int | None = None
    snapshot_index: int | None = None
    match_index: int | None = Field(None, description="leader's view of its replicated log")
    lag: int | None = Field(None, description="entries behind the leader's last index")
    replication: str | None = Field(None, description="leader's view: probe|replicate|snapshot")
    caught_up: bool | None = Field(None, description="close enough to the leader to promote/lead")
    api_address: str | None = None
    process: Literal["running", "stopped"] | None = Field(
        None, description="local clusters only: is the raft-node process alive"
    )
    pid: int | None = None
    error: str | None = Field(None, description="why it is unreachable")
    name: str | None = Field(None, description="etcd: the member's name")
    member_id: str | None = Field(None, description="etcd: the member's ID (hex)")
    peer_urls: list[str] | None = Field(None, description="etcd: the member's peer URLs")
    db_size: int | None = Field(None, description="etcd: backend database size, bytes")
    revision: int | None = Field(None, description="etcd: the member's key-space revision")
    version: str | None = Field(None, description="etcd, nats: the server version")
    alarms: list[str] | None = Field(None, description="etcd: active alarms (NOSPACE, CORRUPT)")


class RaftGroup(_Model):
    """One Raft group's summary: a NATS cluster has many (meta, each stream, each
    consumer); raft_core and etcd have one, named ``cluster``."""

    name: str = Field(description="meta | stream:NAME | consumer:STREAM/NAME; cluster")
    leader: str | None
    members: list[str]
    quorum: int
    available: int = Field(description="members reachable and following the leader")
    lagging: list[str] = Field(default_factory=list, description="members not caught up")
    index: int | None = Field(None, description="the leader's last index (stream: last seq)")
    warnings: list[str] = Field(default_factory=list)


class ClusterStatus(_Model):
    cluster: str
    kind: str
    mode: Mode
    leader: str | None
    term: int | None
    commit_index: int | None = None
    voters: list[str]
    learners: list[str]
    voters_outgoing: list[str] = Field(
        default_factory=list, description="old voters while a joint configuration is in force"
    )
    joint: bool = False
    change_in_flight: bool = Field(False, description="a configuration change is not applied yet")
    quorum: int = Field(description="voters needed to elect and commit")
    reachable_voters: int
    members: list[Member]
    warnings: list[str]
    notices: list[str] = Field(
        default_factory=list,
        description="what the manager itself did, e.g. started the embedded local cluster",
    )
    checked_at: str
    group: str | None = Field(None, description="the group this status shows (None: the main)")
    groups: list[RaftGroup] = Field(default_factory=list, description="one page of the groups")
    groups_total: int = Field(0, description="how many groups the cluster has")
    next_group_offset: int | None = Field(
        None, description="pass as group_offset for the next page; null on the last page"
    )


# -- health ------------------------------------------------------------------------------


class Check(_Model):
    name: str
    ok: bool
    detail: str


class HealthReport(_Model):
    cluster: str
    operation: str | None = Field(None, description="the operation asked about, if any")
    healthy: bool = Field(description="every pre-operation check passed")
    safe: bool = Field(description="the named operation (or any, when none named) is safe now")
    checks: list[Check]
    reasons: list[str] = Field(description="why it is not healthy or not safe")
    warnings: list[str]
    leader: str | None
    term: int | None


# -- leadership --------------------------------------------------------------------------


ElectionMethod = Literal["transfer", "campaign", "step_down", "none"]


class ElectionResult(_Model):
    cluster: str
    method: ElectionMethod
    target: str | None
    previous_leader: str | None
    previous_term: int | None
    leader: str | None
    term: int | None
    seconds: float
    detail: str


# -- data ---------------------------------------------------------------------------------


class KVEntry(_Model):
    key: str = Field(min_length=1)
    value: str | None = Field(description="null deletes the key")


class WrittenEntry(_Model):
    key: str
    index: int
    term: int
    deleted: bool | None = None


class ReplicateResult(_Model):
    cluster: str
    leader: str | None
    entries: list[WrittenEntry]
    seconds: float


class ReadResult(_Model):
    cluster: str
    key: str
    value: str | None
    consistency: Literal["linearizable", "stale"]
    applied_index: int | None
    served_by: str | None


# -- plans and membership -------------------------------------------------------------------


class PlanStep(_Model):
    action: str = Field(description="machine name, e.g. add_learner, wait_caught_up, promote")
    detail: str
    node: str | None = Field(None, description="the member the step acts on, if one")


class StepResult(_Model):
    action: str
    ok: bool
    detail: str
    seconds: float


class Plan(_Model):
    """A mutation planned against the cluster state it was made in."""

    plan_id: str = Field(description="apply with --plan-id / plan_id; bound to term+config")
    cluster: str
    operation: str
    arguments: dict[str, Any]
    safe: bool
    steps: list[PlanStep]
    reasons: list[str] = Field(description="why it is unsafe (empty when safe)")
    risks: list[str] = Field(default_factory=list, description="safe, but worth knowing")
    leader: str | None
    term: int | None
    voters: list[str]
    learners: list[str]
    created_at: str
    expires_at: str
    applied: bool = False
    requires_approval: bool = Field(
        False,
        description="destructive plan on a require_approval cluster: a human must run "
        "`raft-manager approve PLAN_ID` at a terminal before the plan_id is applied",
    )


class MembershipChange(Plan):
    """A membership plan; after an apply, also what was done and the new configuration."""

    action: str
    node_id: str
    peer_address: str | None = None
    api_address: str | None = None
    quorum_before: int
    quorum_after: int
    voters_after: list[str]
    learners_after: list[str]
    dry_run: bool = True
    results: list[StepResult] = Field(default_factory=list)
    seconds: float | None = None


# -- verification ---------------------------------------------------------------------------


class Divergence(_Model):
    member: str
    index: int
    kind: Literal["applied_state", "state_hash", "log_entry", "missing_entry"]
    expected: str | None = None
    found: str | None = None
    detail: str


class VerifyReport(_Model):
    cluster: str
    consistent: bool | None = Field(description="true, false, or null when it could not verify")
    common_index: int | None = Field(
        description="applied index at which state hashes were compared"
    )
    chain: str | None = Field(None, description="the agreed applied-state chain at common_index")
    checked: list[str] = Field(description="members compared")
    unchecked: list[str] = Field(description="members that could not be compared")
    log_range: list[int] | None = Field(
        None, description="[first, last] committed indexes compared"
    )
    log_indexes_checked: int = 0
    divergences: list[Divergence]
    reasons: list[str] = Field(description="why it could not verify, or notes on coverage")
    seconds: float


# -- snapshots, recovery, faults --------------------------------------------------------------


class NodeSnapshot(_Model):
    node: str
    ok: bool
    snapshot_index: int | None = None
    bytes: int | None = None
    error: str | None = None


class SnapshotResult(_Model):
    cluster: str
    snapshots: list[NodeSnapshot]


class RecoverResult(_Model):
    cluster: str
    node_id: str
    action: Literal["restarted", "waited", "manual"]
    caught_up: bool
    applied_index: int | None
    target_index: int | None
    seconds: float
    instructions: list[str] = Field(default_factory=list, description="what the operator must do")


FaultKind = Literal["partition", "heal", "kill", "restart", "stop", "continue"]
"""stop freezes a member's process (SIGSTOP, its connections stay open); continue
resumes it (SIGCONT)."""


class FaultResult(_Model):
    cluster: str
    kind: FaultKind
    nodes: list[str]
    affected: list[str]
    faults: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per node, after")
    detail: str


# -- clusters and the local launcher ----------------------------------------------------------


class ClusterInfo(_Model):
    name: str
    kind: str
    mode: Mode
    read_only: bool
    allowed_operations: list[str] | None
    require_approval: bool = Field(
        False, description="destructive plans need a human's `raft-manager approve`"
    )
    location: str = Field(description="cluster directory or endpoints")
    default: bool


class ClusterList(_Model):
    config: str | None = Field(description="clusters.yaml used, or null for the embedded default")
    state_dir: str | None = Field(
        None, description="where plans, approvals and the embedded cluster live (the server's)"
    )
    clusters: list[ClusterInfo]


class LocalNodeInfo(_Model):
    id: str
    peer_address: str
    api_address: str
    data_dir: str
    pid: int | None
    running: bool
    role: str | None = None
    term: int | None = None
    log: str


class LocalClusterState(_Model):
    dir: str
    action: Literal["up", "down", "kill", "start", "status"]
    nodes: list[LocalNodeInfo]
    leader: str | None
    seconds: float
    detail: str
    peer_auth: Literal["tls", "secret", "none"] | None = None  # raft-node clusters
    api_scheme: str | None = None
    ca_file: str | None = None


# -- errors, bench, demo ----------------------------------------------------------------------


class ErrorReport(_Model):
    error: Literal["refused", "failed", "config", "unreachable", "not_supported", "usage"]
    operation: str | None
    cluster: str | None
    reason: str
    reasons: list[str]
    next_step: str | None


class BenchResult(_Model):
    cluster: str
    leader: str | None
    clients: int
    duration_s: float
    value_size: int
    requests: int
    errors: int
    throughput: float = Field(description="committed writes per second")
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


class DemoStep(_Model):
    n: int
    title: str
    ok: bool
    result: str
    seconds: float


class DemoReport(_Model):
    ok: bool
    dir: str
    steps: list[DemoStep]
    seconds: float


# -- requests: one input shape per operation ---------------------------------------------------


class OperationRequest(_Model):
    def arguments(self) -> dict[str, Any]:
        """The arguments as plans and the audit log record them (``group`` only when
        one is named, so single-group clusters' records stay as they were)."""
        args = self.model_dump(mode="json")
        if args.get("group", "") is None:
            del args["group"]
        return args


class GroupRequest(OperationRequest):
    group: str | None = Field(
        None, description="the Raft group to act on (NATS: meta, stream:NAME, consumer:S/N)"
    )


class StatusRequest(GroupRequest):
    group_offset: int = Field(0, ge=0, description="first group of the page")
    group_limit: int = Field(10, ge=1, le=100, description="groups per page")


class ReadRequest(OperationRequest):
    key: str = Field(min_length=1)
    consistency: Literal["linearizable", "stale"] = "linearizable"


class HealthRequest(GroupRequest):
    operation: str | None = Field(None, description="also say whether this operation is safe")


class ElectRequest(GroupRequest):
    target: str | None = Field(None, description="voter to move leadership to; none: elect one")


class ReplicateRequest(OperationRequest):
    entries: list[KVEntry] = Field(min_length=1)


MembershipAction = Literal["add_learner", "add_voter", "promote", "remove"]


class MembershipRequest(OperationRequest):
    action: MembershipAction
    node_id: str = Field(min_length=1)
    peer_address: str | None = None
    api_address: str | None = None


class SnapshotRequest(GroupRequest):
    node: str | None = Field(None, description="one member; none: every reachable member")


class RecoverRequest(GroupRequest):
    node_id: str = Field(min_length=1)


class InjectFaultRequest(OperationRequest):
    kind: FaultKind
    nodes: list[str] = Field(default_factory=list)


# -- outcomes: a plan, and the result once applied --------------------------------------------


class Outcome(_Model):
    """What a mutation did: ``planned`` (a dry run; apply with its plan_id) or ``applied``."""

    outcome: Literal["planned", "applied"]
    plan: Plan = Field(description="the plan, checked against the cluster state it was made in")
    result: Any = None

    @model_validator(mode="after")
    def _result_iff_applied(self) -> Outcome:
        if (self.result is None) != (self.outcome == "planned"):
            raise ValueError("result is set exactly when the outcome is 'applied'")
        return self

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"

    def answer(self) -> BaseModel:
        """The document a face shows: the plan until applied, then the result."""
        return self.result if self.result is not None else self.plan

    def document(self) -> BaseModel:
        """The MCP tool's answer: one object model whichever the outcome, because up to
        protocol 2025-11-25 an output schema must be a root object (docs/design.md, 6)."""
        return self.answer()


class ElectionAnswer(_Model):
    """elect_leader's answer, planned or applied, as one object: the plan's fields while
    planned, the election's once applied; the contract fields sit at the top level both
    ways."""

    outcome: Literal["planned", "applied"]
    cluster: str
    plan_id: str = Field(description="the plan made (planned) or carried out (applied)")
    safe: bool
    steps: list[PlanStep]
    reasons: list[str] = Field(description="why it is unsafe (empty when safe)")
    leader: str | None = Field(description="planned: who leads now; applied: the new leader")
    term: int | None
    applied: bool = False
    target: str | None = Field(None, description="the voter asked to lead; none: any")
    # planned
    risks: list[str] | None = None
    voters: list[str] | None = None
    learners: list[str] | None = None
    created_at: str | None = None
    expires_at: str | None = None
    requires_approval: bool | None = Field(
        None, description="a human must `raft-manager approve PLAN_ID` before it is applied"
    )
    # applied
    method: ElectionMethod | None = None
    target: str | None = None
    previous_leader: str | None = None
    previous_term: int | None = None
    seconds: float | None = None
    detail: str | None = None


class ElectionOutcome(Outcome):
    result: ElectionResult | None = None

    def document(self) -> ElectionAnswer:
        if self.result is None:
            plan = self.plan.model_dump(exclude={"operation", "arguments"})
            target = self.plan.arguments.get("target")
            return ElectionAnswer(outcome="planned", target=target, **plan)
        plan = self.plan.model_dump(include={"plan_id", "safe", "steps", "reasons"})
        return ElectionAnswer(outcome="applied", applied=True, **plan, **self.result.model_dump())


class ReplicateOutcome(Outcome):
    result: ReplicateResult | None = None


class MembershipOutcome(Outcome):
    plan: MembershipChange
    result: MembershipChange | None = Field(
        None, description="the plan as applied: per-step results and the new configuration"
    )


class SnapshotOutcome(Outcome):
    result: SnapshotResult | None = None


class RecoverOutcome(Outcome):
    result: RecoverResult | None = None


class FaultOutcome(Outcome):
    result: FaultResult | None = None


class LocalStart(_Model):
    """Opening the manager started the embedded local cluster (never done by a read)."""

    dir: str
    detail: str
