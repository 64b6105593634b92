"""The client matrix (docs/design.md section 7): real clients on real transports against a
real cluster, one cell each.

One embedded local cluster, in a private state directory, serves the whole module. Each
cell runs the scenario of ``mcp_matrix_helpers`` (list everything, call every read-only
tool, dry-run every mutation, apply one, get one refusal) and is judged by
``check_transcript``: every structuredContent validates against its tool's outputSchema
(jsonschema, Draft 2020-12).

Cells: raw JSON-RPC over stdio at each handshake revision (with that revision's rules
for tool definitions); mcp 2.x ``ClientSession`` (handshake) and ``Client`` (2026-07-28)
over stdio and streamable HTTP; mcp 1.30.0 in a venv of its own; the TypeScript SDK over
stdio and HTTP; the MCP Inspector CLI; and Claude Code itself, offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import yaml
from anthropic_standin import Reply, serving, text, tool_use
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.client.session import ClientSession
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_matrix_helpers import (
    CLIENTS_DIR,
    NODE_BIN,
    REVISIONS,
    RawStdio,
    assert_matches_output_schema,
    check_transcript,
    raw_transcript,
    require_node,
    revision_problems,
    scenario,
)
from testkit import free_port, release_base_port, reserve_base_port, wait_until

pytestmark = pytest.mark.processes

BIN = Path(sys.executable).parent
MCP_V1 = "1.30.0"


# -- one cluster and one HTTP server for the module ------------------------------------------


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Iterator[Path]:
    """The embedded default cluster, started once in a private state directory."""
    state = tmp_path_factory.mktemp("matrix-state")
    env = {**os.environ, "RAFT_MANAGER_STATE_DIR": str(state)}
    base = reserve_base_port()
    cli = [str(BIN / "raft-manager")]
    try:
        # Elections after 1-2 s, so no term changes between a dry run and its apply.
        subprocess.run(
            [*cli, "cluster", "up", "--base-port", str(base), "--election-ticks", "50", "--json"],
            env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        yield state
    finally:
        subprocess.run(
            [*cli, "cluster", "down", "--json"], env=env, capture_output=True, timeout=60
        )
        release_base_port(base)


@pytest.fixture(scope="module")
def server(state_dir) -> dict:
    """How a client starts the stdio server: command, arguments, environment. The
    environment is as little as stdio hosts pass (the Inspector passes HOME, TERM, PATH,
    SHELL, PWD): every setting is an argument."""
    env = {k: os.environ[k] for k in ("HOME", "PATH", "TERM", "SHELL") if k in os.environ}
    args = ["--state-dir", str(state_dir)]
    return {"command": str(BIN / "raft-manager-mcp"), "args": args, "env": env}


@pytest.fixture(scope="module")
def http_url(server) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [server["command"], *server["args"], "--http", "--port", str(port)],
        env=server["env"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"

    def listening() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
        try:
            httpx.get(url, timeout=1)
        except httpx.TransportError:
            return False
        return True

    try:
        wait_until(listening, timeout=30, what="the HTTP server to listen")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tool_list(server) -> list[dict]:
    """The tool definitions, as the newest handshake revision lists them."""
    client = RawStdio([server["command"], *server["args"]], server["env"])
    try:
        client.initialize(REVISIONS[-1])
        return client.request("tools/list")["tools"]
    finally:
        client.close()


def _plan(tool_list: list[dict], cell: str) -> tuple[list[dict], set[str]]:
    return scenario(tool_list, cell), {t["name"] for t in tool_list}


# -- raw JSON-RPC at each handshake revision --------------------------------------------------


@pytest.mark.parametrize("revision", REVISIONS)
def test_raw_json_rpc(revision, server, tool_list):
    steps, names = _plan(tool_list, f"raw-{revision}")
    client = RawStdio([server["command"], *server["args"]], server["env"])
    try:
        assert client.initialize(revision)["protocolVersion"] == revision
        transcript = raw_transcript(client, steps)
    finally:
        stderr = client.close()
    problems = {t["name"]: revision_problems(t, revision) for t in transcript["tools"]}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    check_transcript(transcript, steps, names)
    assert "Traceback" not in stderr, stderr


# -- the Python SDK 2.x: ClientSession (handshake) and Client (2026-07-28) -----------------------


def _dump(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def _sdk_transcript(session, steps: list[dict]) -> dict:
    """The scenario through a 2.x session or client (the same method names)."""
    transcript = {
        "tools": [_dump(t) for t in (await session.list_tools()).tools],
        "resources": [str(r.uri) for r in (await session.list_resources()).resources],
        "prompts": [p.name for p in (await session.list_prompts()).prompts],
        "calls": [],
    }
    for step in steps:
        r = await session.call_tool(step["tool"], step["arguments"])
        transcript["calls"].append(
            {
                "tool": step["tool"],
                "isError": r.is_error,
                "structuredContent": r.structured_content,
                "text": "".join(c.text for c in r.content if c.type == "text"),
            }
        )
    return transcript


@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize("api", ["ClientSession", "Client"])
def test_python_sdk_2x(api, transport, server, http_url, tool_list):
    steps, names = _plan(tool_list, f"py2-{api}-{transport}")
    params = StdioServerParameters(
        command=server["command"], args=server["args"], env=server["env"]
    )

    async def main() -> tuple[str, dict]:
        if api == "Client":
            async with Client(params if transport == "stdio" else http_url) as c:
                return c.protocol_version, await _sdk_transcript(c, steps)
        opened = stdio_client(params) if transport == "stdio" else streamable_http_client(http_url)
        async with opened as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            return s.protocol_version or "", await _sdk_transcript(s, steps)

    version, transcript = anyio.run(main)
    assert version == ("2026-07-28" if api == "Client" else REVISIONS[-1])
    check_transcript(transcript, steps, names)


# -- the Python SDK 1.x, in a venv of its own --------------------------------------------------


@pytest.fixture(scope="module")
def mcp_v1_python(request) -> Path:
    """A venv with mcp==1.30.0, kept in pytest's cache (else the temp dir), keyed by the
    versions, so reruns reuse it."""
    key = f"mcp-{MCP_V1}-py{sys.version_info[0]}{sys.version_info[1]}"
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    home = Path(cache.mkdir(key)) if cache else Path(tempfile.gettempdir()) / f"raft-test-{key}"
    python = home / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('mcp'))"]
    if (
        not python.exists()
        or subprocess.run(probe, capture_output=True, text=True).stdout.strip() != MCP_V1
    ):
        venv.create(home, with_pip=True, clear=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"mcp=={MCP_V1}"], check=True, timeout=300
        )
    return python


def _run_plan(argv: list[str], plan: dict, tmp_path: Path, timeout: float = 180) -> dict:
    """Run a client script on ``plan``; its transcript."""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    done = subprocess.run(
        [*argv, str(path)], capture_output=True, text=True, timeout=timeout, cwd=CLIENTS_DIR
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_python_sdk_1x(transport, server, http_url, tool_list, mcp_v1_python, tmp_path):
    steps, names = _plan(tool_list, f"py1-{transport}")
    plan = {"transport": transport, "url": http_url, **server, "steps": steps}
    transcript = _run_plan(
        [str(mcp_v1_python), str(CLIENTS_DIR / "scenario_v1.py")], plan, tmp_path
    )
    check_transcript(transcript, steps, names)


# -- Node clients: the TypeScript SDK and the Inspector CLI ------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_typescript_sdk(transport, server, http_url, tool_list, tmp_path):
    require_node()
    steps, names = _plan(tool_list, f"ts-{transport}")
    plan = {"transport": transport, "url": http_url, **server, "steps": steps}
    transcript = _run_plan(["node", str(CLIENTS_DIR / "scenario.mjs")], plan, tmp_path)
    check_transcript(transcript, steps, names)


def test_inspector_cli(server, tool_list, tmp_path):
    """The Inspector CLI in its default protocol era, as a new user runs it."""
    require_node()
    inspector = [str(NODE_BIN / "mcp-inspector"), "--cli"]
    target = ["--", server["command"], *server["args"]]

    def run(*method: str) -> dict:
        done = subprocess.run(
            [*inspector, *method, *target],
            env={**server["env"], "HOME": str(tmp_path)},  # its catalog lives under HOME
            capture_output=True, text=True, timeout=120, cwd=CLIENTS_DIR,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return json.loads(done.stdout)

    listed = run("--method", "tools/list", "--strict")
    assert {t["name"] for t in listed["tools"]} == {t["name"] for t in tool_list}
    status = run("--method", "tools/call", "--tool-name", "cluster_status")
    assert not status.get("isError"), status
    assert status["structuredContent"]["leader"] in {"n1", "n2", "n3"}
    tool = next(t for t in tool_list if t["name"] == "cluster_status")
    assert_matches_output_schema(tool, status["structuredContent"], "inspector cluster_status")


# -- Claude Code itself, offline --------------------------------------------------------------

SERVER = "agent-raft-manager"
PREFIX = f"mcp__{SERVER}__"
ROOT = Path(__file__).resolve().parent.parent


def _tool_results(body: dict) -> list[dict]:
    return [
        block
        for m in body["messages"]
        if m["role"] == "user" and isinstance(m["content"], list)
        for block in m["content"]
        if block.get("type") == "tool_result"
    ]


def _result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(c.get("text", "") for c in content or [])


def _install_skill(project: Path) -> None:
    """The skill as `npx skills add` lays it out in a project."""
    skill = project / ".claude" / "skills" / SERVER
    skill.mkdir(parents=True)
    shutil.copy(ROOT / "SKILL.md", skill)
    for folder in ("hooks", "skill"):
        shutil.copytree(ROOT / folder, skill / folder)


class ScriptedModel:
    """The "model" of the Claude Code cell: a fixed turn sequence, one step per tool result
    it has seen. It lists clusters, reads the status, plans and applies adding a learner;
    then (having killed a follower voter itself) tries to remove the learner, which our
    PreToolUse hook must block, and repairs the follower, which the hook lets through."""

    def __init__(self, state_dir: Path, learner: str) -> None:
        self.env = {**os.environ, "RAFT_MANAGER_STATE_DIR": str(state_dir)}
        self.learner = learner
        self.killed: str | None = None

    def __call__(self, body: dict) -> Reply:
        if not any(t["name"].startswith(PREFIX) for t in body.get("tools", [])):
            return text("ok")  # a side request (e.g. a title): no tools offered
        done = [_result_text(b) for b in _tool_results(body)]
        if len(done) == 0:
            return tool_use(PREFIX + "list_clusters", {})
        if len(done) == 1:
            return tool_use(PREFIX + "cluster_status", {})
        add = {"action": "add_learner", "node_id": self.learner}
        if len(done) == 2:
            return tool_use(PREFIX + "change_membership", {**add, "dry_run": True})
        if len(done) == 3:
            plan = re.search(r"p-[0-9a-f]{16}", done[2])
            assert plan, done[2]
            return tool_use(
                PREFIX + "change_membership", {**add, "dry_run": False, "plan_id": plan[0]}
            )
        if len(done) == 4:
            status = json.loads(done[1][done[1].index("{") :])
            self.killed = next(
                m["id"] for m in status["members"] if m["voter"] and m["id"] != status["leader"]
            )
            subprocess.run(
                [str(BIN / "raft-manager"), "cluster", "kill", self.killed],
                env=self.env, check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            remove = {"action": "remove", "node_id": self.learner, "dry_run": False}
            return tool_use(PREFIX + "change_membership", remove)
        if len(done) == 5:
            return tool_use(PREFIX + "recover_node", {"node_id": self.killed})
        return text("done")


@pytest.mark.parametrize("hooks_from", ["skill", "settings"])
def test_claude_code_offline(hooks_from, state_dir, tool_list, tmp_path):
    """`claude -p` against the stand-in Messages API: Claude Code offers our tools, returns
    their results, and runs our hooks (context before and after each mutation; a block
    before changing an unhealthy cluster). The hooks come from the skill's frontmatter
    (active once `/agent-raft-manager` loads the skill) or from the project's
    `.claude/settings.json` (always active: the path ruflo's swarms use)."""
    require_node()
    project, home = tmp_path / "project", tmp_path / "home"
    home.mkdir()
    _install_skill(project)
    learner = "n4" if hooks_from == "skill" else "n5"
    prompt = f"add {learner} as a learner"
    if hooks_from == "settings":
        shutil.copy(
            ROOT / "skill" / "examples" / "claude-settings.json",
            project / ".claude" / "settings.json",
        )
    else:
        prompt = f"/{SERVER} {prompt}"
    config = tmp_path / "mcp.json"
    server = {"command": str(BIN / "raft-manager-mcp"), "args": ["--state-dir", str(state_dir)]}
    config.write_text(json.dumps({"mcpServers": {SERVER: server}}))
    model = ScriptedModel(state_dir, learner)
    with serving(model) as (standin, url):
        env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # the hooks' raft-manager
            "HOME": str(home),
            "RAFT_MANAGER_STATE_DIR": str(state_dir),  # where the hooks look
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_API_KEY": "sk-ant-stand-in",
            # Offline: no telemetry or updates, and any request that is not for the
            # stand-in goes to a proxy that is not there.
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            # Offer MCP tools with their schemas, not behind a tool search.
            "ENABLE_TOOL_SEARCH": "false",
        }
        argv = [
            str(NODE_BIN / "claude"), "-p", prompt,
            "--mcp-config", str(config), "--strict-mcp-config",
            "--allowedTools", f"mcp__{SERVER}", "--output-format", "stream-json", "--verbose",
        ]  # fmt: skip
        done = subprocess.run(
            argv, env=env, cwd=project, capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not standin.errors, standin.errors
    assert not standin.other_paths, f"Claude Code asked the stand-in for {standin.other_paths}"
    main = [r for r in standin.requests if any(t["name"].startswith(PREFIX) for t in r["tools"])]
    assert main, "Claude Code never offered our tools"

    # Offered: every tool, with its input schema.
    offered = {t["name"]: t for t in main[0]["tools"] if t["name"].startswith(PREFIX)}
    assert set(offered) == {PREFIX + t["name"] for t in tool_list}
    assert all(t["input_schema"]["type"] == "object" for t in offered.values())
    # The skill itself was loaded by its slash command, and only then.
    assert ("# Agent Raft Manager" in json.dumps(main[0]["messages"])) == (hooks_from == "skill")

    # Returned: each result, in order.
    final = main[-1]
    results = _tool_results(final)
    assert len(results) == 6, [_result_text(r)[:200] for r in results]
    listed, status, plan, applied, blocked, recovered = results
    assert '"local"' in _result_text(listed)
    assert '"leader"' in _result_text(status)
    assert '"plan_id"' in _result_text(plan) and not plan.get("is_error")
    assert not applied.get("is_error") and '"applied":true' in _result_text(applied).replace(
        " ", ""
    )
    assert not recovered.get("is_error"), _result_text(recovered)

    # The hooks ran: health before each mutation and verification after the apply, as
    # context for the model; the removal from an unhealthy cluster was blocked before it
    # reached the server.
    context = json.dumps(final["messages"])
    for event, hook in (("PreToolUse", "pre"), ("PostToolUse", "post")):
        said = f"{event}:{PREFIX}change_membership hook additional context: agent-raft-manager"
        assert f"{said} {hook}: OK" in context, f"no {event} context"
    assert blocked.get("is_error"), blocked
    assert "agent-raft-manager pre: FAIL" in _result_text(blocked)
    assert "blocked: the cluster is unhealthy" in _result_text(blocked)
    cluster = subprocess.run(
        [str(BIN / "raft-manager"), "status", "--json"],
        env=model.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert learner in json.loads(cluster.stdout)["learners"], "the blocked removal went through"


def test_hook_matchers_name_every_mutation_tool(tool_list):
    """The skill's and the settings example's matchers cover exactly the tools that are not
    read-only, under the one server name."""
    mutations = sorted(t["name"] for t in tool_list if not t["annotations"].get("readOnlyHint"))
    expected = f"^{PREFIX}({'|'.join(mutations)})$"
    skill = yaml.safe_load((ROOT / "SKILL.md").read_text().split("---\n")[1])["hooks"]
    settings = json.loads((ROOT / "skill" / "examples" / "claude-settings.json").read_text())
    for hooks in (skill, settings["hooks"]):
        for event in ("PreToolUse", "PostToolUse"):
            assert [m["matcher"] for m in hooks[event]] == [expected], event


def test_revision_rules_catch_what_broke_the_clients():
    """The rules have teeth: issue 18's union output schema, a bad hint, a bad name."""
    union = {
        "name": "elect_leader",
        "inputSchema": {"type": "object", "properties": {}},
        "outputSchema": {"anyOf": [{"type": "object"}, {"type": "object"}]},
        "annotations": {"readOnlyHint": "no"},
    }
    assert revision_problems(union, "2024-11-05") == []  # neither field exists there yet
    assert revision_problems(union, "2025-03-26") == ["annotations.readOnlyHint: must be a boolean"]
    assert 'outputSchema: root "type" must be "object" (got None)' in revision_problems(
        union, "2025-06-18"
    )
    spaced = {"name": "elect leader", "inputSchema": {"type": "object", "required": "x"}}
    first, second, third = revision_problems(spaced, "2025-11-25")
    assert first == "inputSchema.required: must be a list of strings"
    assert second == "name: 'elect leader' is outside [A-Za-z0-9_.-]{1,128}"
    assert third.startswith("inputSchema: not a valid JSON Schema 2020-12:")
