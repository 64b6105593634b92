"""hooks/pre and hooks/post against real local clusters: healthy, unhealthy (2 of 3
nodes killed), divergent (one member's digests doctored on the wire), nothing running
(the embedded default is never started), and `raft-manager` missing; and the same hooks
serving Claude Code's tool events (``--event``: stdin JSON, context or a block)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from manager_helpers import leader_of, local_cluster, write_config

pytestmark = pytest.mark.processes

HOOKS = Path(__file__).resolve().parent.parent / "hooks"
VENV_BIN = Path(sys.executable).parent

# A `raft-manager` that is the real CLI, except that one member's answers to
# GET /v1/admin/digest carry another hash chain: a divergence as verify sees it.
DIVERGENT_CLI = """#!{python}
import sys
from importlib.metadata import entry_points

import httpx

BAD = {bad!r}
real_send = httpx.Client.send


def send(self, request, **kwargs):
    response = real_send(self, request, **kwargs)
    where = f"{{request.url.host}}:{{request.url.port}}"
    if request.url.path == "/v1/admin/digest" and where == BAD:
        doc = response.json()
        doc["chain"] = "f" * 64
        return httpx.Response(response.status_code, json=doc, request=request)
    return response


httpx.Client.send = send
(main,) = entry_points(group="console_scripts", name="raft-manager")
sys.exit(main.load()())
"""


def run_hook(hook: str, *, task: str = "", path: str | None = None, **env: str):
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_MANAGER")}
    full = {**base, "PATH": path or f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "TASK": task}
    done = subprocess.run(
        [str(HOOKS / hook)], env={**full, **env}, capture_output=True, text=True, timeout=60
    )
    first = done.stdout.splitlines()[0] if done.stdout else ""
    return done.returncode, first, done.stdout


def test_hooks_on_a_healthy_then_unhealthy_cluster(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc:
        config = str(write_config(tmp_path / "clusters.yaml", {"lab": {"dir": str(lc.dir)}}))
        leader = leader_of(lc)
        followers = sorted(n.id for n in lc.nodes if n.id != leader)

        rc, first, out = run_hook("pre", task="move leadership to n2", RAFT_MANAGER_CONFIG=config)
        assert rc == 0, out
        assert first.startswith(f"agent-raft-manager pre: OK: cluster lab: leader {leader}")
        assert f"could take over: {', '.join(followers)}" in out
        assert "leader stable" in out and "elect_leader is safe now" in out

        rc, first, out = run_hook("pre", RAFT_MANAGER_CONFIG=config)
        assert rc == 0 and "healthy" in first, out

        rc, first, out = run_hook("post", task="move leadership to n2", RAFT_MANAGER_CONFIG=config)
        assert rc == 0, out
        assert first.startswith("agent-raft-manager post: OK: cluster lab: n1, n2, n3 agree")

        # A membership task asks whether a change is safe now.
        rc, _, out = run_hook("pre", task="add a learner n4", RAFT_MANAGER_CONFIG=config)
        assert rc == 0 and "change_membership is safe now" in out, out

        for node in followers:
            lc.kill(node)
        rc, first, out = run_hook("pre", task="failover", RAFT_MANAGER_CONFIG=config)
        assert rc == 1, out
        assert "FAIL" in first and "unhealthy: quorum: 1 of 3 voters available, 2 needed" in first
        assert "elect_leader is not safe now" in out

        rc, first, out = run_hook("post", RAFT_MANAGER_CONFIG=config)
        assert rc == 2, out
        assert "COULD NOT CHECK" in first and "could not be verified" in first
        assert "only 1 member(s) reachable" in out

        lc.kill(leader)
        for hook in ("pre", "post"):
            rc, first, out = run_hook(hook, RAFT_MANAGER_CONFIG=config)
            assert rc == 2, out
            assert "no cluster is running" in first and "cluster start NODE" in first
        assert not any(lc.alive(n) for n in lc.nodes), "a hook started a node"


def test_post_reports_a_divergent_member(tmp_path, state):
    with local_cluster(tmp_path / "c") as lc:
        config = str(write_config(tmp_path / "clusters.yaml", {"lab": {"dir": str(lc.dir)}}))
        leader = leader_of(lc)
        bad = next(n for n in lc.nodes if n.id != leader)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        cli = bin_dir / "raft-manager"
        cli.write_text(DIVERGENT_CLI.format(python=sys.executable, bad=bad.api_address))
        cli.chmod(0o755)

        rc, first, out = run_hook(
            "post",
            path=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            RAFT_MANAGER_CONFIG=config,
        )
        assert rc == 1, out
        assert first == "agent-raft-manager post: FAIL: cluster lab: DIVERGENT"
        assert f"- {bad.id} at index 1 (applied_state)" in out


def test_the_embedded_default_is_checked_but_never_started(tmp_path, state):
    embedded = state / "agent-raft-manager" / "local"
    for hook in ("pre", "post"):
        rc, first, out = run_hook(hook, XDG_STATE_HOME=str(state))
        assert rc == 2, out
        assert "no cluster is running" in first and "was never started" in first
        assert "raft-manager cluster up" in first
    assert not (embedded / "cluster.yaml").exists(), "a hook started the embedded cluster"

    with local_cluster(embedded) as lc:
        leader_of(lc)
        rc, first, out = run_hook("pre", task="elect a leader", XDG_STATE_HOME=str(state))
        assert rc == 0, out
        assert first.startswith("agent-raft-manager pre: OK: cluster local:")
        rc, first, out = run_hook("post", XDG_STATE_HOME=str(state))
        assert rc == 0 and "agree up to index" in first, out


def test_missing_raft_manager_says_how_to_install_it(tmp_path):
    path = os.pathsep.join(
        d
        for d in os.environ["PATH"].split(os.pathsep)
        if d and not (Path(d) / "raft-manager").exists()
    )
    for hook in ("pre", "post"):
        rc, first, out = run_hook(hook, task="elect n2", path=path)
        assert rc == 2, out
        assert "raft-manager command is not installed" in first
        assert "pip install" in out and "uv tool install" in out
    rc, first, out = run_hook("pre", path=path, RAFT_MANAGER_BIN=str(tmp_path / "nothing"))
    assert rc == 2 and "is not an executable" in first, out


# -- host events (--event): Claude Code's PreToolUse / PostToolUse ----------------------------

TOOL = "mcp__agent-raft-manager__"


def run_event(hook: str, tool: str, tool_input: dict, **env: str):
    """``hooks/HOOK --event`` with a Claude Code event on stdin: exit code, stdout, stderr."""
    event = {
        "hook_event_name": "PreToolUse" if hook == "pre" else "PostToolUse",
        "tool_name": TOOL + tool,
        "tool_input": tool_input,
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_MANAGER")}
    done = subprocess.run(
        [str(HOOKS / hook), "--event"],
        input=json.dumps(event),
        env={**base, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def context(stdout: str) -> str:
    answer = json.loads(stdout)["hookSpecificOutput"]
    assert answer["hookEventName"] in ("PreToolUse", "PostToolUse")
    return answer["additionalContext"]


def test_tool_events_give_context_and_block_only_changes_of_an_unhealthy_cluster(tmp_path, state):
    apply = {"action": "remove", "node_id": "n3", "dry_run": False}
    # Nothing running (the embedded default never started): the call that would start
    # it is not blocked, and the model is told why nothing was checked.
    rc, out, _ = run_event("pre", "change_membership", apply, XDG_STATE_HOME=str(state))
    assert rc == 0 and "pre: COULD NOT CHECK: no cluster is running" in context(out)

    with local_cluster(tmp_path / "c") as lc:
        config = str(write_config(tmp_path / "clusters.yaml", {"lab": {"dir": str(lc.dir)}}))
        leader = leader_of(lc)
        rc, out, _ = run_event("pre", "change_membership", apply, RAFT_MANAGER_CONFIG=config)
        assert rc == 0, out
        said = context(out)
        assert said.startswith(f"agent-raft-manager pre: OK: cluster lab: leader {leader}")
        assert "change_membership is safe now" in said
        rc, out, _ = run_event("post", "replicate", {"entries": []}, RAFT_MANAGER_CONFIG=config)
        assert rc == 0 and "post: OK: cluster lab: n1, n2, n3 agree" in context(out), out
        # A plan changed nothing: post has nothing to verify (change_membership plans by
        # default).
        rc, out, _ = run_event("post", "change_membership", {"action": "remove", "node_id": "n3"})
        assert (rc, out) == (0, "")

        lc.kill(next(n.id for n in lc.nodes if n.id != leader))
        rc, out, err = run_event("pre", "change_membership", apply, RAFT_MANAGER_CONFIG=config)
        assert rc == 2 and out == "", out
        assert "agent-raft-manager pre: FAIL" in err and "blocked: the cluster is unhealthy" in err
        # The same change as a dry run, and a repair, go through with the verdict as context.
        for tool, args in (
            ("change_membership", {**apply, "dry_run": True}),
            ("recover_node", {"node_id": "n3"}),
        ):
            rc, out, _ = run_event("pre", tool, args, RAFT_MANAGER_CONFIG=config)
            assert rc == 0 and "agent-raft-manager pre: FAIL" in context(out), (tool, out)

    done = subprocess.run(
        [str(HOOKS / "pre"), "--event"], input="{not json", capture_output=True, text=True
    )
    assert done.returncode == 1 and "the event on stdin is not JSON" in done.stderr


@pytest.mark.parametrize(
    ("tool", "args", "blocked"),
    [
        ("change_membership", {"action": "add_learner"}, True),
        ("chaos", {"duration_s": 5}, True),
        ("elect_leader", {"target": "n2"}, True),
        ("elect_leader", {}, False),  # a leaderless cluster electing: a repair
        ("inject_fault", {"kind": "kill"}, True),
        ("inject_fault", {"kind": "heal"}, False),
        ("recover_node", {"node_id": "n2"}, False),
        ("replicate", {"entries": []}, False),  # the manager refuses it without quorum
        ("snapshot", {}, False),
    ],
)
def test_what_an_unhealthy_cluster_blocks(tool, args, blocked):
    sys.path.insert(0, str(HOOKS))
    try:
        import raft_hook
    finally:
        sys.path.remove(str(HOOKS))
    assert raft_hook.blocks(tool, args) is blocked
