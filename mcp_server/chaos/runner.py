"""``raft-manager chaos``: clients and a nemesis against real processes, then a verdict.

1. The whole run goes through the manager's guard as operation ``chaos`` (policy: a
   sandbox-only, destructive operation; one audit line): a production cluster is
   refused before anything runs. A named cluster must be local (its processes are
   killed and paused): a raft-node cluster (``cluster up``) or an etcd one
   (``etcd up``). By default a fresh throwaway cluster of three
   ``raft-node --allow-fault-injection`` processes is started in ``OUT/cluster`` and
   stopped at the end.
2. Run the clients and the seeded nemesis schedule for ``duration_s`` (the variants the
   cluster's kind can serve: ``target.py``).
3. Heal everything, wait until every member applied the same index, read every key
   linearizably (client ``final``), and run ``verify_consistency``.
4. Judge: linearizability of the whole history, lost acknowledged writes,
   convergence, consistency. Save ``history.jsonl``, ``timeline.html`` and
   ``verdict.json`` in the out dir.

``progress(done, total, message)`` hears of each fault and phase (the MCP tool forwards
it as progress notifications).
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

from ..core import ClusterConfig, Config, InputError, ProgressFn, VerifyReport
from ..core.audit import AuditLog
from ..core.config import state_dir
from ..core.context import quiet
from ..core.plans import PlanStore
from ..core.policy import CHAOS
from ..local import CLUSTER_FILE, ClusterError, LocalCluster, LocalSettings, free_base_port
from ..manager import Manager, make_adapter
from .checks import check_linearizable, lost_writes
from .models import Anomaly, ChaosVerdict, FaultEvent, OpCounts
from .nats import run_nats_chaos
from .nemesis import Nemesis
from .nft import NftTarget
from .schedule import make_schedule
from .target import RaftNodeTarget, Target, target_class
from .timeline import write_timeline
from .workload import Client, History, Members, Op, run_client

CONVERGE_S = 30.0
DEFAULT_CLIENTS = 5
# Kinds whose clients do not speak HTTP (NATS) run a loop of their own, start to
# verdict; every other kind is a ``Target`` the shared loop below drives.
OWN_LOOPS: dict[str, Callable[..., ChaosVerdict]] = {"nats": run_nats_chaos}
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
    # "api": partitions through the node fault API; "nft": nftables rules in the members'
    # network namespaces (``nft.NftTarget``).
    network: str = "api"
    tick_ms: int = 30
    election_ticks: int = 10


def default_out_dir(seed: int) -> Path:
    return state_dir() / "chaos" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"


def run_chaos(
    opts: ChaosOptions, log: Log = lambda s: None, progress: ProgressFn = quiet
) -> ChaosVerdict:
    """One chaos run, start to verdict. Raises ``Refused`` on a production cluster."""
    t0 = time.monotonic()
    out = Path(opts.out_dir or default_out_dir(opts.seed)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if opts.cluster is not None:
        config = opts.config or Config(clusters={opts.cluster.name: opts.cluster})
        return _guarded_run(opts, opts.cluster, config, out, log, progress, t0)
    cdir = out / "cluster"
    settings = LocalSettings(
        allow_fault_injection=True, tick_ms=opts.tick_ms, election_ticks=opts.election_ticks
    )
    try:
        log(f"starting a throwaway 3-node cluster in {cdir}")
        LocalCluster.up(cdir, nodes=3, base_port=free_base_port(17000), settings=settings)
        cluster = ClusterConfig(name=f"chaos-seed{opts.seed}", dir=str(cdir), mode="sandbox")
        config = Config(clusters={cluster.name: cluster}, audit_log=str(out / "audit.jsonl"))
        return _guarded_run(opts, cluster, config, out, log, progress, t0)
    finally:
        if (cdir / CLUSTER_FILE).exists():
            log("stopping the throwaway cluster")
            with contextlib.suppress(ClusterError):
                _resume_all(cdir)
                LocalCluster.load(cdir).down()


def _guarded_run(
    opts: ChaosOptions,
    cluster: ClusterConfig,
    config: Config,
    out: Path,
    log: Log,
    progress: ProgressFn,
    t0: float,
) -> ChaosVerdict:
    """The run under the manager's guard (policy, one audit line), as operation chaos."""
    adapter, token = make_adapter(cluster)
    mgr = Manager(
        cluster,
        config=config,
        adapter=adapter,
        audit=AuditLog(config.audit_path()),
        plans=PlanStore(out / "plans"),
    )
    mgr.audit.add_secret(token)
    arguments = {
        "duration_s": opts.duration_s,
        "nemeses": opts.nemeses,
        "seed": opts.seed,
        "clients": opts.clients,
    }

    def body() -> ChaosVerdict:
        if not cluster.dir:
            raise InputError(
                f"cluster {cluster.name!r} is not local: chaos kills and pauses member processes",
                "run chaos on a local sandbox cluster (one with `dir:`), or on none for a "
                "throwaway cluster",
            )
        own_loop = OWN_LOOPS.get(cluster.kind)
        if own_loop is not None:
            return own_loop(
                mgr,
                Path(str(cluster.dir)),
                duration_s=opts.duration_s,
                seed=opts.seed,
                clients=opts.clients,
                nemeses=opts.nemeses,
                out=out,
                log=log,
            )
        kind = target_class(cluster.kind)
        kind.refuse(cluster)
        target = kind(Path(str(cluster.dir)))
        if opts.network == "nft":
            if not target.nft:
                raise InputError(
                    f"--network nft drives raft-node clusters; {cluster.name!r} is {cluster.kind}",
                    "run chaos on it without --network",
                )
            target = NftTarget(Path(str(cluster.dir)))
        return asyncio.run(_run(opts, out, target, mgr, token, log, progress, t0))

    try:
        return mgr.guarded(CHAOS, arguments, body)
    finally:
        mgr.close()


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
    target: Target,
    mgr: Manager,
    token: str | None,
    log: Log,
    progress: ProgressFn,
    t0: float,
) -> ChaosVerdict:
    run_id = uuid.uuid4().hex[:8]
    history = History(prefix=f"chaos-{run_id}-")
    members = Members(target.addresses(), target.scheme())
    # raft-node takes the token as a bearer token (an etcd cluster with auth is refused).
    bearer = token if isinstance(target, RaftNodeTarget) else None
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(headers=headers, limits=limits, verify=target.verify()) as http:

        def note(message: str) -> None:
            log(message)
            progress(history.now(), opts.duration_s, message.strip())

        nemesis = Nemesis(target, mgr, members, http, history, note)
        await nemesis.heal()  # a named cluster may carry faults from before
        schedule = make_schedule(opts.seed, opts.duration_s, opts.nemeses, target.variants)
        note(f"seed {opts.seed}: {len(schedule)} fault steps over {opts.duration_s:.0f}s")
        stopping = False
        clients = [
            Client(
                f"c{i}",
                history,
                members,
                http,
                random.Random(opts.seed * 1000 + i),
                session=f"chaos-{run_id}-c{i}",
                dialect=target.dialect,
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
        note(f"{history.now():7.1f}s  healed; waiting for the members to converge")
        converged, how = await _converge(nemesis)
        final = Client(
            "final", history, members, http, random.Random(opts.seed), dialect=target.dialect
        )
        final_reads: dict[str, Op] = {}
        for key in sorted({op.key for op in history.ops}):
            for _ in range(3):
                final_reads[key] = await final.get(key)
                if final_reads[key].status == "ok":
                    break
        report = await asyncio.to_thread(mgr.verify_consistency)
        nodes = sorted(members.addresses)
    faults = nemesis.events
    note(f"{history.now():7.1f}s  checking {len(history.ops)} operations")
    return judge(opts, out, history, faults, final_reads, converged, how, report, nodes, target, t0)


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
    target: Target,
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
    notes = target.notes_for(opts.nemeses)
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
        network=opts.network,
        notes=notes,
        cluster=str(target.dir),
        nodes=nodes,
        counts=counts,
        faults=dict(sorted(Counter(f.kind for f in faults if f.applied).items())),
        faults_refused=sum(not f.applied for f in faults),
        fault_events=faults,
        membership_via="manager (change_membership add_voter/remove; elect_leader for transfers)",
        kind=target.kind,
        consistent=report.consistent,
        common_index=report.common_index,
        history_path=str(history_path),
        timeline_path=str(timeline_path),
        out_dir=str(out),
        logs=target.logs(),
    )
    history.save(history_path)
    write_timeline(timeline_path, verdict, ops, faults)
    (out / "verdict.json").write_text(verdict.model_dump_json(indent=2) + "\n")
    return verdict


__all__ = ["ChaosOptions", "default_out_dir", "judge", "run_chaos"]
