"""The installed server's settings over stdio, the way hosts spawn it: a host that passes
almost no environment (the MCP Inspector passes HOME, TERM, PATH, SHELL, PWD) gets what
the arguments say; environment twins work when a host does pass them; `raft-manager
mcp` takes the same flags; unknown names stop the server at startup. The client is mcp
2.x's ClientSession on the 2025-11-25 handshake. No cluster runs: list_clusters reads
the configuration only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
from mcp import StdioServerParameters
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client
from mcp_helpers import BIN, check_output, mcp_config

from mcp_server.core.catalog import TOOLS

READS = [t.name for t in TOOLS if t.read_only]


def _config(tmp_path: Path) -> Path:
    return mcp_config(
        tmp_path,
        {"a": {"dir": str(tmp_path / "a"), "mode": "sandbox"}, "b": {"dir": str(tmp_path / "b")}},
    )


def session(command: list[str], env: dict[str, str], errlog: Path) -> tuple[list[str], dict]:
    """Spawn the server, list its tools and call list_clusters (checked against its
    output schema); the tool names and the answer."""
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)

    async def main():
        with errlog.open("w") as err:
            async with stdio_client(params, errlog=err) as (r, w), ClientSession(r, w) as s:
                assert (await s.initialize()).protocol_version == "2025-11-25"
                tools = (await s.list_tools()).tools
                res = await s.call_tool("list_clusters", {})
                assert not res.is_error, res.content[0].text
                schema = next(t.output_schema for t in tools if t.name == "list_clusters")
                check_output(schema, res.structured_content, "list_clusters")
                return [t.name for t in tools], res.structured_content

    return anyio.run(main)


def bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What the MCP Inspector passes a stdio server, and nothing else."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    base = {"HOME": str(home), "PATH": os.environ["PATH"], "TERM": "dumb", "PWD": str(tmp_path)}
    return {**base, "SHELL": "/bin/sh", **extra}


def test_arguments_alone_set_config_cluster_state_dir_and_tools(tmp_path):
    cfg = _config(tmp_path)
    state = tmp_path / "st"
    command = [
        str(BIN / "raft-manager-mcp"),
        *("--config", str(cfg), "--cluster", "b", "--state-dir", str(state)),
        *("--toolsets", "read", "--exclude-tools", "verify_consistency"),
    ]
    tools, clusters = session(command, bare_env(tmp_path), tmp_path / "stderr")
    served = ["list_clusters", "cluster_status", "health_check", "read"]
    assert tools == served
    assert clusters["config"] == str(cfg) and clusters["state_dir"] == str(state)
    assert [c["name"] for c in clusters["clusters"] if c["default"]] == ["b"]
    first = (tmp_path / "stderr").read_text().splitlines()[0]
    assert first == (
        f"raft-manager-mcp: serving config {cfg}; default cluster b; state dir {state}; "
        f"tools (4 of 12): {', '.join(served)}"
    )


def test_environment_twins_and_read_only_winning_over_tools(tmp_path):
    cfg = _config(tmp_path)
    env = bare_env(
        tmp_path,
        RAFT_MANAGER_CONFIG=str(cfg),
        RAFT_MANAGER_CLUSTER="a",
        RAFT_MANAGER_STATE_DIR=str(tmp_path / "env-state"),
        RAFT_MANAGER_TOOLS="replicate,read,chaos,list_clusters",
        RAFT_MANAGER_READ_ONLY="1",
    )
    tools, clusters = session([str(BIN / "raft-manager-mcp")], env, tmp_path / "stderr")
    assert tools == ["list_clusters", "read"]
    assert clusters["state_dir"] == str(tmp_path / "env-state")
    assert [c["name"] for c in clusters["clusters"] if c["default"]] == ["a"]
    # `raft-manager mcp`: the same server and flags; a flag wins over its twin.
    command = [str(BIN / "raft-manager"), "--cluster", "b", "mcp", "--toolsets", "operate"]
    env.pop("RAFT_MANAGER_READ_ONLY")
    tools, clusters = session(command, env, tmp_path / "stderr2")
    assert tools == ["list_clusters", "read", "replicate", "inject_fault", "chaos"]
    assert [c["name"] for c in clusters["clusters"] if c["default"]] == ["b"]


def test_unknown_names_stop_the_server_with_the_known_ones(tmp_path):
    cfg = _config(tmp_path)
    for argv, message in [
        (["--tools", "status"], "unknown tool 'status'\nnext: tools are: list_clusters,"),
        (["--cluster", "nope"], "no cluster named 'nope'"),
    ]:
        r = subprocess.run(
            [str(BIN / "raft-manager-mcp"), "--config", str(cfg), *argv],
            env=bare_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode != 0 and message in r.stderr, (argv, r.stderr)
        assert r.stdout == ""  # stdout carries only the protocol


def test_help_documents_every_flag_and_its_twin():
    flags = ["--state-dir", "--toolsets", "--tools", "--exclude-tools", "--read-only"]
    twins = ["RAFT_MANAGER_STATE_DIR", "RAFT_MANAGER_TOOLSETS", "RAFT_MANAGER_TOOLS"]
    twins += ["RAFT_MANAGER_EXCLUDE_TOOLS", "RAFT_MANAGER_READ_ONLY"]
    twins += ["RAFT_MANAGER_DISABLE_DESTRUCTIVE", "RAFT_MANAGER_MCP_TOKEN"]
    for command, own in [
        ([str(BIN / "raft-manager-mcp")], ["--config", "--cluster", "RAFT_MANAGER_CLUSTER"]),
        ([str(BIN / "raft-manager"), "mcp"], ["--config", "--cluster"]),  # global flags
    ]:
        out = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        for word in [*flags, "--disable-destructive", "--http", "--token-file", *twins, *own]:
            assert word in out, (command, word)
