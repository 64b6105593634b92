"""hooks/pre and hooks/post against real local clusters: healthy, unhealthy (2 of 3
nodes killed), divergent (one member's digests doctored on the wire), nothing running
(the embedded default is never started), and `raft-manager` missing."""

from __future__ import annotations

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
