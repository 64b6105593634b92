"""The one table of tools (mcp_server/core/catalog.py) and what derives from it: the
policy sets, the tool definitions (pinned by a snapshot file), the README's tool table,
the tools/list budget, and the scoping flags with their environment twins. In-process,
no cluster: fast."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
from mcp_helpers import err, mcp_config, with_client

from mcp_server.core import InputError, load_config, policy
from mcp_server.core.catalog import BY_NAME, TOOLS, TOOLSETS
from mcp_server.mcp import args as server_args
from mcp_server.mcp.backend import Backend
from mcp_server.mcp.results import compact_schema
from mcp_server.mcp.tools import ARGUMENTS, result_model
from mcp_server.server import build_server

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "snapshots" / "mcp_tools.json"
UPDATE = "RAFT_MANAGER_UPDATE_SNAPSHOTS"
TOOLS_LIST_BUDGET = 20_000  # characters of the tools/list result, compact JSON


def listed(tmp_path: Path, **flags) -> list[dict]:
    """tools/list as a client gets it, each tool as its wire JSON."""
    cfg = mcp_config(tmp_path, {"t": {"dir": str(tmp_path / "c"), "mode": "sandbox"}})

    async def body(c):
        return [
            t.model_dump(mode="json", by_alias=True, exclude_none=True)
            for t in (await c.list_tools()).tools
        ]

    return with_client(build_server(str(cfg), **flags), body)


def test_policy_sets_derive_from_the_catalog():
    assert {t.name for t in TOOLS if t.read_only} == policy.READS
    assert {t.name for t in TOOLS if not t.read_only} == policy.MUTATIONS
    assert {
        "elect_leader", "change_membership", "recover_node", "inject_fault", "chaos",
    } == policy.DESTRUCTIVE  # fmt: skip
    assert all(policy.is_mutation(t.name) != t.read_only for t in TOOLS)
    assert set(ARGUMENTS) == set(BY_NAME)
    for t in TOOLS:
        assert t.toolset in TOOLSETS and result_model(t).model_json_schema()["type"] == "object"
        assert t.read_only == (t.toolset == "read"), t.name
        assert not (t.read_only and t.destructive), t.name


def test_tool_definitions_match_the_snapshot(tmp_path):
    tools = listed(tmp_path)
    text = json.dumps(tools, indent=1, sort_keys=True) + "\n"
    if os.environ.get(UPDATE):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), f"no snapshot yet: run `{UPDATE}=1 pytest {__file__}`"
    assert text == SNAPSHOT.read_text(), (
        "the tool definitions changed; review the diff, then regenerate the snapshot with "
        f"`{UPDATE}=1 .venv/bin/python -m pytest -q tests/test_mcp_catalog.py` and commit it"
    )


def test_tools_list_fits_its_budget_and_every_schema_is_valid(tmp_path):
    tools = listed(tmp_path)
    size = len(json.dumps({"tools": tools}, separators=(",", ":")))
    assert size <= TOOLS_LIST_BUDGET, (
        f"tools/list is {size} characters, over {TOOLS_LIST_BUDGET}: say what many tools "
        "share once in the server's instructions (as for `cluster`), not per argument, and "
        "keep descriptions to what a model needs to choose and call a tool"
    )
    for t in tools:
        assert t["outputSchema"]["type"] == "object", t["name"]
        jsonschema.Draft202012Validator.check_schema(t["outputSchema"])
        jsonschema.Draft202012Validator.check_schema(t["inputSchema"])
        assert "title" not in json.dumps(t["outputSchema"]), t["name"]
        assert "title" not in t["annotations"], "the title is the tool's, not repeated"


def test_compacting_keeps_a_property_named_title_and_the_meaning():
    schema = {
        "title": "X",
        "type": "object",
        "properties": {
            "title": {"title": "Title", "type": "string"},
            "n": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "m": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "m"},
        },
        "required": ["title", "m"],
    }
    out = compact_schema(schema, output=True)
    assert out == {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "n": {"type": "integer"},  # optional: left out, never null
            "m": {"type": ["integer", "null"]},  # required: null is an answer
        },
        "required": ["title", "m"],
    }
    assert compact_schema(schema, output=False)["properties"]["m"] == {
        "description": "m",
        "type": ["integer", "null"],
    }


def _signature(tool: dict) -> str:
    props = tool["inputSchema"].get("properties", {})
    required = set(tool["inputSchema"].get("required", ()))
    args = ", ".join(a if a in required else f"{a}?" for a in props)
    return f"`{tool['name']}({args})`"


def readme_table(tools: list[dict]) -> str:
    """The README's tool table, as the catalog and the listed schemas make it."""
    yes = {True: "yes", False: "no"}
    rows = [
        "| tool | toolset | read-only | destructive | idempotent | CLI |",
        "|---|---|---|---|---|---|",
    ]
    for t in tools:
        e = BY_NAME[t["name"]]
        cli = re.sub(r"{(\w+)}", lambda m: m[1].upper(), e.cli)  # {node_id} -> NODE_ID
        rows.append(
            f"| {_signature(t)} | {e.toolset} | {yes[e.read_only]} | {yes[e.destructive]} "
            f"| {yes[e.idempotent]} | `{cli}` |"
        )
    return "\n".join(rows) + "\n"


def test_the_readme_tool_table_is_the_catalog(tmp_path):
    table = readme_table(listed(tmp_path))
    readme = (ROOT / "README.md").read_text()
    assert table in readme, f"README's MCP tool table should read:\n{table}"


# -- scoping -------------------------------------------------------------------------------


def parse(argv: list[str], env: dict[str, str] | None = None) -> server_args.Settings:
    p = argparse.ArgumentParser()
    server_args.add_target_arguments(p)
    server_args.add_arguments(p)
    return server_args.settings(p.parse_args(argv), env or {})


READS = [t.name for t in TOOLS if t.read_only]


@pytest.mark.parametrize(
    ("argv", "env", "served"),
    [
        ([], {}, [t.name for t in TOOLS]),
        (["--toolsets", "read"], {}, READS),
        (["--toolsets", "read,operate"], {}, [*READS, "inject_fault", "chaos"]),
        (["--tools", "read,replicate"], {}, ["read", "replicate"]),
        (["--toolsets", "read", "--tools", "replicate"], {}, [*READS, "replicate"]),
        (["--exclude-tools", "chaos,inject_fault"], {}, [t.name for t in TOOLS][:-2]),
        (["--disable-destructive"], {}, [*READS, "replicate", "snapshot"]),
        # read-only wins over everything, from the environment too
        (["--tools", "replicate,read", "--read-only"], {}, ["read"]),
        (["--toolsets", "write"], {"RAFT_MANAGER_READ_ONLY": "1"}, []),
        # an argument wins over its environment twin
        (["--toolsets", "operate"], {"RAFT_MANAGER_TOOLSETS": "read"}, ["inject_fault", "chaos"]),
        ([], {"RAFT_MANAGER_TOOLS": "health_check", "RAFT_MANAGER_READ_ONLY": "no"},
         ["health_check"]),
        ([], {"RAFT_MANAGER_EXCLUDE_TOOLS": "chaos", "RAFT_MANAGER_DISABLE_DESTRUCTIVE": "true"},
         [*READS, "replicate", "snapshot"]),
    ],
)  # fmt: skip
def test_scoping_flags_and_their_environment_twins(argv, env, served):
    assert parse(argv, env).scope.served == served


def test_targets_from_arguments_else_the_environment():
    env = {
        "RAFT_MANAGER_CONFIG": "/env/c.yaml",
        "RAFT_MANAGER_CLUSTER": "env",
        "RAFT_MANAGER_STATE_DIR": "/env/state",
    }
    s = parse([], env)
    assert (s.config, s.cluster, s.state_dir) == ("/env/c.yaml", "env", "/env/state")
    s = parse(["--config", "a.yaml", "--cluster", "a", "--state-dir", "/a"], env)
    assert (s.config, s.cluster, s.state_dir) == ("a.yaml", "a", "/a")
    assert parse([]).config is None


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--toolsets", "read,chaos"], {}, "unknown toolset 'chaos'"),
        (["--toolsets", "all"], {}, "toolsets are: read, write, operate"),
        (["--tools", "elect"], {}, "unknown tool 'elect'"),
        (["--exclude-tools", "status"], {}, "tools are: list_clusters, cluster_status"),
        ([], {"RAFT_MANAGER_TOOLS": "nope"}, "unknown tool 'nope'"),
        ([], {"RAFT_MANAGER_READ_ONLY": "maybe"}, "RAFT_MANAGER_READ_ONLY='maybe'"),
    ],
)
def test_unknown_names_are_startup_errors_that_list_the_known_ones(argv, env, message):
    with pytest.raises(InputError) as e:
        parse(argv, env)
    assert message in str(e.value) and "\nnext: " in str(e.value)


def test_a_tool_outside_the_toolsets_is_not_listed_and_is_refused(tmp_path):
    cfg = mcp_config(tmp_path, {"t": {"dir": str(tmp_path / "c"), "mode": "sandbox"}})

    served = ["list_clusters", "cluster_status", "health_check", "verify_consistency", "snapshot"]

    async def body(c):
        assert [t.name for t in (await c.list_tools()).tools] == served
        await err(
            c, "replicate", {"entries": [{"key": "k", "value": "v"}]}, "refused",
            "turned off on this server (neither --toolsets nor --tools names it)", "next:",
        )  # fmt: skip
        await err(c, "read", {"key": "k"}, "turned off", "--exclude-tools names it")

    server = build_server(
        str(cfg), toolsets=["read"], tools=["snapshot", "read"], exclude_tools=["read"]
    )
    assert server.scope.served == served
    with_client(server, body)


def test_a_command_for_a_human_names_this_servers_config_and_state_dir(tmp_path, monkeypatch):
    cfg = mcp_config(tmp_path, {"t": {"dir": str(tmp_path / "c"), "mode": "sandbox"}})
    backend = Backend(load_config(str(cfg)))
    ask = "ask a human to run `raft-manager approve p-1` at a terminal"
    monkeypatch.delenv("RAFT_MANAGER_STATE_DIR", raising=False)
    monkeypatch.delenv("RAFT_MANAGER_CONFIG", raising=False)
    assert backend.for_a_human(ask) == (
        f"ask a human to run `raft-manager --config {cfg} approve p-1` at a terminal"
    )
    monkeypatch.setenv("RAFT_MANAGER_STATE_DIR", "/srv/raft")
    assert f"`RAFT_MANAGER_STATE_DIR=/srv/raft raft-manager --config {cfg} approve" in (
        backend.for_a_human(ask)
    )
    assert Backend(load_config(None)).for_a_human("run `raft-manager status`") == (
        "run `RAFT_MANAGER_STATE_DIR=/srv/raft raft-manager status`"
    )
