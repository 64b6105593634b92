"""raft-manager chaos without processes: the seeded schedule, the checks catching planted
anomalies (a stale read, a lost acknowledged write), the timeline, production refused."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from mcp_server import cli
from mcp_server.chaos import workload
from mcp_server.chaos.checks import check_linearizable, lost_writes
from mcp_server.chaos.models import FaultEvent
from mcp_server.chaos.nemesis import Nemesis
from mcp_server.chaos.runner import ChaosOptions, judge, run_chaos
from mcp_server.chaos.schedule import HOLD_S, VARIANTS, FaultStep, make_schedule, parse_nemeses
from mcp_server.chaos.target import ETCD_VARIANTS, EtcdTarget, RaftNodeTarget
from mcp_server.chaos.workload import Client, History, Members, Op
from mcp_server.core import ClusterConfig, Refused, VerifyReport

# -- the schedule ------------------------------------------------------------------------


def test_schedule_is_deterministic_for_a_seed():
    kinds = parse_nemeses(None)
    a = make_schedule(7, 120, kinds)
    assert a == make_schedule(7, 120, kinds)
    assert a != make_schedule(8, 120, kinds)
    assert len(a) > 10


def test_schedule_covers_every_supported_kind_early_and_stays_in_bounds():
    kinds = parse_nemeses("kill,pause,partition,membership,transfer,disk")
    for seed in range(20):
        steps = make_schedule(seed, 50, kinds)
        # the first round: one of each kind, required; then random picks
        assert sorted(s.kind for s in steps[:6]) == sorted(VARIANTS)
        assert [s.required for s in steps] == [True] * 6 + [False] * (len(steps) - 6)
        assert all(s.variant in VARIANTS[s.kind] for s in steps)
        assert all(s.at >= 2.0 and s.at + s.hold <= 47.0 for s in steps)
        assert all(b.at >= a.at + a.hold for a, b in itertools.pairwise(steps))


def test_a_short_run_still_schedules_every_kind_once_with_short_holds():
    kinds = parse_nemeses(None)
    for seed in range(20):
        steps = make_schedule(seed, 20, kinds)
        assert sorted(s.kind for s in steps) == sorted(VARIANTS)  # nothing after round 1
        # each step's share of 20 s, less a gap, is 1.5 s: holds shrink to it, or to
        # their kind's minimum
        assert all(s.required and s.hold <= max(HOLD_S[s.kind][0], 1.5) for s in steps)
    # with room to spare, the holds are drawn from the whole range
    holds = [s.hold for seed in range(20) for s in make_schedule(seed, 300, kinds)[:6]]
    assert len(set(holds)) > 20


def test_schedule_only_uses_the_requested_kinds():
    steps = make_schedule(3, 60, parse_nemeses("kill,transfer"))
    assert {s.kind for s in steps} == {"kill", "transfer"}
    assert make_schedule(3, 60, ["disk"], ETCD_VARIANTS) == []  # asked for, not injectable
    assert {s.kind for s in make_schedule(3, 60, ["disk"])} == {"disk"}


class _ScriptedNemesis(Nemesis):
    """The run loop alone: ``apply`` records the step and fails as scripted."""

    def __init__(self, refusals: dict[str, int]) -> None:
        super().__init__(
            RaftNodeTarget(Path("/nonexistent")),
            None,  # type: ignore[arg-type]
            Members({}),
            None,  # type: ignore[arg-type]
            History(),
            lambda s: None,
        )
        self.refusals = dict(refusals)
        self.applied_steps: list[FaultStep] = []

    async def apply(self, step: FaultStep) -> FaultEvent:
        self.applied_steps.append(step)
        ok = self.refusals.get(step.kind, 0) <= 0
        self.refusals[step.kind] = self.refusals.get(step.kind, 0) - 1
        return FaultEvent(
            kind=step.kind, variant=step.variant, start=0.0, end=0.0, applied=ok, detail=""
        )


def test_required_steps_are_never_skipped_and_are_retried_until_applied():
    late = [
        FaultStep(0.0, "kill", "kill-leader", 1.0, 1, required=True),
        FaultStep(0.0, "transfer", "transfer", 50.0, 2, required=True),  # past the end
        FaultStep(0.0, "membership", "add-voter", 1.0, 3, required=True),
        FaultStep(0.0, "disk", "slow-disk-leader", 1.0, 4, required=True),
        FaultStep(0.0, "pause", "pause-leader", 50.0, 5),  # past the end: skipped
        FaultStep(0.0, "kill", "kill-all", 1.0, 6),
    ]
    n = _ScriptedNemesis({"membership": 2, "disk": 5})
    asyncio.run(n.run(late, stop_at=10.0))
    assert [(s.kind, s.pick) for s in n.applied_steps] == [
        ("kill", 1),
        ("transfer", 2),
        ("membership", 3),  # refused,
        ("membership", 4),  # refused again, retried with other picks,
        ("membership", 5),  # applied
        ("disk", 4),
        ("disk", 5),
        ("disk", 6),  # refused every time: given up after RETRIES retries
    ]
    assert [e.applied for e in n.events] == [True, True, False, False, True, False, False, False]


def test_unknown_nemesis_is_a_usage_error():
    with pytest.raises(ValueError, match="unknown nemesis"):
        parse_nemeses("kill,flood")


# -- planted anomalies -------------------------------------------------------------------


def _op(i, client, kind, key, call, ret, status="ok", value=None, expected=None, output=None):
    return Op(
        id=i,
        client=client,
        kind=kind,
        key=key,
        value=value,
        expected=expected,
        call=call,
        ret=ret,
        status=status,
        output=output,
    )


def _put(i, client, key, value, call, ret, status="ok"):
    return _op(i, client, "put", key, call, ret, status, value=value, output={})


def _get(i, client, key, value, call, ret):
    return _op(i, client, "get", key, call, ret, output={"value": value})


def test_a_clean_history_with_indeterminate_writes_passes():
    ops = [
        _put(0, "c0", "k", "a", 0.0, 1.0),
        _put(1, "c1", "k", "b", 1.5, None, status="info"),  # maybe applied
        _get(2, "c2", "k", "b", 3.0, 3.5),  # it was
        _put(3, "c0", "k", "c", 2.0, None, status="fail"),  # never applied
    ]
    assert check_linearizable(ops) == ("ok", [])
    assert lost_writes(ops, {"k": ops[2]}) == []


def test_a_stale_read_is_caught():
    # a read that starts after "b" was acknowledged returns the older "a": what a woken
    # old leader answering from its own state would do
    ops = [
        _put(0, "c0", "k", "a", 0.0, 1.0),
        _put(1, "c1", "k", "b", 2.0, 3.0),
        _get(2, "probe", "k", "a", 4.0, 4.5),
    ]
    status, anomalies = check_linearizable(ops)
    assert status == "violation"
    (a,) = anomalies
    assert a.kind == "nonlinearizable" and a.key == "k"
    assert a.time == 4.5 and a.op_ids == [2]


def test_a_lost_acknowledged_write_is_caught():
    ops = [
        _put(0, "c0", "k", "a", 0.0, 1.0),
        _put(1, "c1", "k", "b", 2.0, 3.0),
        _get(2, "final", "k", "a", 10.0, 10.2),
    ]
    lost = lost_writes(ops, {"k": ops[2]})
    assert [a.kind for a in lost] == ["lost-write"]
    assert lost[0].op_ids == [1, 2] and "'b'" in lost[0].message
    assert check_linearizable(ops)[0] == "violation"


def test_an_overwritten_write_is_not_lost():
    ops = [
        _put(0, "c0", "k", "a", 0.0, 2.0),
        _put(1, "c1", "k", "b", 1.0, 3.0),  # concurrent with "a": either may win
        _get(2, "final", "k", "a", 10.0, 10.2),
    ]
    assert lost_writes(ops, {"k": ops[2]}) == []
    assert check_linearizable(ops) == ("ok", [])


def _judge(tmp_path, ops, final, report=None, faults=()):
    h = History()
    h.ops = ops
    report = report or VerifyReport(
        cluster="x", consistent=True, common_index=9, checked=["n1", "n2"], unchecked=[],
        divergences=[], reasons=[], seconds=0.1,
    )  # fmt: skip
    opts = ChaosOptions(duration_s=5, nemeses=["pause", "disk"], seed=1)
    return judge(
        opts,
        tmp_path,
        h,
        list(faults),
        final,
        True,
        "converged",
        report,
        ["n1"],
        RaftNodeTarget(tmp_path),
        0.0,
    )


def test_a_planted_stale_read_fails_the_verdict_and_is_marked_on_the_timeline(tmp_path):
    ops = [
        _put(0, "c0", "k", "a", 0.0, 1.0),
        _put(1, "c1", "k", "b", 2.0, 3.0),
        _get(2, "probe", "k", "a", 4.0, 4.5),  # stale: "b" was acknowledged before
        _get(3, "final", "k", "b", 9.0, 9.5),
    ]
    fault = FaultEvent(
        kind="pause",
        variant="pause-isolated-leader",
        targets=["n1"],
        start=1.0,
        end=4.6,
        applied=True,
        detail="n1 cut off from its peers, then paused",
    )
    v = _judge(tmp_path, ops, {"k": ops[3]}, faults=[fault])
    assert not v.ok and not v.linearizable and v.check == "violation"
    assert [a.kind for a in v.anomalies] == ["nonlinearizable"]
    assert v.faults == {"pause": 1}
    assert v.notes == []  # raft-node serves every nemesis, disk included
    assert EtcdTarget(tmp_path).notes_for(["pause", "disk"]) == [
        "disk: not supported on etcd (it has no fault API to slow its disk)"
    ]
    assert json.loads((tmp_path / "verdict.json").read_text())["anomalies"][0]["op_ids"] == [2]
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 4
    page = (tmp_path / "timeline.html").read_text()
    assert "nonlinearizable" in page and "<script" not in page
    root = ET.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f".//{ns}polygon")) == 1  # the anomaly marker
    assert len(root.findall(f"{ns}rect")) == 1 + 1 + 4  # background, fault band, 4 ops


def test_a_planted_lost_write_and_a_divergence_fail_the_verdict(tmp_path):
    ops = [
        _put(0, "c0", "k", "a", 0.0, 1.0),
        _put(1, "c1", "k", "b", 2.0, 3.0),
        _get(2, "final", "k", "a", 10.0, 10.2),
    ]
    diverged = VerifyReport(
        cluster="x", consistent=False, common_index=9, checked=["n1", "n2"], unchecked=[],
        divergences=[], reasons=["n2 differs at index 7"], seconds=0.1,
    )  # fmt: skip
    v = _judge(tmp_path, ops, {"k": ops[2]}, report=diverged)
    assert not v.ok
    assert sorted(a.kind for a in v.anomalies) == ["divergence", "lost-write", "nonlinearizable"]


def test_cli_exit_code_is_non_zero_on_an_anomaly(tmp_path, monkeypatch, capsys):
    ops = [
        _put(0, "c0", "k", "a", 0.0, 1.0),
        _get(1, "final", "k", None, 10.0, 10.2),
    ]
    planted = _judge(tmp_path, ops, {"k": ops[1]})
    monkeypatch.setattr("mcp_server.chaos.run_chaos", lambda opts, log: planted)
    code = cli.main(["chaos", "--seed", "1", "--out", str(tmp_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["linearizable"] is False and doc["anomalies"]


def test_history_round_trips(tmp_path):
    h = History()
    op = h.begin("c0", "cas", "k", value="c0-1", expected=None)
    op.status, op.ret, op.output = "ok", 0.5, {"ok": True, "value": "c0-1"}
    h.save(tmp_path / "h.jsonl")
    assert History.load(tmp_path / "h.jsonl") == [op]
    assert json.loads((tmp_path / "h.jsonl").read_text())["kind"] == "cas"


# -- policy ------------------------------------------------------------------------------


def test_production_is_refused_before_anything_runs(tmp_path):
    prod = ClusterConfig(name="prod", dir=str(tmp_path / "c"), mode="production")
    with pytest.raises(Refused, match="production"):
        run_chaos(ChaosOptions(duration_s=5, nemeses=["kill"], cluster=prod, out_dir=tmp_path))
    assert not (tmp_path / "history.jsonl").exists()


def test_cli_refuses_chaos_on_a_production_cluster(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    cfg = tmp_path / "clusters.yaml"
    cfg.write_text(
        "clusters:\n  prod: {kind: raft_core, endpoints: ['127.0.0.1:1'], mode: production}\n"
    )
    code = cli.main(["--config", str(cfg), "--cluster", "prod", "chaos", "--json", "--seed", "1"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["error"] == "refused" and "production" in doc["reason"]


# -- the client's retry rules (scripted answers, no sockets) -----------------------------


def _client(script, monkeypatch, deadline_s=0.5):
    """A chaos Client whose HTTP answers come from ``script(request) -> Response``."""
    monkeypatch.setattr(workload, "OP_DEADLINE_S", deadline_s)
    seen: list[tuple[str, dict | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.url.host + ":" + str(request.url.port), body))
        return script(request, len(seen))

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    members = Members({"n1": "127.0.0.1:1", "n2": "127.0.0.1:2"})
    members.leader = "n1"
    c = Client("c0", History(), members, http, random.Random(1), session="run-c0")
    return c, seen


def test_a_write_retried_after_a_lost_answer_keeps_its_seq_and_follows_the_hint(monkeypatch):
    def script(req, n):
        if n == 1:
            return httpx.Response(421, json={"error": "not_leader", "leader": "n2"})
        if n == 2:
            raise httpx.ReadTimeout("lost", request=req)  # maybe applied: retry elsewhere
        return httpx.Response(200, json={"index": 7, "term": 2})

    c, seen = _client(script, monkeypatch)
    op = asyncio.run(c.put("k"))
    assert op.status == "ok" and op.ret is not None and op.attempts == 3
    assert [h for h, _ in seen] == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1"]
    assert [b["seq"] for _, b in seen] == [1, 1, 1]  # one logical op: exactly-once
    assert {b["client_id"] for _, b in seen} == {"run-c0"}


def test_a_write_whose_outcome_stays_unknown_is_indeterminate(monkeypatch):
    def script(req, n):
        if n == 1:
            return httpx.Response(503, json={"error": "unavailable", "indeterminate": True})
        return httpx.Response(503, json={"error": "unavailable", "indeterminate": False})

    c, _ = _client(script, monkeypatch)
    op = asyncio.run(c.cas("k"))
    assert op.status == "info" and op.ret is None and op.end is not None
    assert op.to_checker() is not None and op.to_checker().ret is None  # maybe applied


def test_a_write_that_was_never_sent_failed(monkeypatch):
    def script(req, n):
        raise httpx.ConnectError("refused", request=req)

    c, _ = _client(script, monkeypatch)
    op = asyncio.run(c.put("k"))
    assert op.status == "fail" and op.to_checker() is None and op.attempts >= 2


def test_a_probe_asks_its_node_only(monkeypatch):
    def script(req, n):
        return httpx.Response(421, json={"error": "not_leader", "leader": "n2"})

    c, seen = _client(script, monkeypatch)
    c.pinned = "n1"
    op = asyncio.run(c.get("k"))
    assert op.status == "fail" and [h for h, _ in seen] == ["127.0.0.1:1"]


# -- etcd's dialect and the run's keys ----------------------------------------------------


def test_every_key_of_a_run_carries_its_prefix():
    # A named cluster keeps earlier runs' keys: their values were written by no op of
    # this history, so a run must never touch them.
    assert all(k.startswith("chaos-ab12-") for k in History(prefix="chaos-ab12-").live_keys())


def _etcd_client(script, monkeypatch):
    c, seen = _client(script, monkeypatch)
    c.dialect = workload.ETCD
    return c, seen


def test_etcd_cas_is_a_txn_and_its_outcome_is_read_back(monkeypatch):
    b64 = workload._b64

    def script(req, n):
        if n == 1:  # the compare failed: the failure branch's range says what is there
            kvs = [{"key": b64("k"), "value": b64("c9-4")}]
            return httpx.Response(200, json={"responses": [{"response_range": {"kvs": kvs}}]})
        return httpx.Response(200, json={"succeeded": True, "responses": [{}]})

    c, seen = _etcd_client(script, monkeypatch)
    first = asyncio.run(c.cas("k"))
    assert first.status == "ok" and first.output == {"ok": False, "value": "c9-4"}
    _, body = seen[0]
    assert body["compare"][0]["target"] == "CREATE"  # expected absent
    second = asyncio.run(c.cas("k"))  # now expects what it saw
    assert second.output == {"ok": True, "value": second.value}
    compare = seen[1][1]["compare"][0]
    assert compare["target"] == "VALUE" and workload._unb64(compare["value"]) == "c9-4"


def test_etcd_writes_are_not_retried_once_they_may_have_applied(monkeypatch):
    def script(req, n):
        if n == 1:
            raise httpx.ReadTimeout("lost", request=req)
        if n == 2:
            return httpx.Response(503, json={"code": 14, "message": "etcdserver: no leader"})
        return httpx.Response(200, json={})

    c, seen = _etcd_client(script, monkeypatch)
    op = asyncio.run(c.put("k"))  # no session: a retry could apply twice
    assert op.status == "info" and len(seen) == 1
    read = asyncio.run(c.get("k"))  # a read that failed is retried
    assert read.status == "ok" and read.output == {"value": None} and len(seen) == 3
