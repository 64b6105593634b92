"""The skill package: SKILL.md's frontmatter against the contract, its body, runbook
links, tool names and arguments against the MCP contract, executable stdlib-only hooks,
the example client configurations, and `npx skills@1.4.9 add` into a fresh project."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SKILL = ROOT / "SKILL.md"
REFERENCES = ROOT / "skill" / "references"
EXAMPLES = ROOT / "skill" / "examples"
HOOKS = ROOT / "hooks"
RUNBOOKS = ("election", "replication", "recovery", "membership", "consistency")
CAPABILITIES = {
    "leader_election",
    "log_replication",
    "follower_management",
    "membership_changes",
    "consistency_verification",
}
# The tool table of docs/design.md, section 6: tool -> its argument names.
TOOLS: dict[str, set[str]] = {
    "list_clusters": set(),
    "cluster_status": {"cluster"},
    "health_check": {"cluster", "operation"},
    "elect_leader": {"cluster", "target", "dry_run", "plan_id"},
    "replicate": {"cluster", "entries"},
    "read": {"cluster", "key", "consistency"},
    "change_membership": {
        "cluster",
        "action",
        "node_id",
        "peer_address",
        "api_address",
        "dry_run",
        "plan_id",
    },
    "verify_consistency": {"cluster"},
    "snapshot": {"cluster", "node"},
    "recover_node": {"cluster", "node_id"},
    "inject_fault": {"cluster", "kind", "nodes"},
}
NPX_SKILLS = "skills@1.4.9"


def split_skill() -> tuple[dict, str]:
    text = SKILL.read_text()
    assert text.startswith("---\n"), "SKILL.md must open with YAML frontmatter"
    head, sep, body = text[4:].partition("\n---\n")
    assert sep, "SKILL.md's frontmatter is not closed by ---"
    return yaml.safe_load(head), body


def docs() -> list[Path]:
    return [SKILL, *sorted(REFERENCES.glob("*.md"))]


def tool_calls(text: str) -> list[ast.Call]:
    """Every `name(...)` in inline code, or alone on a line, that parses as a call."""
    calls = []
    spans = re.findall(r"`([a-z_]+\([^`]*\))`", text)
    spans += re.findall(r"^([a-z_]+\(.*\))$", text, re.M)
    for span in spans:
        try:
            node = ast.parse(span, mode="eval").body
        except SyntaxError:
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls.append(node)
    return calls


def test_frontmatter_follows_the_contract():
    fm, _ = split_skill()
    assert fm["name"] == "agent-raft-manager"
    assert isinstance(fm["description"], str)
    assert 0 < len(fm["description"]) <= 1024
    assert "Use it when" in fm["description"]  # says when to use it
    assert fm["type"] == "coordinator"
    assert fm["color"] == "#2196F3"
    assert set(fm["capabilities"]) == CAPABILITIES and len(fm["capabilities"]) == 5
    assert fm["priority"] == "high"
    # pre/post: the contract; PreToolUse/PostToolUse: Claude Code's own events, which it
    # runs (tests/test_mcp_matrix.py::test_claude_code_offline).
    assert set(fm["hooks"]) == {"pre", "post", "PreToolUse", "PostToolUse"}
    assert 'exec "$d/hooks/pre"' in fm["hooks"]["pre"]
    assert 'exec "$d/hooks/post"' in fm["hooks"]["post"]
    for hook in ("pre", "post"):
        snippet = fm["hooks"][hook]
        assert 'export TASK="${TASK:-}"' in snippet
        subprocess.run(["bash", "-n", "-c", snippet], check=True)  # valid shell


def test_body_is_short_and_links_one_runbook_per_duty():
    _, body = split_skill()
    assert len(body.splitlines()) < 500
    for doc in docs():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links a missing {target}"
    for name in RUNBOOKS:
        assert f"(skill/references/{name}.md)" in body, f"SKILL.md does not link {name}.md"
        assert (REFERENCES / f"{name}.md").exists()


def test_tool_names_and_arguments_match_the_mcp_contract():
    seen: set[str] = set()
    for doc in docs():
        calls = tool_calls(doc.read_text())
        assert calls, f"{doc.name} shows no tool call"
        for call in calls:
            name = call.func.id  # type: ignore[attr-defined]
            assert name in TOOLS, f"{doc.name}: `{name}(...)` is not an MCP tool of the contract"
            args = {k.arg for k in call.keywords} | {
                a.id for a in call.args if isinstance(a, ast.Name)
            }
            assert args <= TOOLS[name], f"{doc.name}: {name} has no argument {args - TOOLS[name]}"
            seen.add(name)
    assert seen == set(TOOLS), f"tools never shown: {set(TOOLS) - seen}"
    # The safety rules an agent must read.
    _, body = split_skill()
    for rule in ("Dry run first", "One membership change at a time", "Never remove a quorum"):
        assert rule in body
    assert "raft-manager approve PLAN_ID" in body
    assert "Never try to approve a plan yourself" in body


def test_hooks_are_executable_stdlib_python():
    for hook in ("pre", "post"):
        path = HOOKS / hook
        assert os.access(path, os.X_OK), f"hooks/{hook} is not executable"
        assert path.read_text().startswith("#!/usr/bin/env python3\n")
    for source in (HOOKS / "pre", HOOKS / "post", HOOKS / "raft_hook.py"):
        tree = ast.parse(source.read_text())
        modules = {
            (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [n])
        }
        foreign = modules - set(sys.stdlib_module_names) - {"__future__", "raft_hook"}
        assert not foreign, f"{source.name} imports {foreign}: hooks must use the stdlib only"


def test_example_configurations_run_the_mcp_server_with_a_config():
    configs = [
        EXAMPLES / "claude-code.mcp.json",
        EXAMPLES / "claude_desktop_config.json",
        EXAMPLES / "ruflo-swarm.mcp.json",
    ]
    for path in configs:
        servers = json.loads(path.read_text())["mcpServers"]
        ours = [s for s in servers.values() if s["command"] == "raft-manager-mcp"]
        assert ours, f"{path.name} does not run raft-manager-mcp"
        for s in ours:
            assert s["args"][:1] == ["--config"], path.name
            assert set(s["args"][2:]) <= {"--read-only", "--disable-destructive"}, path.name
    assert "claude mcp add" in (EXAMPLES / "claude-mcp-add.sh").read_text()
    assert "-- raft-manager-mcp --config" in (EXAMPLES / "claude-mcp-add.sh").read_text()
    # The example clusters.yaml is one the CLI accepts.
    cli = Path(sys.executable).with_name("raft-manager")
    out = subprocess.run(
        [str(cli), "--config", str(EXAMPLES / "clusters.yaml"), "clusters", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    names = {c["name"]: c["mode"] for c in json.loads(out.stdout)["clusters"]}
    assert names == {"lab": "sandbox", "prod": "production"}


# -- npx skills add --------------------------------------------------------------------


def npx() -> str:
    found = shutil.which("npx")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npx is missing: CI must have Node and npm to test `npx skills add`")
        pytest.skip("npx is not installed: cannot test `npx skills add` here")
    return found


def skill_source(kind: str, tmp_path: Path) -> str:
    """The repository as a user points at it: its path, or a git clone of it."""
    if kind == "path":
        return str(ROOT)
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # A clone has what is committed; the tests check the files as they are now.
    for rel in ("SKILL.md", "hooks", "skill"):
        src, dst = ROOT / rel, clone / rel
        shutil.rmtree(dst, ignore_errors=True) if dst.is_dir() else dst.unlink(missing_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    return str(clone)


@pytest.mark.parametrize("kind", ["path", "clone"])
def test_npx_skills_add_installs_skill_references_and_hooks(kind, tmp_path):
    exe = npx()
    source = skill_source(kind, tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    env = {**os.environ, "DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "npm_config_yes": "true"}
    cmd = [exe, "-y", NPX_SKILLS, "add", source, "--skill", "agent-raft-manager"]
    cmd += ["-a", "claude-code", "-y"]
    done = subprocess.run(
        cmd,
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    installed = project / ".claude" / "skills" / "agent-raft-manager"
    assert (installed / "SKILL.md").read_text() == SKILL.read_text()
    for name in RUNBOOKS:
        assert (installed / "skill" / "references" / f"{name}.md").is_file()
    for hook in ("pre", "post"):
        assert os.access(installed / "hooks" / hook, os.X_OK), f"installed hooks/{hook}"
    assert (installed / "hooks" / "raft_hook.py").is_file()
    assert (installed / "pyproject.toml").is_file()  # so `pip install` of the copy works
    assert not (installed / ".git").exists()

    # The frontmatter's pre snippet, run by a host in the project, finds the installed
    # hook; without raft-manager on PATH it says how to install it and exits 2.
    fm, _ = split_skill()
    path = os.pathsep.join(
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not (Path(d) / "raft-manager").exists()
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAFT_MANAGER", "CLAUDE_"))}
    hook = subprocess.run(
        ["bash", "-c", fm["hooks"]["pre"]],
        cwd=project,
        env={**env, "PATH": path, "TASK": "elect n2", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert hook.returncode == 2, hook.stdout + hook.stderr
    assert "pip install" in hook.stdout and str(installed.resolve()) in hook.stdout
