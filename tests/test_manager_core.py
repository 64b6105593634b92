"""The manager core without processes: a fake adapter behind the real Manager, guard,
plans and operations. Fast checks of the outcome shape, the dry-run rule as the
Manager applies it, capability flags, and the quorum questions asked of raft_core."""

from __future__ import annotations

import pytest
from test_manager_units import healthy, member

from mcp_server.core import (
    ClusterConfig,
    Config,
    InputError,
    Refused,
    ReplicateOutcome,
    SnapshotOutcome,
)
from mcp_server.core.audit import AuditLog
from mcp_server.core.plans import PlanStore
from mcp_server.core.port import (
    ClusterAdapter,
    ConfResult,
    MemberStatus,
    ReadOutcome,
    StateDigest,
    WriteResult,
)
from mcp_server.core.view import is_quorum, quorum_of
from mcp_server.manager import Manager


class FakeAdapter(ClusterAdapter):
    """A cluster that answers from a dict of statuses and records what it was asked."""

    kind = "fake"

    def __init__(self, statuses: dict[str, MemberStatus], **flags: bool) -> None:
        self._statuses = statuses
        self.calls: list[tuple] = []
        for k, v in flags.items():
            setattr(self, k, v)

    def statuses(self) -> dict[str, MemberStatus]:
        return self._statuses

    def status(self, node: str) -> MemberStatus:
        return self._statuses[node]

    def state_digest(self, node: str, at: int | None = None) -> StateDigest:
        return StateDigest(at or 10, 2, "chain")

    def put(self, key: str, value: str, *, client_id: str, seq: int) -> WriteResult:
        self.calls.append(("put", key, value, seq))
        return WriteResult(11, 2, "n1")

    def delete(self, key: str, *, client_id: str, seq: int) -> WriteResult:
        self.calls.append(("delete", key, seq))
        return WriteResult(12, 2, "n1", True)

    def get(self, key: str, consistency: str, node: str | None = None) -> ReadOutcome:
        return ReadOutcome("v", 10, "n1")

    def transfer_leadership(self, target: str) -> tuple[str, int]:
        raise AssertionError("not expected")

    def add_learner(self, node: str, peer_address: str, api_address: str | None) -> ConfResult:
        raise AssertionError("not expected")

    def promote(self, node: str) -> ConfResult:
        raise AssertionError("not expected")

    def remove(self, node: str) -> ConfResult:
        raise AssertionError("not expected")

    def snapshot(self, node: str) -> tuple[int, int]:
        self.calls.append(("snapshot", node))
        return 10, 100


def manager(tmp_path, statuses=None, *, mode="sandbox", **flags) -> tuple[Manager, FakeAdapter]:
    adapter = FakeAdapter(statuses or healthy(), **flags)
    c = ClusterConfig(name="f", endpoints=["127.0.0.1:1"], mode=mode)
    cfg = Config(clusters={"f": c}, default="f")
    audit = AuditLog(tmp_path / "audit.jsonl")
    return Manager(c, config=cfg, adapter=adapter, audit=audit, plans=PlanStore(tmp_path)), adapter


def test_a_dry_run_is_planned_and_an_apply_carries_the_plan_and_the_result(tmp_path):
    mgr, adapter = manager(tmp_path)
    planned = mgr.snapshot("n2", dry_run=True)
    assert isinstance(planned, SnapshotOutcome)
    assert planned.outcome == "planned" and planned.result is None and not adapter.calls
    assert planned.answer() is planned.plan and planned.plan.steps[0].node == "n2"

    applied = mgr.snapshot("n2", plan_id=planned.plan.plan_id)
    assert applied.outcome == "applied" and applied.plan.plan_id == planned.plan.plan_id
    assert applied.answer() is applied.result and applied.result.snapshots[0].ok
    assert adapter.calls == [("snapshot", "n2")]
    outcomes = [x["outcome"] for x in mgr.audit.read()]
    assert outcomes == ["planned", "ok"]
    schema = SnapshotOutcome.model_json_schema()
    assert schema["properties"]["outcome"]["enum"] == ["planned", "applied"]


def test_replicate_writes_each_entry_once_under_one_session(tmp_path):
    mgr, adapter = manager(tmp_path)
    out = mgr.replicate({"a": "1", "b": None}, progress=lambda *a: None)
    assert isinstance(out, ReplicateOutcome) and out.outcome == "applied"
    assert [e.key for e in out.result.entries] == ["a", "b"]
    assert adapter.calls == [("put", "a", "1", 1), ("delete", "b", 2)]


def test_the_dry_run_rule_as_the_manager_applies_it(tmp_path):
    prod, _ = manager(tmp_path, mode="production")
    with pytest.raises(Refused, match="needs a plan id"):
        prod.snapshot("n2")
    plan = prod.snapshot("n2", dry_run=True).plan
    assert prod.snapshot("n2", plan_id=plan.plan_id).outcome == "applied"
    with pytest.raises(Refused, match="unknown plan id"):  # used once
        prod.snapshot("n2", plan_id=plan.plan_id)
    with pytest.raises(Refused, match="sandbox clusters only"):
        prod.guarded("bench", {}, lambda: None)
    assert [x["outcome"] for x in prod.audit.read()] == [
        "refused",
        "planned",
        "ok",
        "refused",
        "refused",
    ]


def test_bad_input_is_a_config_error_naming_the_field(tmp_path):
    mgr, _ = manager(tmp_path)
    with pytest.raises(InputError, match="kind"):
        mgr.inject_fault("meteor", ["n1"])
    with pytest.raises(InputError, match="action"):
        mgr.change_membership("explode", "n4")
    with pytest.raises(InputError, match="entries"):
        mgr.replicate([])


def test_capability_flags_shape_the_plans(tmp_path):
    leaderless = {n: member(n, leader=None, progress=None) for n in ("n1", "n2", "n3")}
    mgr, _ = manager(tmp_path, leaderless, supports_campaign=False)
    plan = mgr.elect_leader(dry_run=True).plan
    assert not plan.safe and any("cannot be forced to elect a leader" in r for r in plan.reasons)
    mgr, _ = manager(tmp_path, supports_faults=False)
    plan = mgr.inject_fault("partition", ["n2"], dry_run=True).plan
    assert any("no fault API" in r for r in plan.reasons)
    assert any(
        "needs a local cluster" in r
        for r in mgr.inject_fault("kill", ["n2"], dry_run=True).plan.reasons
    )


@pytest.mark.parametrize(
    ("voters", "quorum"), [([], 1), (["a"], 1), (["a", "b"], 2), (["a", "b", "c"], 2),
                           (["a", "b", "c", "d"], 3), (["a", "b", "c", "d", "e"], 3)]
)  # fmt: skip
def test_quorum_sizes_come_from_raft_core(voters, quorum):
    assert quorum_of(voters) == quorum


def test_joint_quorum_needs_both_halves():
    assert is_quorum(["a", "b", "c"], ["a", "b"])
    assert not is_quorum(["a", "b", "c"], ["a"])
    assert not is_quorum([], ["a"])
    assert not is_quorum(["a", "b", "c"], ["a", "b"], outgoing=["c", "d", "e"])
    assert is_quorum(["a", "b", "c"], ["a", "b", "d", "e"], outgoing=["c", "d", "e"])
