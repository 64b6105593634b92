"""``raft-manager demo``: the whole story on a fresh local cluster in well under a minute.

Start, status, replicate, read, transfer leadership, kill the leader and watch the
failover, see an unsafe change refused, recover the killed node, add a learner,
promote it, remove the leader (leadership moves first), verify; then what an agent
sees: a real MCP client session over stdio against ``raft-manager-mcp``
(``demo_mcp.py``: status, health, a planned and applied membership change, an unsafe
request refused, a leadership transfer, verification); stop. Each step is one narrated
line with its result and timing. Transient failures (an election in flight) are
retried; the cluster is always stopped at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core import ClusterConfig, DemoReport, DemoStep, ManagerError, Refused
from ..core.config import state_dir
from ..local import ClusterError, LocalCluster, LocalSettings, free_base_port, is_running
from ..manager import Manager

Narrate = Callable[[DemoStep], None]
Spinner = Callable[[str], Any]  # returns a context manager yielding a ProgressFn
Progress = Any

DEMO_BASE_PORT = 7400
RETRY_PAUSE_S = 0.5


class _StepFailed(Exception):
    pass


class _Story:
    """The demo's steps, in order; each returns the line narrated for it."""

    def __init__(self, d: Path, base: int, settings: LocalSettings) -> None:
        self.d, self.base, self.settings = d, base, settings
        self.cfg = ClusterConfig(name="demo", dir=str(d), mode="sandbox")
        self.mgr: Manager | None = None
        self.killed: str | None = None
        self.killed_at = 0.0

    @property
    def m(self) -> Manager:
        assert self.mgr is not None
        return self.mgr

    def steps(self) -> list[tuple[str, Callable[[Progress], str], int]]:
        """(title, step, attempts)."""
        return [
            ("start a 3-node cluster", self.start, 1),
            ("status", self.status, 5),
            ("replicate 5 entries", self.replicate, 3),
            ("linearizable read", self.read, 3),
            ("transfer leadership", self.transfer, 3),
            ("kill the leader", self.kill, 2),
            ("watch the failover", self.failover, 1),
            ("try an unsafe change", self.unsafe, 2),
            ("recover the killed node", self.recover, 2),
            ("add learner n4", self.add_learner, 2),
            ("promote n4", self.promote, 3),
            ("remove the leader", self.remove_leader, 3),
            ("verify consistency", self.verify, 3),
        ]

    def start(self, progress: Progress) -> str:
        t0 = time.monotonic()
        self.mgr = Manager(self.cfg)
        args = {"dir": str(self.d), "nodes": 3, "base_port": self.base}
        lc = self.mgr.guarded(  # the launcher, audited like `raft-manager cluster up`
            "cluster_up",
            args,
            lambda: LocalCluster.up(self.d, nodes=3, base_port=self.base, settings=self.settings),
        )
        leader = lc.wait_for_leader()
        return (
            f"3 raft-node processes in {self.d}; {leader} elected in {time.monotonic() - t0:.1f}s"
        )

    def status(self, progress: Progress) -> str:
        st = self.m.status()
        if st.leader is None:
            raise _StepFailed("no leader yet")
        return (
            f"leader {st.leader}, term {st.term}, {st.reachable_voters}/{len(st.voters)} voters "
            f"available, {len(st.warnings)} warnings"
        )

    def replicate(self, progress: Progress) -> str:
        words = ["raft", "is", "a", "consensus", "algorithm"]
        r = self.m.replicate({f"demo/{i}": v for i, v in enumerate(words)}).result
        assert r is not None
        idx = [e.index for e in r.entries]
        term = r.entries[-1].term
        return f"{len(idx)} entries committed at indexes {idx[0]}-{idx[-1]} in term {term}"

    def read(self, progress: Progress) -> str:
        r = self.m.read("demo/3")
        return f"demo/3 = {r.value!r} (linearizable, from {r.served_by} at index {r.applied_index})"

    def transfer(self, progress: Progress) -> str:
        st = self.m.status()
        target = next(x.id for x in st.members if x.voter and x.id != st.leader)
        e = self.m.elect_leader(target, progress=progress).result
        assert e is not None
        return f"{e.previous_leader} -> {e.leader} in {e.seconds:.2f}s (term {e.term})"

    def kill(self, progress: Progress) -> str:
        leader = self.m.status().leader
        if leader is None:
            raise _StepFailed("no leader to kill")
        self.killed, t = leader, time.monotonic()
        self.m.inject_fault("kill", [leader])
        self.killed_at = t
        return f"{leader} killed with SIGKILL"

    def failover(self, progress: Progress) -> str:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            st = self.m.status()
            if st.leader and st.leader != self.killed:
                took = time.monotonic() - self.killed_at
                return f"{st.leader} elected {took:.2f}s after the kill (term {st.term})"
            progress(0, None, "waiting for the failover")
            time.sleep(0.05)
        raise _StepFailed("no new leader within 15s")

    def unsafe(self, progress: Progress) -> str:
        st = self.m.status()
        victim = next(x.id for x in st.members if x.voter and x.id not in (self.killed, st.leader))
        try:
            self.m.change_membership("remove", victim, dry_run=False)
        except Refused as e:
            return f"remove {victim} while {self.killed} is down: refused ({e.reason})"
        raise _StepFailed(f"removing {victim} was not refused")

    def recover(self, progress: Progress) -> str:
        assert self.killed is not None
        r = self.m.recover_node(self.killed, progress=progress).result
        assert r is not None
        return f"{r.node_id} {r.action}, caught up at index {r.applied_index} in {r.seconds:.1f}s"

    def add_learner(self, progress: Progress) -> str:
        r = self.m.change_membership("add_learner", "n4", dry_run=False, progress=progress).result
        assert r is not None
        caught = r.results[-1].detail.removeprefix("n4 ")
        return f"n4 started and added as a learner, {caught}"

    def promote(self, progress: Progress) -> str:
        r = self.m.change_membership("promote", "n4", dry_run=False, progress=progress).result
        assert r is not None
        return f"n4 is a voter: voters {','.join(r.voters_after)} (quorum {r.quorum_after})"

    def remove_leader(self, progress: Progress) -> str:
        leader = self.m.status().leader
        if leader is None:
            raise _StepFailed("no leader")
        r = self.m.change_membership("remove", leader, dry_run=False, progress=progress).result
        assert r is not None
        moved = next((x.detail for x in r.results if x.action == "transfer_leadership"), "")
        return f"{moved}; {leader} removed, voters {','.join(r.voters_after)}"

    def verify(self, progress: Progress) -> str:
        v = self.m.verify_consistency()
        if v.consistent is not True:
            raise _StepFailed(f"consistent={v.consistent}: {v.divergences or v.reasons}")
        return (
            f"consistent: {len(v.checked)} members agree at index {v.common_index}; "
            f"{v.log_indexes_checked} committed log entries compared"
        )

    def stop(self, progress: Progress) -> str:
        if self.mgr is None or not (self.d / "cluster.yaml").exists():
            return "nothing to stop"
        with self.mgr as mgr:
            stopped = mgr.guarded(
                "cluster_down", {"dir": str(self.d)}, lambda: LocalCluster.load(self.d).down()
            )
        return f"{len(stopped)} processes stopped"


def _run_step(
    n: int, title: str, fn: Callable[[Progress], str], attempts: int, spinner: Spinner
) -> DemoStep:
    """One narrated step: retried on failures (an election in flight), never on refusals."""
    t0 = time.monotonic()
    ok, result = False, ""
    for attempt in range(attempts):
        try:
            with spinner(title) as progress:
                result = fn(progress)
            ok = True
            break
        except Refused as e:
            result = f"refused: {e.reason}"
            break
        except (ManagerError, ClusterError, _StepFailed) as e:
            result = f"failed: {getattr(e, 'reason', str(e))}"
            if attempt + 1 < attempts:
                time.sleep(RETRY_PAUSE_S)
    return DemoStep(n=n, title=title, ok=ok, result=result, seconds=round(time.monotonic() - t0, 2))


def _mcp_session(d: Path, report: Callable[[str, bool, str, float], None]) -> int:
    """The agent's view, one narrated step per MCP call; the number of calls made."""
    from .demo_mcp import run_session  # the MCP SDK loads only for the demo

    made = 0

    def counted(call: str, ok: bool, summary: str, seconds: float) -> None:
        nonlocal made
        made += 1
        report(call, ok, summary, seconds)

    try:
        run_session(d, counted)
    except Exception as e:  # the session itself could not run: one failed step
        counted("session over stdio", False, f"failed: {type(e).__name__}: {e}", 0.0)
    return made


def run_demo(
    directory: Path | str | None = None,
    *,
    base_port: int | None = None,
    narrate: Narrate | None = None,
    spinner: Spinner | None = None,
    keep: bool = False,
    settings: LocalSettings | None = None,
) -> DemoReport:
    d = Path(directory) if directory else state_dir() / "demo"
    narrate = narrate or (lambda s: None)
    spinner = spinner or (lambda msg: contextlib.nullcontext(lambda *a: None))
    t_start = time.monotonic()
    if is_running(d):
        LocalCluster.load(d).down()
    shutil.rmtree(d, ignore_errors=True)
    base = base_port if base_port is not None else free_base_port(DEMO_BASE_PORT)
    if base is None:
        raise ClusterError("no free block of loopback ports found; pass --base-port")
    settings = settings or LocalSettings(tick_ms=30, election_ticks=10, allow_fault_injection=True)
    story = _Story(d, base, settings)
    steps: list[DemoStep] = []

    def step(title: str, fn: Callable[[Progress], str], attempts: int) -> bool:
        s = _run_step(len(steps) + 1, title, fn, attempts, spinner)
        steps.append(s)
        narrate(s)
        return s.ok

    def mcp_call(call: str, ok: bool, summary: str, seconds: float) -> None:
        s = DemoStep(
            n=len(steps) + 1, title=f"MCP {call}", ok=ok, result=summary, seconds=round(seconds, 2)
        )
        steps.append(s)
        narrate(s)

    plot = story.steps()
    mcp_steps = 0
    try:
        for title, fn, attempts in plot:
            if not step(title, fn, attempts):
                break
        else:
            mcp_steps = _mcp_session(d, mcp_call)
    finally:
        if not keep:
            step("stop the cluster", story.stop, 1)
        elif story.mgr is not None:
            story.mgr.close()
    ok = (
        all(s.ok for s in steps)
        and mcp_steps > 0
        and len(steps) == len(plot) + mcp_steps + (0 if keep else 1)
    )
    return DemoReport(ok=ok, dir=str(d), steps=steps, seconds=round(time.monotonic() - t_start, 2))
