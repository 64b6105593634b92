"""Unit tests of the manager's pure parts: config, policy, audit, plans, views, planning.

Real-cluster behaviour is in test_manager_ops.py / test_manager_refusals.py; these pin
the rules themselves on synthetic member statuses.
"""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from mcp_server.adapters.processes import LocalProcesses
from mcp_server.clients.http import exchange
from mcp_server.core import policy
from mcp_server.core.audit import REDACTED, AuditLog, redact
from mcp_server.core.config import load_config, resolve_token, state_dir
from mcp_server.core.errors import InputError, NodeRequestError, Refused, Unreachable
from mcp_server.core.models import Plan
from mcp_server.core.plans import PlanStore, dry_run_rule, plan_id, timestamps
from mcp_server.core.port import MemberStatus
from mcp_server.core.view import ClusterView
from mcp_server.local.cluster import LocalCluster, LocalNode, LocalSettings
from mcp_server.operations.health import report
from mcp_server.operations.membership import plan_change
from raft_core.status import ProgressStatus

# -- synthetic clusters ----------------------------------------------------------------


def member(
    id: str,
    role: str = "follower",
    *,
    term: int = 2,
    leader: str | None = "n1",
    last: int = 10,
    reachable: bool = True,
    voters=("n1", "n2", "n3"),
    learners=(),
    joint: bool = False,
    pending: int = 0,
    progress: dict | None = None,
) -> MemberStatus:
    return MemberStatus(
        id=id,
        reachable=reachable,
        role=role if reachable else "unknown",
        term=term if reachable else None,
        leader=leader if reachable else None,
        commit_index=last,
        applied_index=last,
        last_index=last,
        last_term=term,
        first_index=1,
        voters=list(voters),
        learners=list(learners),
        joint=joint,
        voters_outgoing=["n1", "n2", "n3"] if joint else [],
        pending_conf_index=pending,
        progress=progress,
    )


def progress_of(match: int, next_: int, state: str) -> ProgressStatus:
    """A leader's view of one member's replication, as the engine reports it."""
    return ProgressStatus(
        match=match,
        next=next_,
        state=state,
        learner=False,
        recent_active=True,
        ticks_since_heard=0,
        inflight=0,
        snapshot_bytes_acked=None,
    )


def healthy(n: int = 3, **kw) -> dict[str, MemberStatus]:
    ids = [f"n{i}" for i in range(1, n + 1)]
    prog = {i: progress_of(10, 11, "replicate") for i in ids}
    out = {"n1": member("n1", "leader", progress=prog, voters=ids, **kw)}
    for i in ids[1:]:
        out[i] = member(i, voters=ids)
    return out


# -- config ----------------------------------------------------------------------------


def test_embedded_default_lives_in_the_xdg_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("RAFT_MANAGER_CONFIG", raising=False)
    cfg = load_config(None)
    c = cfg.cluster(None)
    assert c.name == "local" and c.auto_start and c.mode == "sandbox"
    assert c.dir == str(tmp_path / "agent-raft-manager" / "local")
    assert state_dir() == tmp_path / "agent-raft-manager"


def test_config_refuses_inline_secrets_without_echoing_them(tmp_path):
    p = tmp_path / "clusters.yaml"
    p.write_text(json.dumps({"clusters": {"x": {"dir": "/tmp/x", "token": "hunter2-secret"}}}))
    with pytest.raises(InputError) as e:
        load_config(p)
    assert "inline secret" in e.value.reason and "token_env" in e.value.next_step
    assert "hunter2" not in str(e.value)


def test_config_modes_default_and_validation(tmp_path):
    p = tmp_path / "clusters.yaml"
    p.write_text(
        json.dumps(
            {
                "default": "local",
                "clusters": {
                    "local": {"dir": str(tmp_path / "c")},
                    "remote": {"endpoints": ["10.0.0.1:7201"], "token_env": "X_TOKEN"},
                    "ro": {"dir": "/tmp/y", "allowed_operations": ["status", "get", "verify"]},
                },
            }
        )
    )
    cfg = load_config(p)
    assert cfg.cluster(None).name == "local" and cfg.cluster("local").mode == "sandbox"
    assert cfg.cluster("remote").mode == "production"  # remote clusters default to production
    assert cfg.cluster("ro").allowed_operations == ["cluster_status", "read", "verify_consistency"]
    with pytest.raises(InputError, match="no cluster named"):
        cfg.cluster("nope")
    p.write_text(json.dumps({"clusters": {"x": {"dir": "/tmp/x", "allowed_operations": ["rm"]}}}))
    with pytest.raises(InputError, match="unknown operation"):
        load_config(p)
    p.write_text(json.dumps({"clusters": {"x": {"kind": "raft_core"}}}))
    with pytest.raises(InputError, match="needs `dir`"):
        load_config(p)


def test_tokens_come_from_env_or_file(tmp_path, monkeypatch):
    p = tmp_path / "clusters.yaml"
    tok = tmp_path / "tok"
    tok.write_text("file-token\n")
    p.write_text(
        json.dumps(
            {
                "clusters": {
                    "a": {"dir": "/tmp/a", "token_env": "T_ENV"},
                    "b": {"dir": "/tmp/b", "token_file": str(tok)},
                }
            }
        )
    )
    cfg = load_config(p)
    monkeypatch.delenv("T_ENV", raising=False)
    with pytest.raises(InputError, match="T_ENV"):
        resolve_token(cfg.cluster("a"))
    monkeypatch.setenv("T_ENV", "env-token")
    assert resolve_token(cfg.cluster("a")) == "env-token"
    assert resolve_token(cfg.cluster("b")) == "file-token"


# -- policy ----------------------------------------------------------------------------


def _check(**kw):
    base = {
        "cluster": "c",
        "mode": "sandbox",
        "read_only": False,
        "allowed_operations": None,
        "operation": "replicate",
    }
    policy.check(**{**base, **kw})


def test_policy_rules():
    _check()
    _check(mode="production")  # the dry-run rule, not policy, asks for a plan id
    _check(read_only=True, operation="cluster_status")
    _check(read_only=True, dry_run=True, operation="change_membership")
    with pytest.raises(Refused, match="fault injection is refused"):
        _check(mode="production", operation="inject_fault")
    with pytest.raises(Refused, match="sandbox clusters only"):
        _check(mode="production", operation="bench")
    with pytest.raises(Refused, match="read-only"):
        _check(read_only=True)
    with pytest.raises(Refused, match="not in the allowed_operations"):
        _check(allowed_operations=["cluster_status"], operation="read")
    with pytest.raises(Refused, match="sandbox clusters only"):
        _check(mode="production", operation="cluster_kill")
    assert policy.canonical("put") == "replicate"


@pytest.mark.parametrize(
    ("mode", "dry_run", "plan_id", "decision"),
    [
        ("sandbox", True, None, "plan"),
        ("sandbox", False, "p-1", "apply_saved"),
        ("sandbox", False, None, "apply_now"),
        ("production", True, None, "plan"),
        ("production", False, "p-1", "apply_saved"),
        ("production", False, None, "refused"),
    ],
)
def test_the_dry_run_rule(mode, dry_run, plan_id, decision):
    def rule():
        return dry_run_rule(
            cluster="c", mode=mode, operation="replicate", dry_run=dry_run, plan_id=plan_id
        )

    if decision == "refused":
        with pytest.raises(Refused, match="needs a plan id"):
            rule()
    else:
        assert rule() == decision
    with pytest.raises(ValueError):
        policy.canonical("format_disk")


# -- audit -----------------------------------------------------------------------------


def test_audit_redacts_secret_keys_and_known_secret_values(tmp_path):
    a = AuditLog(tmp_path / "a.jsonl", secrets=["s3cr3t-value"])
    a.record(
        cluster="c",
        mode="sandbox",
        operation="replicate",
        arguments={"token": "abc", "api_token_file": "/x", "key": "k", "v": "has s3cr3t-value"},
        outcome="ok",
    )
    line = (tmp_path / "a.jsonl").read_text()
    doc = json.loads(line)
    assert doc["arguments"]["token"] == REDACTED
    assert doc["arguments"]["api_token_file"] == "/x"  # a path, not a secret
    assert doc["arguments"]["key"] == "k"
    assert "s3cr3t" not in line
    assert set(doc) >= {"time", "cluster", "operation", "arguments", "plan_id", "outcome"}
    assert redact({"Authorization": "Bearer x"}) == {"Authorization": REDACTED}


# -- plans -----------------------------------------------------------------------------


def test_plan_ids_bind_the_cluster_state():
    base = {"term": 2, "leader": "n1", "voters": ["n1", "n2"], "learners": []}
    a = plan_id("c", "change_membership", {"node": "n3"}, **base)
    assert a == plan_id("c", "change_membership", {"node": "n3"}, **base)
    assert a != plan_id("c", "change_membership", {"node": "n3"}, **{**base, "term": 3})
    assert a != plan_id("c", "change_membership", {"node": "n3"}, **{**base, "leader": "n2"})
    assert a != plan_id("c", "change_membership", {"node": "n4"}, **base)


def test_plan_store_expiry_and_single_use(tmp_path):
    store = PlanStore(tmp_path)
    created, expires = timestamps(60)
    plan = Plan(
        plan_id="p-abc",
        cluster="c",
        operation="snapshot",
        arguments={},
        safe=True,
        steps=[],
        reasons=[],
        leader="n1",
        term=2,
        voters=["n1"],
        learners=[],
        created_at=created,
        expires_at=expires,
    )
    store.save(plan)
    assert store.load("p-abc", "c", "snapshot").plan_id == "p-abc"
    with pytest.raises(Refused, match="is for snapshot"):
        store.load("p-abc", "other", "snapshot")
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    store.save(plan.model_copy(update={"expires_at": old}))
    with pytest.raises(Refused, match="expired"):
        store.load("p-abc", "c", "snapshot")
    with pytest.raises(Refused, match="unknown plan id"):
        store.load("p-abc", "c", "snapshot")
    with pytest.raises(Refused, match="not a plan id"):
        store.load("../../etc/passwd", "c", "snapshot")


# -- views and warnings ----------------------------------------------------------------


def test_status_warnings_name_each_problem():
    v = ClusterView.build(healthy())
    assert v.warnings() == [] and v.has_quorum() and v.caught_up("n2")
    st = healthy()
    st["n3"] = member("n3", reachable=False)
    st["n3"].error = "connection refused"
    w = ClusterView.build(st).warnings()
    assert any("n3 is unreachable" in x for x in w)
    assert any("quorum at risk: exactly 2 of 3" in x for x in w)
    st["n2"] = member("n2", reachable=False)
    assert any("quorum lost" in x for x in ClusterView.build(st).warnings())
    # two leaders
    st = healthy()
    st["n2"] = member("n2", "leader", term=1, leader="n2")
    w = ClusterView.build(st).warnings()
    assert any("2 members claim leadership" in x for x in w)
    assert ClusterView.build(st).leader.id == "n1"  # the higher term
    # no leader, lagging follower, joint
    st = {k: member(k, "follower", leader=None) for k in ("n1", "n2", "n3")}
    assert any("no leader" in x for x in ClusterView.build(st).warnings())
    st = healthy()
    st["n1"].progress["n3"] = progress_of(2, 3, "probe")
    w = ClusterView.build(st).warnings()
    assert any("n3 is lagging" in x and "8 entries behind" in x for x in w)
    st = healthy(joint=True)
    assert any("joint configuration" in x for x in ClusterView.build(st).warnings())
    st = healthy(pending=11)
    assert ClusterView.build(st).change_in_flight
    # injected faults of every kind, named by what is active
    for faults in ({"drop_out": ["n1"]}, {"drop_in": ["n1"]}, {"disk_delay_ms": 250}):
        st = healthy()
        st["n2"].faults = {"drop": [], "drop_out": [], "drop_in": [], "delay_ms": 0, **faults}
        assert ClusterView.build(st).warnings() == [f"n2 has injected faults: {faults}"]


def test_health_report_names_the_operation_and_its_reasons():
    st = healthy()
    st["n2"] = member("n2", reachable=False)
    st["n3"] = member("n3", reachable=False)
    h = report(
        ClusterView.build(st),
        cluster="c",
        mode="production",
        read_only=False,
        allowed_operations=None,
        operation="inject_fault",
    )
    assert not h.healthy and not h.safe
    assert any("production" in r for r in h.reasons)
    h = report(
        ClusterView.build(healthy()),
        cluster="c",
        mode="sandbox",
        read_only=False,
        allowed_operations=None,
        operation="change_membership",
    )
    assert (
        h.healthy
        and h.safe
        and {c.name for c in h.checks}
        == {
            "members_reachable",
            "quorum",
            "leader",
            "stable_leader",
            "caught_up",
            "no_change_in_flight",
        }
    )


# -- membership planning ---------------------------------------------------------------


def _plan(st, action, node, **kw):
    return plan_change(ClusterView.build(st), cluster="c", action=action, node_id=node, **kw)


def test_plans_add_voters_as_learners_first():
    p = _plan(healthy(), "add_voter", "n4", local_addresses=("127.0.0.1:1", "127.0.0.1:2"))
    assert p.safe, p.reasons
    assert [s.action for s in p.steps] == [
        "start_process",
        "add_learner",
        "wait_caught_up",
        "promote",
    ]
    assert (p.quorum_before, p.quorum_after) == (2, 3)
    assert any("4 voters tolerate" in r for r in p.risks)
    p = _plan(healthy(), "add_learner", "n4")
    assert not p.safe and "needs --peer-address" in p.reasons[0]


def test_plan_refusals_in_pure_form():
    # joint configuration in force
    p = _plan(healthy(joint=True), "remove", "n3")
    assert not p.safe and any("joint configuration" in r for r in p.reasons)
    # removing the last voter
    st = {
        "n1": member(
            "n1", "leader", voters=["n1"], progress={"n1": progress_of(10, 11, "replicate")}
        )
    }
    p = _plan(st, "remove", "n1")
    assert not p.safe and any("last voter" in r for r in p.reasons)
    # removing the leader transfers first, to the most caught-up voter
    st = healthy()
    st["n1"].progress["n2"] = progress_of(9, 10, "replicate")
    p = _plan(st, "remove", "n1")
    assert p.safe and p.steps[0].action == "transfer_leadership" and "to n3" in p.steps[0].detail
    # promote a non-learner
    assert "not a learner" in _plan(healthy(), "promote", "n9").reasons[0]


# -- peer authentication ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("auths", "warned"),
    [
        ({"n1": "tls", "n2": "tls", "n3": "tls"}, None),
        ({"n1": "secret", "n2": "secret", "n3": "secret"}, None),
        ({"n1": None, "n2": None, "n3": None}, None),  # older nodes do not say: no warning
        ({"n1": "tls", "n2": "none", "n3": None}, "n2"),
        ({"n1": "none", "n2": "none", "n3": "none"}, "n1, n2, n3"),
    ],
)
def test_health_warns_once_about_members_without_peer_authentication(auths, warned):
    statuses = healthy()
    for node, auth in auths.items():
        statuses[node].peer_auth = auth
    r = report(
        ClusterView.build(statuses),
        cluster="c",
        mode="sandbox",
        read_only=False,
        allowed_operations=None,
        operation=None,
    )
    about = [w for w in r.warnings if "peer authentication" in w]
    if warned is None:
        assert about == []
    else:
        assert len(about) == 1 and f"on {warned}:" in about[0], about
    assert r.healthy  # a warning, not a failed check


# -- one HTTP exchange (clients/http.py), as both kinds' clients use it ----------------------


def _exchange(handler, *, reads_only: bool):
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return exchange(
        client, "POST", "http://m1/x", member="n1 (m1)", what="POST /x", reads_only=reads_only,
        node="n1",
    )  # fmt: skip


def _raise(error: type[httpx.HTTPError]):
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("boom\nsecond line", request=request)

    return handler


def test_a_refused_connection_is_unreachable_and_names_the_member():
    with pytest.raises(Unreachable, match=r"^n1 \(m1\) is unreachable: boom$"):
        _exchange(_raise(httpx.ConnectError), reads_only=False)


@pytest.mark.parametrize(("reads_only", "indeterminate"), [(False, True), (True, False)])
def test_a_lost_answer_may_have_taken_effect_unless_the_request_only_reads(
    reads_only, indeterminate
):
    with pytest.raises(NodeRequestError) as e:
        _exchange(_raise(httpx.ReadTimeout), reads_only=reads_only)
    assert e.value.indeterminate is indeterminate
    assert e.value.node == "n1"
    assert e.value.reason == "n1 (m1) did not answer POST /x: boom"


@pytest.mark.parametrize(
    ("content", "body"), [(b'{"a": 1}', {"a": 1}), (b"not json", {}), (b"[1, 2]", {})]
)
def test_an_answer_comes_back_with_its_json_object_or_an_empty_one(content, body):
    r, doc = _exchange(lambda _req: httpx.Response(503, content=content), reads_only=False)
    assert r.status_code == 503
    assert doc == body


# -- the local cluster's state file: read once per view, again only when it changes ------------


def test_a_view_of_a_local_cluster_reads_cluster_yaml_once(tmp_path, monkeypatch):
    nodes = [LocalNode(f"n{i}", f"127.0.0.1:{i}", f"127.0.0.1:{100 + i}", "d") for i in (1, 2, 3)]
    lc = LocalCluster(tmp_path, nodes, LocalSettings())
    lc.save()
    reads = []
    real_load = LocalCluster.load
    monkeypatch.setattr(
        LocalCluster, "load", classmethod(lambda cls, d: reads.append(d) or real_load(d))
    )
    procs = LocalProcesses(tmp_path)

    def one_view() -> None:  # what the raft-node adapter asks while it builds a view
        procs.api_addresses()
        for n in nodes:
            procs.decorate(MemberStatus(id=n.id, reachable=True))

    for _ in range(5):  # a wait polling the cluster
        one_view()
    assert len(reads) == 1
    lc.nodes[0].pid = 4242  # the file is replaced: the next view sees the change
    lc.save()
    assert procs.pids()["n1"] == 4242
    assert len(reads) == 2
