"""The MCP server in-process (``Client(server)``) against real local clusters: every
tool's structured output, annotations, dry run then apply, stale and made-up plan ids,
bad arguments, scoping flags, resources and prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from manager_helpers import STEADY, leader_of, local_cluster
from mcp_helpers import err, mcp_config, ok, with_client

from mcp_server.core import (
    ClusterList,
    ClusterStatus,
    ElectionAnswer,
    FaultResult,
    HealthReport,
    MembershipChange,
    ReadResult,
    RecoverResult,
    ReplicateResult,
    SnapshotResult,
    VerifyReport,
)
from mcp_server.core.catalog import BY_NAME
from mcp_server.core.config import state_dir
from mcp_server.local import LocalCluster
from mcp_server.server import build_server

pytestmark = pytest.mark.processes

RUNBOOKS = Path(__file__).resolve().parents[1] / "skill" / "references"

# The tool table of docs/design.md, section 6: name -> (arguments, read_only, destructive).
CONTRACT = {
    "list_clusters": ([], True, False),
    "cluster_status": (["cluster", "group", "group_offset"], True, False),
    "health_check": (["cluster", "operation", "group"], True, False),
    "elect_leader": (["cluster", "target", "dry_run", "plan_id", "group"], False, True),
    "replicate": (["cluster", "entries"], False, False),
    "read": (["cluster", "key", "consistency"], True, False),
    "change_membership": (
        ["cluster", "action", "node_id", "peer_address", "api_address", "dry_run", "plan_id"],
        False,
        True,
    ),
    "verify_consistency": (["cluster", "group"], True, False),
    "snapshot": (["cluster", "node", "group"], False, False),
    "recover_node": (["cluster", "node_id", "group"], False, True),
    "inject_fault": (["cluster", "kind", "nodes"], False, True),
    "chaos": (["cluster", "duration_s", "nemesis", "seed"], False, True),
}


def test_tools_names_arguments_annotations_and_output_schemas(tmp_path, state):
    cfg = mcp_config(tmp_path, {"t": {"dir": str(tmp_path / "c"), "mode": "sandbox"}})

    async def body(c):
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert set(tools) == set(CONTRACT)
        for name, (args, read_only, destructive) in CONTRACT.items():
            t = tools[name]
            assert sorted(t.input_schema.get("properties", {})) == sorted(args), name
            a = t.annotations
            assert a.read_only_hint is read_only, name
            assert a.destructive_hint is destructive, name
            assert a.idempotent_hint is not None and a.open_world_hint is not None, name
            assert t.output_schema, f"{name} has no output schema"
            assert len(t.description) > 120, f"{name}: describe when to use it"
            assert t.meta["toolset"] == BY_NAME[name].toolset, name
        assert tools["list_clusters"].annotations.open_world_hint is False
        assert tools["change_membership"].input_schema["properties"]["dry_run"]["default"] is True
        required = set(tools["change_membership"].input_schema["required"])
        assert required == {"action", "node_id"}
        outcome = tools["elect_leader"].output_schema["properties"]["outcome"]
        assert outcome["enum"] == ["planned", "applied"]  # one object, either way

    with_client(build_server(str(cfg)), body)


def test_every_tool_against_a_real_cluster(tmp_path, state):
    # Plans are bound to the term: elections after 1-2 s, not 200-400 ms, so a loaded
    # machine does not start one between a dry run and its apply.
    with local_cluster(tmp_path / "c", election_ticks=STEADY) as lc:
        cfg = mcp_config(tmp_path, {"t": {"dir": str(lc.dir), "mode": "sandbox"}})
        server = build_server(str(cfg))

        async def body(c):
            cl = ClusterList.model_validate(await ok(c, "list_clusters"))
            assert [x.name for x in cl.clusters] == ["t"] and cl.clusters[0].default
            st = ClusterStatus.model_validate(await ok(c, "cluster_status", {"cluster": "t"}))
            assert st.leader == leader_of(lc) and len(st.members) == 3 and st.warnings == []
            h = HealthReport.model_validate(
                await ok(c, "health_check", {"operation": "change_membership"})
            )
            assert h.healthy and h.safe and h.operation == "change_membership"

            w = ReplicateResult.model_validate(
                await ok(
                    c,
                    "replicate",
                    {"entries": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]},
                )
            )
            assert [e.key for e in w.entries] == ["a", "b"] and w.entries[1].index > w.entries[
                0
            ].index
            r = ReadResult.model_validate(await ok(c, "read", {"key": "a"}))
            assert (r.key, r.value, r.consistency) == ("a", "1", "linearizable")
            r = ReadResult.model_validate(
                await ok(c, "read", {"key": "zz", "consistency": "stale"})
            )
            assert r.value is None and r.consistency == "stale"
            await ok(c, "replicate", {"entries": [{"key": "b", "value": None}]})  # null deletes
            assert (await ok(c, "read", {"key": "b"}))["value"] is None

            # elect: dry run then apply its plan; the answer is the CLI's model either way.
            target = next(m.id for m in st.members if m.voter and m.id != st.leader)
            plan = ElectionAnswer.model_validate(
                await ok(c, "elect_leader", {"target": target, "dry_run": True})
            )
            assert plan.outcome == "planned" and plan.safe and plan.steps
            assert not plan.applied and not plan.requires_approval
            progress: list = []
            e = ElectionAnswer.model_validate(
                await ok(c, "elect_leader", {"target": target, "plan_id": plan.plan_id}, progress)
            )
            assert (e.outcome, e.plan_id, e.safe) == ("applied", plan.plan_id, True)
            assert (e.previous_leader, e.leader, e.method) == (st.leader, target, "transfer")
            assert e.term > st.term and progress, "an election reports progress"
            assert [p[0] for p in progress] == sorted({p[0] for p in progress})  # only grows
            # The plan was used; a made-up one is refused too.
            await err(
                c,
                "elect_leader",
                {"target": target, "plan_id": plan.plan_id},
                "unknown plan id",
                "next:",
            )
            await err(
                c, "elect_leader", {"plan_id": "p-0123456789abcdef"}, "refused", "unknown plan id"
            )
            await err(c, "elect_leader", {"plan_id": "../../etc"}, "refused", "not a plan id")

            # membership: dry run (the default), then apply the plan id, with progress.
            mc = MembershipChange.model_validate(
                await ok(c, "change_membership", {"action": "add_learner", "node_id": "n4"})
            )
            assert mc.dry_run and not mc.applied and mc.safe and mc.learners_after == ["n4"]
            # A plan made before the cluster changed is stale.
            stale = await ok(c, "change_membership", {"action": "remove", "node_id": target})
            progress = []
            done = MembershipChange.model_validate(
                await ok(
                    c,
                    "change_membership",
                    {
                        "action": "add_learner",
                        "node_id": "n4",
                        "dry_run": False,
                        "plan_id": mc.plan_id,
                    },
                    progress,
                )
            )
            assert done.applied and "n4" in done.learners_after and progress
            await err(
                c,
                "change_membership",
                {
                    "action": "remove",
                    "node_id": target,
                    "dry_run": False,
                    "plan_id": stale["plan_id"],
                },
                "refused",
                "no longer matches the cluster",
                "learners - -> n4",
            )
            # A plan applied with other arguments than it was made for.
            p2 = await ok(c, "change_membership", {"action": "promote", "node_id": "n4"})
            await err(
                c,
                "change_membership",
                {"action": "remove", "node_id": "n4", "dry_run": False, "plan_id": p2["plan_id"]},
                "was made for",
            )
            # Sandbox: no plan id, a safe change applies in one step.
            done = await ok(
                c, "change_membership", {"action": "promote", "node_id": "n4", "dry_run": False}
            )
            assert "n4" in done["voters_after"]

            sn = SnapshotResult.model_validate(await ok(c, "snapshot", {"node": "n1"}))
            assert sn.snapshots[0].ok and sn.snapshots[0].snapshot_index > 0
            assert len((await ok(c, "snapshot"))["snapshots"]) == 4

            f = FaultResult.model_validate(
                await ok(c, "inject_fault", {"kind": "kill", "nodes": ["n4"]})
            )
            assert f.affected == ["n4"]
            progress = []
            rec = RecoverResult.model_validate(
                await ok(c, "recover_node", {"node_id": "n4"}, progress)
            )
            assert rec.action == "restarted" and rec.caught_up and progress
            f = await ok(c, "inject_fault", {"kind": "partition", "nodes": ["n4"]})
            assert f["kind"] == "partition"
            await ok(c, "inject_fault", {"kind": "heal", "nodes": []})

            v = VerifyReport.model_validate(await ok(c, "verify_consistency"))
            assert v.consistent is True and v.divergences == [] and len(v.checked) == 4

        with_client(server, body)


def test_bad_arguments_are_clear_tool_errors(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc:
        cfg = mcp_config(tmp_path, {"t": {"dir": str(lc.dir), "mode": "sandbox"}})

        async def body(c):
            await err(
                c,
                "change_membership",
                {"action": "explode", "node_id": "n4"},
                "action",
                "add_learner",
            )
            await err(c, "change_membership", {"action": "promote"}, "node_id", "required")
            await err(c, "replicate", {"entries": []}, "entries")
            await err(c, "replicate", {"entries": [{"key": "", "value": "x"}]}, "key")
            await err(c, "replicate", {"entries": [{"key": "k", "value": "x", "ttl": 3}]}, "ttl")
            await err(c, "read", {"key": "k", "consistency": "eventual"}, "consistency")
            await err(c, "inject_fault", {"kind": "meteor", "nodes": ["n1"]}, "kind")
            await err(
                c, "health_check", {"operation": "bogus"}, "bad arguments", "unknown operation"
            )
            await err(
                c,
                "cluster_status",
                {"cluster": "nope"},
                "no cluster named 'nope'",
                "known clusters: t",
            )
            await err(c, "recover_node", {"node_id": "n9"}, "refused", "n9 is not a member")
            await err(c, "snapshot", {"node": "n9"}, "refused", "n9 is not a member")

        with_client(build_server(str(cfg)), body)


@pytest.mark.parametrize(
    ("flags", "served"),
    [
        (
            {"read_only": True},
            {"list_clusters", "cluster_status", "health_check", "read", "verify_consistency"},
        ),
        (
            {"disable_destructive": True},
            set(CONTRACT)
            - {"elect_leader", "change_membership", "recover_node", "inject_fault", "chaos"},
        ),
    ],
)
def test_scoping_flags_hide_and_refuse_tools(tmp_path, state, flags, served):
    cfg = mcp_config(tmp_path, {"t": {"dir": str(tmp_path / "c"), "mode": "sandbox"}})
    flag = "--read-only" if "read_only" in flags else "--disable-destructive"

    async def body(c):
        names = {t.name for t in (await c.list_tools()).tools}
        assert names == served
        for off in set(CONTRACT) - served:
            await err(
                c,
                off,
                {"node_id": "n1", "action": "remove", "kind": "kill", "nodes": ["n1"]},
                "refused",
                f"turned off on this server ({'the server runs with ' + flag})",
                "next:",
            )

    with_client(build_server(str(cfg), **flags), body)


def test_resources_and_prompts(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc:
        cfg = mcp_config(
            tmp_path,
            {
                "t": {"dir": str(lc.dir), "mode": "sandbox"},
                "other": {"dir": str(tmp_path / "none")},
            },
        )
        server = build_server(str(cfg))

        async def body(c):
            await ok(c, "replicate", {"cluster": "t", "entries": [{"key": "k", "value": "v"}]})
            uris = {str(r.uri) for r in (await c.list_resources()).resources}
            assert uris == {
                "raft://clusters/t/status",
                "raft://clusters/other/status",
                "raft://audit",
                "raft://skill",
                *(f"raft://runbooks/{p.stem}" for p in RUNBOOKS.glob("*.md")),
            }
            assert len(uris) == 9  # the five duties' runbooks
            text = (await c.read_resource("raft://clusters/t/status")).contents[0].text
            st = ClusterStatus.model_validate_json(text)
            assert "\n" not in text and "null" not in text  # the tool's compact document
            assert st.leader == leader_of(lc)
            gone = json.loads(
                (await c.read_resource("raft://clusters/other/status")).contents[0].text
            )
            assert gone["cluster"] == "other" and gone["error"]
            audit = json.loads((await c.read_resource("raft://audit")).contents[0].text)
            assert audit["entries"][-1]["operation"] == "replicate"
            book = (await c.read_resource("raft://runbooks/election")).contents[0].text
            assert book == (RUNBOOKS / "election.md").read_text()
            skill = (await c.read_resource("raft://skill")).contents[0].text
            assert skill.startswith("---\nname: agent-raft-manager\n")
            described = {r.name: r.description for r in (await c.list_resources()).resources}
            assert described["runbook-election"].startswith("runbook: leader election")
            prompts = {p.name for p in (await c.list_prompts()).prompts}
            assert prompts == {
                "planned_leader_change",
                "add_member",
                "recover_after_failure",
                "verify_after_incident",
            }
            p = await c.get_prompt("add_member", {"node_id": "n4", "cluster": "t"})
            text = p.messages[0].content.text
            assert "n4" in text and "health_check" in text and "promote" in text

        with_client(server, body)


def test_cluster_defaults_to_the_embedded_local_cluster(tmp_path, state, monkeypatch):
    monkeypatch.delenv("RAFT_MANAGER_CONFIG", raising=False)
    progress: list = []

    async def body(c):
        st = await ok(c, "cluster_status", {}, progress)
        assert st["cluster"] == "local" and st["leader"] and len(st["voters"]) == 3
        assert any("local" in (m or "") for _, _, m in progress), progress  # it said so
        cl = await ok(c, "list_clusters")
        assert cl["config"] is None and cl["clusters"][0]["name"] == "local"
        w = await ok(c, "replicate", {"entries": [{"key": "k", "value": "v"}]})
        assert (await ok(c, "read", {"key": "k"}))["value"] == "v" and w["entries"]

    try:
        with_client(build_server(None), body)
    finally:
        if (state_dir() / "local" / "cluster.yaml").exists():
            LocalCluster.load(state_dir() / "local").down(grace_s=2.0)


def test_an_installed_wheel_finds_the_skill_under_its_prefix(tmp_path, monkeypatch):
    """pyproject ships SKILL.md and the runbooks as data files under
    share/agent-raft-manager; outside a checkout the server finds them there."""
    import sys
    import tomllib

    from mcp_server.mcp import resources

    data = tomllib.loads((RUNBOOKS.parents[1] / "pyproject.toml").read_text())
    shipped = data["tool"]["setuptools"]["data-files"]
    assert shipped["share/agent-raft-manager"] == ["SKILL.md"]
    assert shipped["share/agent-raft-manager/skill/references"] == ["skill/references/*.md"]

    share = tmp_path / "prefix" / "share" / "agent-raft-manager"
    (share / "skill" / "references").mkdir(parents=True)
    site = tmp_path / "prefix" / "lib" / "site-packages" / "mcp_server" / "mcp" / "resources.py"
    monkeypatch.setattr(resources, "__file__", str(site))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    assert resources.skill_dir() == share
