"""``raft-manager chaos``: clients and a nemesis against real processes, then a verdict.

1. Refuse unless the cluster is a sandbox (the ``inject_fault`` policy); a named
   cluster must be local (its processes are killed and paused). By default a fresh
   throwaway cluster of three ``raft-node --allow-fault-injection`` processes is
   started in ``OUT/cluster`` and stopped at the end.
2. Run the clients and the seeded nemesis schedule for ``duration_s``.
3. Heal everything, wait until every member applied the same index, read every key
   linearizably (client ``final``), and run ``verify_consistency``.
4. Judge: linearizability of the whole history, lost acknowledged writes,
   convergence, consistency. Save ``history.jsonl``, ``timeline.html`` and
   ``verdict.json`` in the out dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .. import policy
from ..audit import AuditLog
from ..config import ClusterConfig, Config, state_dir
from ..errors import ConfigError
from ..local import free_base_port
from ..local_cluster import CLUSTER_FILE, ClusterError, LocalCluster, LocalSettings
from ..models import VerifyReport
from ..operations import Manager, make_adapter
from ..plans import PlanStore
from .checks import check_linearizable, lost_writes
from .models import Anomaly, ChaosVerdict, FaultEvent, OpCounts
from .nemesis import Nemesis
from .schedule import PARTIAL, UNSUPPORTED, make_schedule
from .timeline import write_timeline
from .workload import Client, History, Members, Op, run_client

CONVERGE_S = 30.0
DEFAULT_CLIENTS = 5
Log = Callable[[str], None]


@dataclass
class ChaosOptions:
    duration_s: float = 60.0
    nemeses: list[str] = field(default_factory=list)
    seed: int = 0
    out_dir: Path | None = None
    clients: int = DEFAULT_CLIENTS
    cluster: ClusterConfig | None = None  # None: a throwaway local cluster
    config: Config | None = None
    tick_ms: int = 30
    election_ticks: int = 10


def default_out_dir(seed: int) -> Path:
    return state_dir() / "chaos" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"


def run_chaos(opts: ChaosOptions, log: Log = lambda s: None) -> ChaosVerdict:
    """One chaos run, start to verdict. Raises ``Refused`` on a production cluster."""
    t0 = time.monotonic()
    named = opts.cluster
    if named is not None:
        policy.check(
            cluster=named.name,
            mode=named.mode,
            read_only=named.read_only,
            allowed_operations=named.allowed_operations,
            operation="inject_fault",
        )
        if not named.dir:
            raise ConfigError(
                f"cluster {named.name!r} is not local: chaos kills and pauses member processes",
                "run chaos on a local sandbox cluster (one with `dir:`), or on none for a "
                "throwaway cluster",
            )
    out = Path(opts.out_dir or default_out_dir(opts.seed)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    throwaway = named is None
    cdir = out / "cluster" if named is None else Path(str(named.dir))
    try:
        if throwaway:
            settings = LocalSettings(
                allow_fault_injection=True,
                tick_ms=opts.tick_ms,
                election_ticks=opts.election_ticks,
            )
            log(f"starting a throwaway 3-node cluster in {cdir}")
            LocalCluster.up(cdir, nodes=3, base_port=free_base_port(17000), settings=settings)
            cluster = ClusterConfig(name=f"chaos-seed{opts.seed}", dir=str(cdir), mode="sandbox")
            config = Config(clusters={cluster.name: cluster}, audit_log=str(out / "audit.jsonl"))
        else:
            assert named is not None
            cluster = named
            config = opts.config or Config(clusters={named.name: named})
        adapter, token = make_adapter(cluster)
        mgr = Manager(
            cluster,
            config=config,
            adapter=adapter,
            audit=AuditLog(config.audit_path()),
            plans=PlanStore(out / "plans"),
        )
        mgr.audit.add_secret(token)
        try:
            return asyncio.run(_run(opts, out, cdir, mgr, token, log, t0))
        finally:
            mgr.close()
    finally:
        if throwaway and (cdir / CLUSTER_FILE).exists():
            log("stopping the throwaway cluster")
            with contextlib.suppress(ClusterError):
                _resume_all(cdir)
                LocalCluster.load(cdir).down()


def _resume_all(cdir: Path) -> None:
    """SIGCONT every member (a run cut short may leave one paused)."""
    lc = LocalCluster.load(cdir)
    for n in lc.nodes:
        if n.pid and lc.alive(n):
            with contextlib.suppress(ProcessLookupError):
                os.kill(n.pid, signal.SIGCONT)


async def _run(
    opts: ChaosOptions,
    out: Path,
    cdir: Path,
    mgr: Manager,
    token: str | None,
    log: Log,
    t0: float,
) -> ChaosVerdict:
    history = History()
    run_id = uuid.uuid4().hex[:8]
    lc = LocalCluster.load(cdir)
    members = Members({n.id: n.api_address for n in lc.nodes})
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(headers=headers, limits=limits) as http:
        nemesis = Nemesis(cdir, mgr, members, http, history, log)
        await nemesis.heal()  # a named cluster may carry faults from before
        schedule = make_schedule(opts.seed, opts.duration_s, opts.nemeses)
        log(f"seed {opts.seed}: {len(schedule)} fault steps over {opts.duration_s:.0f}s")
        stopping = False
        clients = [
            Client(
                f"c{i}",
                history,
                members,
                http,
                random.Random(opts.seed * 1000 + i),
                session=f"chaos-{run_id}-c{i}",
            )
            for i in range(opts.clients)
        ]
        tasks = [asyncio.create_task(run_client(c, lambda: stopping)) for c in clients]
        try:
            await nemesis.run(schedule, opts.duration_s)
            left = opts.duration_s - history.now()
            if left > 0:
                await asyncio.sleep(left)
        finally:
            stopping = True
            await asyncio.gather(*tasks, return_exceptions=True)
            await nemesis.heal()
        log(f"{history.now():7.1f}s  healed; waiting for the members to converge")
        converged, how = await _converge(nemesis)
        final = Client("final", history, members, http, random.Random(opts.seed))
        final_reads: dict[str, Op] = {}
        for key in sorted({op.key for op in history.ops}):
            for _ in range(3):
                final_reads[key] = await final.get(key)
                if final_reads[key].status == "ok":
                    break
        report = await asyncio.to_thread(mgr.verify_consistency)
        nodes = sorted(members.addresses)
    faults = nemesis.events
    log(f"{history.now():7.1f}s  checking {len(history.ops)} operations")
    return judge(opts, out, history, faults, final_reads, converged, how, report, nodes, cdir, t0)


async def _converge(nemesis: Nemesis) -> tuple[bool, str]:
    """Wait until a leader exists and every member applied its commit index."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONVERGE_S
    last = ""
    stable = 0
    while loop.time() < deadline:
        sts = await nemesis.statuses()
        lead = [n for n, st in sts.items() if st.get("role") == "leader"]
        applied = {n: st.get("applied_index") for n, st in sts.items()}
        missing = sorted(set(nemesis.members.addresses) - set(sts))
        last = f"leader {lead or 'none'}, applied {applied}" + (
            f", unreachable {missing}" if missing else ""
        )
        if len(lead) == 1 and not missing:
            commit = sts[lead[0]].get("commit_index")
            if all(a == commit for a in applied.values()):
                stable += 1
                if stable >= 2:
                    return True, f"all members at index {commit}"
            else:
                stable = 0
        await asyncio.sleep(0.2)
    return False, f"not converged after {CONVERGE_S:.0f}s: {last}"


def judge(
    opts: ChaosOptions,
    out: Path,
    history: History,
    faults: list[FaultEvent],
    final_reads: dict[str, Op],
    converged: bool,
    how: str,
    report: VerifyReport,
    nodes: list[str],
    cdir: Path,
    t0: float,
) -> ChaosVerdict:
    """Every check over what the run recorded; writes the history, timeline and verdict."""
    ops = history.ops
    check, anomalies = check_linearizable(ops)
    anomalies += lost_writes(ops, final_reads)
    if not converged:
        anomalies.append(Anomaly(kind="not-converged", message=how))
    unread = sorted(k for k, op in final_reads.items() if op.status != "ok")
    if unread:
        anomalies.append(
            Anomaly(
                kind="not-converged",
                message=f"the final linearizable read failed for {len(unread)} key(s): "
                f"{', '.join(unread[:10])}",
            )
        )
    if report.consistent is False:
        for d in report.divergences:
            anomalies.append(Anomaly(kind="divergence", message=d.model_dump_json()))
        if not report.divergences:
            anomalies.append(Anomaly(kind="divergence", message="; ".join(report.reasons)))
    elif report.consistent is None:
        anomalies.append(Anomaly(kind="unverified", message="; ".join(report.reasons)))
    status = Counter(op.status for op in ops)
    counts = OpCounts(
        operations=len(ops),
        ok=status["ok"],
        failed=status["fail"],
        indeterminate=status["info"],
        by_kind=dict(sorted(Counter(op.kind for op in ops).items())),
    )
    notes = [UNSUPPORTED[k] for k in opts.nemeses if k in UNSUPPORTED]
    notes += [PARTIAL[k] for k in opts.nemeses if k in PARTIAL]
    history_path, timeline_path = out / "history.jsonl", out / "timeline.html"
    verdict = ChaosVerdict(
        ok=not anomalies,
        linearizable=check == "ok",
        check=check,  # type: ignore[arg-type]
        anomalies=anomalies,
        seed=opts.seed,
        duration_s=opts.duration_s,
        elapsed_s=round(time.monotonic() - t0, 1),
        nemeses=opts.nemeses,
        notes=notes,
        cluster=str(cdir),
        nodes=nodes,
        counts=counts,
        faults=dict(sorted(Counter(f.kind for f in faults if f.applied).items())),
        faults_refused=sum(not f.applied for f in faults),
        fault_events=faults,
        membership_via="manager (change_membership add_voter/remove; elect_leader for transfers)",
        consistent=report.consistent,
        common_index=report.common_index,
        history_path=str(history_path),
        timeline_path=str(timeline_path),
        out_dir=str(out),
        logs=sorted(str(p) for p in cdir.glob("*.log")),
    )
    history.save(history_path)
    write_timeline(timeline_path, verdict, ops, faults)
    (out / "verdict.json").write_text(verdict.model_dump_json(indent=2) + "\n")
    return verdict


__all__ = ["ChaosOptions", "default_out_dir", "judge", "run_chaos"]
