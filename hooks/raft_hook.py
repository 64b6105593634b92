"""The skill's pre and post hooks: real, read-only checks through the `raft-manager` CLI.

`hooks/pre` runs the health check on the configured cluster (for an election task also
leader stability and which voters could take over); `hooks/post` verifies that logs and
applied state agree. Both read the task from ``$TASK`` and print a verdict line first.

Exit status: 0 healthy / consistent; 1 unhealthy / divergent; 2 could not check (no
cluster running, the CLI missing or failing, a timeout).

With ``--event`` a hook serves a host's tool event instead (Claude Code's PreToolUse and
PostToolUse, docs/design.md section 7): the event JSON on stdin names the tool and its
input, which take the place of ``$TASK``, and the answer follows the host's rules. A
PreToolUse hook that exits 2 blocks the call, so ``pre --event`` blocks only a call that
would change or disrupt a cluster found unhealthy (``blocks``); it never blocks a dry
run, a repair, or when it could not check (the call may be the one that starts the
embedded cluster). Otherwise the verdict goes to the model as additional context.

Only the standard library is used and the CLI is called as a program: the installed
skill copy may run under a Python that cannot import the package. The hooks never
change a cluster, and never start one: with no clusters.yaml the CLI would start the
embedded default cluster on first use, so the hooks point it at a generated
clusters.yaml naming the same directory without ``auto_start``, and report "could not
check" when no node process runs there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, BAD, UNCHECKED = 0, 1, 2
SKILL_DIR = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT_S = 15.0

# An election task: the pre hook also reports leader stability and who could take over.
ELECTION = re.compile(r"elect|leader|failover|fail-over|transfer|campaign", re.I)
# Which health_check operation a task is about, by the words it uses (first match wins).
TASK_OPERATIONS = (
    ("change_membership", re.compile(r"member|learner|promot|remov|decommission|join", re.I)),
    ("elect_leader", ELECTION),
    ("replicate", re.compile(r"replicat|write|\bput\b", re.I)),
)


# The order in which failed health checks are worth naming (the first one leads the verdict).
CHECK_PRIORITY = (
    "quorum",
    "leader",
    "stable_leader",
    "members_reachable",
    "no_change_in_flight",
    "caught_up",
)


class CouldNotCheck(Exception):
    """The check could not run; the message says why and what to do."""


@dataclass
class Verdict:
    code: int
    headline: str
    details: list[str] = field(default_factory=list)

    def render(self, hook: str) -> str:
        word = {OK: "OK", BAD: "FAIL", UNCHECKED: "COULD NOT CHECK"}[self.code]
        lines = [f"agent-raft-manager {hook}: {word}: {self.headline}"]
        return "\n".join(lines + [f"  - {line}" for line in self.details])

    def emit(self, hook: str) -> int:
        print(self.render(hook))
        return self.code


def task_operation(task: str) -> str | None:
    """The operation a free-text task is about, or None for a general task."""
    for operation, pattern in TASK_OPERATIONS:
        if pattern.search(task):
            return operation
    return None


def install_hint() -> list[str]:
    source = str(SKILL_DIR) if (SKILL_DIR / "pyproject.toml").exists() else "<the repository>"
    return [
        f"install it: python3 -m pip install '{source}'   (or: uv tool install '{source}')",
        "or point RAFT_MANAGER_BIN at an existing raft-manager executable",
    ]


def find_cli() -> str:
    explicit = os.environ.get("RAFT_MANAGER_BIN")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise CouldNotCheck(f"RAFT_MANAGER_BIN={explicit} is not an executable")
    found = shutil.which("raft-manager")
    if found is None:
        raise CouldNotCheck("the raft-manager command is not installed (not on PATH)")
    return found


class Cli:
    """`raft-manager ... --json` against one cluster, without ever starting one."""

    def __init__(self, exe: str, workdir: Path) -> None:
        self.exe = exe
        self.timeout = float(os.environ.get("RAFT_MANAGER_HOOK_TIMEOUT", DEFAULT_TIMEOUT_S))
        self.config = os.environ.get("RAFT_MANAGER_CONFIG") or None
        self.configured = self.config is not None
        self.cluster = os.environ.get("RAFT_MANAGER_CLUSTER") or None
        self.name, self.location = self._select()
        if self.config is None:
            # The embedded default: name its directory in a clusters.yaml of our own, so
            # the CLI reads it as an ordinary local cluster and never auto-starts it.
            generated = workdir / "clusters.yaml"
            doc = {"clusters": {self.name: {"kind": "raft_core", "dir": self.location}}}
            generated.write_text(json.dumps(doc))  # JSON is YAML
            self.config = str(generated)
        self._require_running()

    def run(self, *command: str) -> dict[str, Any]:
        argv = [self.exe]
        if self.config:
            argv += ["--config", self.config]
        if self.cluster:
            argv += ["--cluster", self.cluster]
        argv += [*command, "--json"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise CouldNotCheck(
                f"`raft-manager {' '.join(command)}` did not answer within {self.timeout:.0f}s"
            ) from None
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise CouldNotCheck(
                f"`raft-manager {' '.join(command)}` exited {proc.returncode}: {tail[0]}"
            ) from None
        if isinstance(doc, dict) and "error" in doc and "operation" in doc:
            hint = f"; next: {doc['next_step']}" if doc.get("next_step") else ""
            raise CouldNotCheck(f"{doc.get('reason') or doc['error']}{hint}")
        return doc

    def _select(self) -> tuple[str, str]:
        """The selected cluster's name and location (a directory, or endpoints)."""
        doc = self.run("clusters")
        clusters = doc.get("clusters") or []
        for c in clusters:
            if (self.cluster and c["name"] == self.cluster) or (
                not self.cluster and c.get("default")
            ):
                return c["name"], c.get("location") or ""
        if len(clusters) == 1 and not self.cluster:
            return clusters[0]["name"], clusters[0].get("location") or ""
        names = ", ".join(c["name"] for c in clusters) or "none"
        raise CouldNotCheck(
            f"no cluster selected (configured: {names}); set RAFT_MANAGER_CLUSTER to one"
        )

    def _require_running(self) -> None:
        """A local cluster (a directory) must have a live node process: never start one."""
        if not self.location.startswith("/"):
            return  # remote endpoints: nothing of ours to start
        cluster_file = Path(self.location) / "cluster.yaml"
        start = " ".join(
            ["raft-manager"]
            + (["--config", os.environ["RAFT_MANAGER_CONFIG"]] if self.configured else [])
            + (["--cluster", self.cluster] if self.cluster else [])
        )
        if not cluster_file.exists():
            raise CouldNotCheck(
                f"no cluster is running: cluster {self.name!r} in {self.location} was never "
                f"started (start it with `{start} cluster up`)"
            )
        text = cluster_file.read_text()
        pids = [int(p) for p in re.findall(r"^\s*pid:\s*(\d+)\s*$", text, re.M)]
        if not any(_alive(p) for p in pids):
            ids = re.findall(r"^\s*-?\s*id:\s*(\S+)\s*$", text, re.M)
            raise CouldNotCheck(
                f"no cluster is running: no node process of cluster {self.name!r} runs in "
                f"{self.location} (start its nodes with `{start} cluster start NODE` for "
                f"each of {', '.join(ids) or 'its nodes'})"
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


# -- pre ---------------------------------------------------------------------------------


def takeover_candidates(status: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Voters that could take over leadership now, and why each other voter could not."""
    ready, not_ready = [], []
    for m in status.get("members", []):
        if not m.get("voter") or m["id"] == status.get("leader"):
            continue
        if not m.get("reachable"):
            not_ready.append(f"{m['id']} unreachable")
        elif m.get("caught_up") is not True:
            not_ready.append(f"{m['id']} lags ({m.get('lag')} entries behind)")
        elif m.get("role") != "follower" or m.get("leader") != status.get("leader"):
            not_ready.append(f"{m['id']} does not follow the leader (role {m.get('role')})")
        else:
            ready.append(m["id"])
    return ready, not_ready


def pre(cli: Cli, task: str) -> Verdict:
    operation = task_operation(task)
    health = cli.run("health", *(["--operation", operation] if operation else []))
    leader, term = health.get("leader"), health.get("term")
    where = f"cluster {cli.name}: " + (f"leader {leader} (term {term})" if leader else "no leader")
    checks = {c["name"]: c for c in health.get("checks", [])}
    problems = [
        f"{name}: {checks[name]['detail']}"
        for name in CHECK_PRIORITY
        if name in checks and not checks[name]["ok"]
    ]
    problems += [
        f"{c['name']}: {c['detail']}"
        for c in checks.values()
        if not c["ok"] and c["name"] not in CHECK_PRIORITY
    ]
    notes = []
    if operation and health.get("safe"):
        notes.append(f"{operation} is safe now")
    elif operation:
        problems.append(f"{operation} is not safe now: " + "; ".join(health.get("reasons", [])))
    if ELECTION.search(task):
        if checks.get("stable_leader", {}).get("ok"):
            notes.append(f"leader stable: {checks['stable_leader']['detail']}")
        try:
            ready, not_ready = takeover_candidates(cli.run("status"))
        except CouldNotCheck as e:  # e.g. a cluster whose allowed_operations omit status
            problems.append(f"could not tell who could take over: {e}")
        else:
            excuses = f" (not: {'; '.join(not_ready)})" if not_ready else ""
            if ready:
                notes.append(f"could take over: {', '.join(ready)}{excuses}")
            elif leader:
                problems.append(f"no voter could take over from {leader} now{excuses}")
    notes += [f"warning: {w}" for w in health.get("warnings", [])]
    if not problems and health.get("healthy"):
        return Verdict(OK, f"{where}; healthy", notes)
    headline = f"{where}; unhealthy: {problems[0] if problems else 'see the checks'}"
    return Verdict(BAD, headline, problems[1:] + notes)


# -- post --------------------------------------------------------------------------------


def post(cli: Cli, task: str) -> Verdict:
    v = cli.run("verify")
    checked = ", ".join(v.get("checked", [])) or "none"
    if v.get("consistent") is True:
        chain = (v.get("chain") or "")[:12]
        return Verdict(
            OK,
            f"cluster {cli.name}: {checked} agree up to index {v.get('common_index')} "
            f"(chain {chain}, {v.get('log_indexes_checked')} log entries compared)",
            [f"not compared: {', '.join(v['unchecked'])}"] if v.get("unchecked") else [],
        )
    if v.get("consistent") is False:
        divergences = [
            f"{d['member']} at index {d.get('index')} ({d['kind']}): {d.get('detail') or ''}"
            for d in v.get("divergences", [])
        ]
        return Verdict(BAD, f"cluster {cli.name}: DIVERGENT", divergences + v.get("reasons", []))
    return Verdict(
        UNCHECKED, f"cluster {cli.name}: consistency could not be verified", v.get("reasons", [])
    )


def verdict(hook: str, task: str) -> Verdict:
    """Run ``hook``'s check for ``task``; never raises for a check that could not run."""
    check = {"pre": pre, "post": post}[hook]
    try:
        exe = find_cli()
    except CouldNotCheck as e:
        return Verdict(UNCHECKED, str(e), install_hint())
    try:
        with tempfile.TemporaryDirectory(prefix="raft-hook-") as workdir:
            found = check(Cli(exe, Path(workdir)), task)
    except CouldNotCheck as e:
        found = Verdict(UNCHECKED, str(e))
    if task:
        found.details.append(f"task: {task[:200]}")
    return found


# -- a host's tool events (Claude Code) --------------------------------------------------------


def blocks(tool: str, args: dict[str, Any]) -> bool:
    """Whether an unhealthy cluster blocks this call: it applies a membership change or a
    leadership transfer, or disrupts the cluster on purpose. Repairs pass (recover_node, an
    election without a target, heal/restart/continue), and so do writes and snapshots,
    which the manager itself refuses without a quorum."""
    if tool in ("change_membership", "chaos"):
        return True
    if tool == "elect_leader":
        return bool(args.get("target"))
    return tool == "inject_fault" and args.get("kind") in ("partition", "kill", "stop")


def is_dry_run(tool: str, args: dict[str, Any]) -> bool:
    """change_membership plans unless told otherwise; elect_leader acts unless told to plan."""
    return bool(args.get("dry_run", tool == "change_membership"))


def tool_event(hook: str, event: dict[str, Any]) -> int:
    """Answer a PreToolUse (``pre``) or PostToolUse (``post``) event as Claude Code reads it:
    exit 2 with the verdict on stderr blocks the call; JSON on stdout adds context (and,
    after the call, ``decision: block`` puts a divergence in front of the model)."""
    name = event.get("hook_event_name") or ("PreToolUse" if hook == "pre" else "PostToolUse")
    tool = str(event.get("tool_name") or "").rpartition("__")[2]
    args = event.get("tool_input") or {}
    dry = is_dry_run(tool, args)
    if hook == "post" and dry:
        return OK  # a plan changed nothing: nothing to verify
    if args.get("cluster"):
        os.environ["RAFT_MANAGER_CLUSTER"] = str(args["cluster"])
    found = verdict(hook, f"{tool} {json.dumps(args, sort_keys=True)}")
    text = found.render(hook)
    if hook == "pre" and found.code == BAD and not dry and blocks(tool, args):
        sys.stderr.write(f"{text}\nblocked: the cluster is unhealthy; repair it first\n")
        return 2
    answer: dict[str, Any] = {
        "hookSpecificOutput": {"hookEventName": name, "additionalContext": text}
    }
    if hook == "post" and found.code == BAD:
        answer |= {"decision": "block", "reason": text}
    print(json.dumps(answer))
    return OK


def main(hook: str, argv: list[str] | None = None) -> int:
    if argv == ["--event"]:
        try:
            event = json.load(sys.stdin)
        except ValueError as e:
            sys.stderr.write(f"agent-raft-manager {hook}: the event on stdin is not JSON: {e}\n")
            return BAD
        return tool_event(hook, event)
    if argv:
        sys.stderr.write(f"usage: hooks/{hook} [--event]   (--event: a host's event on stdin)\n")
        return UNCHECKED
    return verdict(hook, os.environ.get("TASK", "")).emit(hook)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "pre", sys.argv[2:]))
