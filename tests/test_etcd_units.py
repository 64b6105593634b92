"""The etcd pieces that need no etcd: gateway decoding and error mapping, config secrets,
plan order, the no-campaign refusal, remote recovery steps, and an election the
cluster wins by itself between plan and run."""

from __future__ import annotations

import pytest

from mcp_server.adapters.etcd import EtcdAdapter
from mcp_server.clients.etcd_gateway import b64, base_url, gateway_error, hex_id, num, unb64
from mcp_server.core.config import ClusterConfig, load_config
from mcp_server.core.context import OperationContext
from mcp_server.core.errors import InputError
from mcp_server.core.models import ElectRequest
from mcp_server.core.port import MemberStatus
from mcp_server.core.view import ClusterView
from mcp_server.operations import leadership
from mcp_server.operations.membership import plan_change


def test_gateway_values():
    assert unb64(b64("ключ/1")) == "ключ/1" and unb64(None) is None
    assert num({"raftIndex": "18446744073709551615"}, "raftIndex") == 2**64 - 1
    assert num({}, "raftAppliedIndex") == 0  # default values are omitted
    assert num({"memberId": "7"}, "member_id", "memberId") == 7
    assert hex_id(255) == "ff"
    assert base_url("10.0.0.1:2379", "https") == "https://10.0.0.1:2379"
    assert base_url("http://h:1/", "https") == "http://h:1"


def test_gateway_errors_say_what_to_do():
    e = gateway_error(
        "n1", "cluster/member/promote", 412, 9,
        "etcdserver: can only promote a learner member which is in sync with leader", "n1",
    )  # fmt: skip
    assert e.reason == "n1: can only promote a learner member which is in sync with leader"
    assert "caught up" in e.next_step and e.status == 412 and e.error == "9"
    assert not e.indeterminate
    assert gateway_error(
        "n1", "kv/put", 503, 14, "etcdserver: request timed out", None
    ).indeterminate
    assert not gateway_error("n1", "kv/put", 503, 14, "etcdserver: no leader", None).indeterminate
    hk = gateway_error("n1", "maintenance/hashkv", 404, None, "Not Found", None)
    assert "does not serve /v3/maintenance/hashkv" in hk.reason


def test_config_secrets_are_never_inline(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("clusters: {e: {kind: etcd, endpoints: [h:1], username: u, password: x}}")
    with pytest.raises(InputError) as e:
        load_config(bad)
    assert "inline secret" in e.value.reason and "x" not in e.value.reason.split("(")[-1]
    ok = tmp_path / "ok.yaml"
    ok.write_text("clusters: {e: {kind: etcd, endpoints: [h:1], username: u, password_env: PW}}")
    c = load_config(ok).cluster("e")
    assert c.mode == "production" and c.username == "u"
    from mcp_server.manager import make_adapter

    monkeypatch.delenv("PW", raising=False)
    with pytest.raises(InputError, match="PW"):
        make_adapter(c)
    monkeypatch.setenv("PW", "s3cret")
    adapter, secret = make_adapter(c)
    assert isinstance(adapter, EtcdAdapter) and secret == "s3cret"  # redacted from the audit
    adapter.close()


def _statuses(leader: str | None = "n1") -> dict[str, MemberStatus]:
    voters = ["n1", "n2", "n3"]
    return {
        n: MemberStatus(
            id=n,
            reachable=True,
            role="leader" if n == leader else "follower",
            term=2,
            leader=leader,
            commit_index=10,
            applied_index=10,
            last_index=10,
            voters=voters,
        )
        for n in voters
    }


def _view(leader: str | None = "n1") -> ClusterView:
    return ClusterView.build(_statuses(leader))


def test_etcd_member_is_added_before_its_process_starts():
    local = ("http://127.0.0.1:7404", "http://127.0.0.1:7504")
    etcd = plan_change(
        _view(), cluster="e", action="add_voter", node_id="n4",
        local_addresses=local, start_after_add=True,
    )  # fmt: skip
    assert [s.action for s in etcd.steps] == [
        "add_learner",
        "start_process",
        "wait_caught_up",
        "promote",
    ]
    raft = plan_change(
        _view(), cluster="r", action="add_learner", node_id="n4", local_addresses=local
    )
    assert [s.action for s in raft.steps][:2] == ["start_process", "add_learner"]


class _Leaderless:
    """Just enough adapter for planning an election in a leaderless cluster."""

    def __init__(self, kind: str, supports_campaign: bool) -> None:
        self.kind, self.supports_campaign = kind, supports_campaign

    def statuses(self) -> dict[str, MemberStatus]:
        return _statuses(leader=None)


def _election_plan(kind: str, supports_campaign: bool):
    cluster = ClusterConfig(name="e", kind=kind, endpoints=["h:1"])
    ctx = OperationContext(cluster, _Leaderless(kind, supports_campaign))  # type: ignore[arg-type]
    return leadership.plan(ctx, ElectRequest(target=None))


def test_a_leaderless_etcd_cluster_cannot_be_told_to_elect():
    p = _election_plan("etcd", supports_campaign=False)
    assert any(r.startswith("etcd cannot be forced to elect") for r in p.reasons)
    assert _election_plan("raft_core", supports_campaign=True).reasons == []  # it campaigns


def test_remote_recovery_is_manual_steps():
    a = EtcdAdapter(endpoints=["127.0.0.1:1"])
    steps = a.restart_instructions("n2", "https://10.0.0.2:2379")
    assert any("restart etcd for n2" in s for s in steps)
    assert any("--initial-cluster-state existing" in s for s in steps)
    assert not a.can_control_processes
    a.close()


def test_a_member_is_removed_through_another_member():
    """Asked of the member it removes, etcd stops before answering ("server stopped"):
    the removal goes to another member, even when the removed one was the leader."""
    a = EtcdAdapter(endpoints=["127.0.0.1:2379", "127.0.0.1:2380"])
    n1 = {"ID": "1", "name": "n1", "clientURLs": ["http://127.0.0.1:2379"]}
    n2 = {"ID": "2", "name": "n2", "clientURLs": ["http://127.0.0.1:2380"]}
    a._members = {"n1": n1, "n2": n2}
    a._leader_url = "http://127.0.0.1:2380"  # n2 led until a moment ago
    asked: list[str] = []

    def call(url, path, body=None, **kw):
        asked.append(base_url(url, "http"))
        return {"header": {"revision": "7"}, "members": [n1]}

    a.gw.call = call  # type: ignore[method-assign]
    result = a.remove("n2")
    assert asked == ["http://127.0.0.1:2379"]
    assert result.voters == ["n1"]
    a.close()


def test_a_failed_membership_step_keeps_the_node_error_it_wraps():
    from mcp_server.core.errors import NodeRequestError
    from mcp_server.core.models import PlanStep, StepResult
    from mcp_server.operations.membership import _step_failed

    plan = type("P", (), {"action": "remove", "node_id": "n2"})()
    err = NodeRequestError("n1: timed out", "retry later", status=503, indeterminate=True)
    done = [StepResult(action="transfer_leadership", ok=True, detail="moved", seconds=0.1)]
    wrapped = _step_failed(plan, 1, PlanStep(action="remove", detail="remove n2"), err, done)
    assert isinstance(wrapped, NodeRequestError)
    assert (wrapped.status, wrapped.indeterminate) == (503, True)
    assert wrapped.operation == "change_membership"
    assert wrapped.reason == "remove n2: step 2 (remove) failed: n1: timed out"
    assert "steps completed: transfer_leadership" in wrapped.next_step
    assert "retry later" in wrapped.next_step


class _ElectsItself(_Leaderless):
    """Leaderless when the plan is made; n2 leads by the time it runs (its followers
    campaigned on their own). A campaign would be an error here."""

    def __init__(self) -> None:
        super().__init__("raft_core", True)
        self.calls = 0

    def statuses(self) -> dict[str, MemberStatus]:
        self.calls += 1
        return _statuses(leader=None if self.calls == 1 else "n2")

    def campaign(self, node: str) -> None:
        raise AssertionError(f"campaigned {node} in a cluster that has a leader")


def test_an_election_the_cluster_won_by_itself_is_reported_not_disturbed():
    cluster = ClusterConfig(name="e", kind="raft_core", endpoints=["h:1"])
    ctx = OperationContext(cluster, _ElectsItself())  # type: ignore[arg-type]
    plan = leadership.plan(ctx, ElectRequest(target=None))
    assert plan.steps[0].action == "campaign"
    result = leadership.run(ctx, plan, lambda *a: None)
    assert (result.method, result.leader, result.previous_leader) == ("none", "n2", None)
    assert "elected before the campaign" in result.detail
