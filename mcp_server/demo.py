"""``raft-manager demo``: the whole story on a fresh local cluster in well under a minute.

Start, status, replicate, read, transfer leadership, kill the leader and watch the
failover, see an unsafe change refused, recover the killed node, add a learner,
promote it, remove the leader (leadership moves first), verify; then what an agent
sees: a real MCP client session over stdio against ``raft-manager-mcp`` (status,
health, a planned and applied membership change, an unsafe request refused, a
leadership transfer, verification); stop. Each step is one
narrated line with its result and timing. Transient failures (an election in flight)
are retried; the cluster is always stopped at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ClusterConfig, state_dir
from .errors import ManagerError, Refused
from .local import free_base_port, is_running
from .local_cluster import ClusterError, LocalCluster, LocalSettings
from .models import DemoReport, DemoStep
from .operations import Manager

Narrate = Callable[[DemoStep], None]
Spinner = Callable[[str], Any]  # returns a context manager yielding a ProgressFn


class _StepFailed(Exception):
    pass


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
    steps: list[DemoStep] = []
    t_start = time.monotonic()
    if is_running(d):
        LocalCluster.load(d).down()
    shutil.rmtree(d, ignore_errors=True)
    settings = settings or LocalSettings(tick_ms=30, election_ticks=10, allow_fault_injection=True)
    base = base_port if base_port is not None else free_base_port(7400)
    cfg = ClusterConfig(name="demo", dir=str(d), mode="sandbox")
    mgr: Manager | None = None
    state: dict[str, Any] = {}

    def step(title: str, fn: Callable[[Any], str], *, retries: int = 3) -> bool:
        t0 = time.monotonic()
        ok, result = False, ""
        for attempt in range(retries):
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
                if attempt + 1 < retries:
                    time.sleep(0.5)
        s = DemoStep(
            n=len(steps) + 1,
            title=title,
            ok=ok,
            result=result,
            seconds=round(time.monotonic() - t0, 2),
        )
        steps.append(s)
        narrate(s)
        return ok

    def m() -> Manager:
        assert mgr is not None
        return mgr

    # -- the story -------------------------------------------------------------------------

    def start(progress: Any) -> str:
        nonlocal mgr
        t0 = time.monotonic()
        lc = LocalCluster.up(d, nodes=3, base_port=base, settings=settings)
        mgr = Manager(cfg)
        leader = lc.wait_for_leader()
        return f"3 raft-node processes in {d}; {leader} elected in {time.monotonic() - t0:.1f}s"

    def status(progress: Any) -> str:
        st = m().status()
        if st.leader is None:
            raise _StepFailed("no leader yet")
        state["leader"] = st.leader
        return (
            f"leader {st.leader}, term {st.term}, {st.reachable_voters}/{len(st.voters)} voters "
            f"available, {len(st.warnings)} warnings"
        )

    def replicate(progress: Any) -> str:
        entries = {
            f"demo/{i}": v for i, v in enumerate(["raft", "is", "a", "consensus", "algorithm"])
        }
        r = m().replicate(entries)
        idx = [e.index for e in r.entries]
        term = r.entries[-1].term
        return f"{len(idx)} entries committed at indexes {idx[0]}-{idx[-1]} in term {term}"

    def read(progress: Any) -> str:
        r = m().read("demo/3")
        return f"demo/3 = {r.value!r} (linearizable, from {r.served_by} at index {r.applied_index})"

    def transfer(progress: Any) -> str:
        st = m().status()
        target = next(x.id for x in st.members if x.voter and x.id != st.leader)
        e = m().elect_leader(target, progress=progress)
        state["leader"] = e.leader
        return f"{e.previous_leader} -> {e.leader} in {e.seconds:.2f}s (term {e.term})"

    def kill(progress: Any) -> str:
        leader = m().status().leader
        if leader is None:
            raise _StepFailed("no leader to kill")
        state["killed"] = leader
        t = time.monotonic()
        m().inject_fault("kill", [leader])
        state["killed_at"] = t
        return f"{leader} killed with SIGKILL"

    def failover(progress: Any) -> str:
        killed = state["killed"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            st = m().status()
            if st.leader and st.leader != killed:
                took = time.monotonic() - state["killed_at"]
                return f"{st.leader} elected {took:.2f}s after the kill (term {st.term})"
            progress(0, None, "waiting for the failover")
            time.sleep(0.05)
        raise _StepFailed("no new leader within 15s")

    def unsafe(progress: Any) -> str:
        killed = state["killed"]
        st = m().status()
        victim = next(x.id for x in st.members if x.voter and x.id not in (killed, st.leader))
        try:
            m().change_membership("remove", victim, dry_run=False)
        except Refused as e:
            return f"remove {victim} while {killed} is down: refused ({e.reason})"
        raise _StepFailed(f"removing {victim} was not refused")

    def recover(progress: Any) -> str:
        r = m().recover_node(state["killed"], progress=progress)
        return f"{r.node} {r.action}, caught up at index {r.applied_index} in {r.seconds:.1f}s"

    def add_learner(progress: Any) -> str:
        r = m().change_membership("add_learner", "n4", dry_run=False, progress=progress)
        caught = r.results[-1].detail.removeprefix("n4 ")
        return f"n4 started and added as a learner, {caught}"

    def promote(progress: Any) -> str:
        r = m().change_membership("promote", "n4", dry_run=False, progress=progress)
        return f"n4 is a voter: voters {','.join(r.voters_after)} (quorum {r.quorum_after})"

    def remove_leader(progress: Any) -> str:
        leader = m().status().leader
        if leader is None:
            raise _StepFailed("no leader")
        r = m().change_membership("remove", leader, dry_run=False, progress=progress)
        moved = next((x.detail for x in r.results if x.action == "transfer_leadership"), "")
        return f"{moved}; {leader} removed, voters {','.join(r.voters_after)}"

    def verify(progress: Any) -> str:
        v = m().verify_consistency()
        if v.consistent is not True:
            raise _StepFailed(f"consistent={v.consistent}: {v.divergences or v.reasons}")
        return (
            f"consistent: {len(v.checked)} members agree at index {v.common_index}; "
            f"{v.log_indexes_checked} committed log entries compared"
        )

    story: list[tuple[str, Callable[[Any], str], int]] = [
        ("start a 3-node cluster", start, 1),
        ("status", status, 5),
        ("replicate 5 entries", replicate, 3),
        ("linearizable read", read, 3),
        ("transfer leadership", transfer, 3),
        ("kill the leader", kill, 2),
        ("watch the failover", failover, 1),
        ("try an unsafe change", unsafe, 2),
        ("recover the killed node", recover, 2),
        ("add learner n4", add_learner, 2),
        ("promote n4", promote, 3),
        ("remove the leader", remove_leader, 3),
        ("verify consistency", verify, 3),
    ]

    def mcp_session() -> int:
        """The agent's view: a real MCP session over stdio, one narrated step per call."""
        from .demo_mcp import run_session

        def report(call: str, ok: bool, summary: str, seconds: float) -> None:
            s = DemoStep(
                n=len(steps) + 1,
                title=f"MCP {call}",
                ok=ok,
                result=summary,
                seconds=round(seconds, 2),
            )
            steps.append(s)
            narrate(s)

        before = len(steps)
        try:
            run_session(d, report)
        except Exception as e:  # the session itself could not run: one failed step
            report("session over stdio", False, f"failed: {type(e).__name__}: {e}", 0.0)
        return len(steps) - before

    mcp_steps = 0
    try:
        for title, fn, retries in story:
            if not step(title, fn, retries=retries):
                break
        else:
            mcp_steps = mcp_session()
    finally:
        if not keep:

            def stop(progress: Any) -> str:
                if mgr is not None:
                    mgr.close()
                if not (d / "cluster.yaml").exists():
                    return "nothing to stop"
                stopped = LocalCluster.load(d).down()
                return f"{len(stopped)} processes stopped"

            step("stop the cluster", stop, retries=1)
        elif mgr is not None:
            mgr.close()
    ok = all(s.ok for s in steps) and len(steps) == len(story) + mcp_steps + (0 if keep else 1)
    ok = ok and mcp_steps > 0
    return DemoReport(ok=ok, dir=str(d), steps=steps, seconds=round(time.monotonic() - t_start, 2))
