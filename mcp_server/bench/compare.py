"""``raft-manager bench``: ours, etcd and PySyncObj, each a 3-node cluster of separate
processes on loopback, one after the other, in one invocation.

Each system runs its workloads (closed-loop writes and linearizable reads at each
concurrency, embedded proposals for ours, failover rounds, and, outside ``--quick``,
our learner catch-up on a log of a million entries); each cell is run ``runs`` times
and the medians are reported, with the ratio of ours to each peer and the issue's
targets marked met or not. The result is one JSON-able document: :func:`run_compare`
builds it, :mod:`.report` renders it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from raft_core.node.eventloop import loop_runner

from .procinfo import load_average, machine

PEERS = ("etcd", "pysyncobj")
QUICK_DURATION_S = 1.0
WARMUP_S = 0.5  # every workload's warm-up before its measured window
_KEYS = ("throughput", "p50_ms", "p99_ms", "client_cpu_s", "leader_cpu_s", "leader_cpu_us_per_op")

Progress = Callable[[str], None]


@dataclass
class BenchOptions:
    quick: bool = False
    compare: tuple[str, ...] = ()
    runs: int = 3
    duration_s: float = 5.0
    clients: tuple[int, ...] = (1, 16, 64)
    failovers: int = 5
    catchup_entries: int = 1_000_000  # 0: skip (always skipped with quick)
    fsync_modes: tuple[str, ...] = ("always", "never")
    tls: bool = True  # also ours as `cluster up` starts it: TLS for the API and peers
    notes: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, *, quick: bool, **given: Any) -> BenchOptions:
        """Defaults, shrunk by ``quick`` (1 s cells, 1 run, 1 failover, no catch-up),
        then whatever was given explicitly (None means not given)."""
        opts = cls(quick=quick)
        if quick:
            opts.duration_s, opts.runs, opts.failovers = QUICK_DURATION_S, 1, 1
            opts.catchup_entries = 0
        for k, v in given.items():
            if v is not None:
                setattr(opts, k, v)
        unknown = set(opts.compare) - set(PEERS)
        if unknown:
            raise ValueError(f"--compare takes {', '.join(PEERS)}; not {', '.join(unknown)}")
        return opts


def _per_op_us(run: dict, duration_s: float) -> float | None:
    """The leader's CPU per operation: steadier than ops/s on a shared machine, and it
    shows whether a system is CPU-bound (its CPU time covers the warm-up as well)."""
    cpu, thr = run.get("leader_cpu_s"), run.get("throughput")
    return round(cpu / (thr * (duration_s + WARMUP_S)) * 1e6, 1) if cpu and thr else None


def _median_cell(clients: int, runs: list[dict], duration_s: float) -> dict:
    runs = [{**r, "leader_cpu_us_per_op": _per_op_us(r, duration_s)} for r in runs]
    cell: dict[str, Any] = {"clients": clients}
    for k in _KEYS:
        vals = [r[k] for r in runs if r.get(k) is not None]
        cell[k] = round(statistics.median(vals), 3) if vals else None
    cell["errors"] = sum(r.get("errors", 0) for r in runs)
    cell["runs"] = [{k: r.get(k) for k in (*_KEYS, "errors")} for r in runs]
    return cell


def _cells(fn: Callable[[int, float], dict], opts: BenchOptions, say: Progress, what: str) -> list:
    out = []
    for n in opts.clients:
        say(f"{what}, {n} clients, {opts.runs} x {opts.duration_s:g}s")
        runs = [fn(n, opts.duration_s) for _ in range(opts.runs)]
        out.append(_median_cell(n, runs, opts.duration_s))
    return out


def _failovers(fn: Callable[[], float], rounds: int, say: Progress, what: str) -> dict | None:
    if rounds < 1:
        return None
    times = []
    for i in range(rounds):
        say(f"{what}: failover round {i + 1}/{rounds}")
        times.append(round(fn(), 3))
        time.sleep(0.5)
    return {"rounds_s": times, "median_s": statistics.median(times), "max_s": max(times)}


def _system(name: str, label: str, notes: list[str]) -> dict:
    return {"name": name, "label": label, "notes": notes, "load_avg_start": load_average()}


def bench_ours(fsync: str, opts: BenchOptions, say: Progress) -> dict:
    from .ours import OursCluster, run_embedded

    name = "ours" if fsync == "always" else "ours-nosync"
    notes = [
        "linearizable reads spread round-robin over all three nodes "
        "(followers serve them through ReadIndex on the leader)"
    ]
    notes.append(f"event loop: {loop_runner()[0]} (raft-node and the embedded node)")
    sysd = _system(name, f"ours, --fsync {fsync}", notes)
    with OursCluster(fsync) as c:
        sysd["write"] = _cells(c.write, opts, say, f"{name} writes")
        sysd["read"] = _cells(c.read, opts, say, f"{name} linearizable reads")
        if fsync == "always":
            sysd["failover"] = _failovers(c.failover, opts.failovers, say, name)
            if opts.catchup_entries:
                say(f"{name}: filling {opts.catchup_entries:,} entries, then adding a learner")
                sysd["catchup"] = c.catchup(opts.catchup_entries)
    say(f"{name} embedded proposals (library API, callers in the leader process)")
    levels = run_embedded(fsync, list(opts.clients), opts.duration_s, opts.runs)
    sysd["embedded"] = [_median_cell(lv["clients"], lv["runs"], opts.duration_s) for lv in levels]
    return sysd


def bench_ours_tls(opts: BenchOptions, say: Progress) -> dict:
    """Ours as `cluster up` starts it (TLS on the API and between peers, durable): what
    security costs. The other rows run plain HTTP, as etcd's gateway does here."""
    from .ours import OursCluster

    sysd = _system("ours-tls", "ours, --fsync always, TLS (API and peers)", [])
    with OursCluster("always", tls=True) as c:
        sysd["write"] = _cells(c.write, opts, say, "ours-tls writes")
        sysd["read"] = _cells(c.read, opts, say, "ours-tls linearizable reads")
    return sysd


def bench_etcd(opts: BenchOptions, say: Progress) -> dict:
    from ..local.etcd import INSTALL_HINT, binary_version, find_binary
    from .etcd_system import EtcdCluster

    binary = find_binary("etcd")
    if binary is None:
        raise RuntimeError(f"no etcd binary for --compare etcd; {INSTALL_HINT}")
    version = binary_version(binary)
    sysd = _system(
        "etcd",
        f"etcd {version}",
        [f"etcd {version} ({binary}) through its JSON gateway; fsync on every commit"],
    )
    with EtcdCluster(binary) as c:
        sysd["write"] = _cells(c.write, opts, say, "etcd writes")
        sysd["read"] = _cells(c.read, opts, say, "etcd linearizable reads")
        sysd["failover"] = _failovers(c.failover, opts.failovers, say, "etcd")
    return sysd


def bench_pysyncobj(opts: BenchOptions, say: Progress) -> dict:
    from .pysyncobj_system import NOTE, PySyncObjCluster

    sysd = _system("pysyncobj", "PySyncObj (no fsync, in-process callers)", [NOTE])
    with PySyncObjCluster() as c:
        sysd["write"] = _cells(c.write, opts, say, "PySyncObj writes (in-process)")
        sysd["failover"] = _failovers(c.failover, opts.failovers, say, "pysyncobj")
    return sysd


def run_compare(opts: BenchOptions, say: Progress = lambda _: None) -> dict:
    """Run every system in turn; the whole result document."""
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: v for k, v in asdict(opts).items() if k != "notes"},
        "systems": [],
    }
    for mode in opts.fsync_modes:
        doc["systems"].append(bench_ours(mode, opts, say))
    if opts.tls:
        doc["systems"].append(bench_ours_tls(opts, say))
    if "etcd" in opts.compare:
        doc["systems"].append(bench_etcd(opts, say))
    if "pysyncobj" in opts.compare:
        doc["systems"].append(bench_pysyncobj(opts, say))
    doc["ratios"] = ratios(doc["systems"])
    doc["targets"] = targets(doc["systems"])
    return doc


# --------------------------------------------------------------------------- comparison


def _by_name(systems: list[dict]) -> dict[str, dict]:
    return {s["name"]: s for s in systems}


def _cell(s: dict | None, workload: str, clients: int) -> dict | None:
    for c in (s or {}).get(workload) or []:
        if c["clients"] == clients:
            return c
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def ratios(systems: list[dict]) -> dict[str, dict]:
    """ours/peer write and read throughput per concurrency, p50 (peer/ours: above 1 means
    ours is quicker), and our embedded proposals against PySyncObj's in-process writes."""
    by = _by_name(systems)
    ours = by.get("ours")
    out: dict[str, dict] = {}
    for peer in PEERS:
        p = by.get(peer)
        if ours is None or p is None:
            continue
        r: dict[str, Any] = {}
        for c in ours.get("write", []):
            n, pc = c["clients"], _cell(p, "write", c["clients"])
            if pc is None:
                continue
            r[f"write_{n}"] = _ratio(c["throughput"], pc["throughput"])
            r[f"write_p50_{n}_peer_over_ours"] = _ratio(pc["p50_ms"], c["p50_ms"])
            rc, prc = _cell(ours, "read", n), _cell(p, "read", n)
            if rc and prc:
                r[f"read_{n}"] = _ratio(rc["throughput"], prc["throughput"])
            ec = _cell(ours, "embedded", n)
            if ec and peer == "pysyncobj":
                r[f"embedded_{n}"] = _ratio(ec["throughput"], pc["throughput"])
        fo, pfo = ours.get("failover"), p.get("failover")
        if fo and pfo:
            r["failover_median_peer_over_ours"] = _ratio(pfo["median_s"], fo["median_s"])
        out[peer] = r
    return out


def _target(name: str, met: bool | None, measured: str) -> dict:
    return {"target": name, "met": met, "measured": measured}


def _ratio_target(name: str, ratio: float | None, need: float, shown: str = "{r}x") -> dict:
    """A target that a throughput ratio of at least ``need`` meets (None: not measured)."""
    if ratio is None:
        return _target(name, None, "not measured")
    return _target(name, ratio >= need, shown.format(r=ratio))


def targets(systems: list[dict]) -> list[dict]:
    """The issue's speed targets, each met / not met / not measured (None)."""
    by = _by_name(systems)
    ours, etcd, pso = by.get("ours"), by.get("etcd"), by.get("pysyncobj")
    out = []

    def thr(s: dict | None, w: str, n: int) -> float | None:
        c = _cell(s, w, n)
        return c["throughput"] if c else None

    def p50(s: dict | None, w: str, n: int) -> float | None:
        c = _cell(s, w, n)
        return c["p50_ms"] if c else None

    for n, need in ((16, 1.5), (64, 2.0)):
        r = _ratio(thr(ours, "write", n), thr(etcd, "write", n))
        out.append(_ratio_target(f"durable writes at {n} clients >= {need}x etcd", r, need))
    a, b = p50(ours, "write", 1), p50(etcd, "write", 1)
    out.append(
        _target(
            "1 client: p50 below etcd's and <= 1.0 ms",
            None if a is None or b is None else a < b and a <= 1.0,
            f"ours {a} ms, etcd {b} ms" if a is not None and b is not None else "not measured",
        )
    )
    r = _ratio(thr(ours, "write", 64), thr(pso, "write", 64))
    out.append(_ratio_target("64 clients durable >= PySyncObj (which does not fsync)", r, 1.0))
    ns = [c["clients"] for c in (ours or {}).get("embedded", [])]
    top = max(ns) if ns else 0
    r = _ratio(thr(ours, "embedded", top), thr(pso, "write", top))
    out.append(
        _ratio_target(
            f"embedded proposals, durable, >= 1.5x PySyncObj in-process ({top} clients)", r, 1.5
        )
    )
    r = _ratio(thr(ours, "read", 64), thr(ours, "write", 64))
    out.append(
        _ratio_target(
            "linearizable reads served by followers too, >= 2x the write rate at 64",
            r,
            2.0,
            "reads on all 3 nodes (ReadIndex) {r}x writes",
        )
    )
    fo, pfo = (ours or {}).get("failover"), (pso or {}).get("failover")
    if fo:
        ok = fo["median_s"] <= 0.5 and (pfo is None or fo["median_s"] <= pfo["median_s"])
        peer = f", PySyncObj {pfo['median_s']} s" if pfo else ""
        out.append(
            _target(
                "failover median <= 0.5 s and no worse than PySyncObj",
                ok,
                f"ours {fo['median_s']} s (max {fo['max_s']} s){peer}",
            )
        )
    cu = (ours or {}).get("catchup")
    if cu:
        out.append(
            _target(
                f"learner catch-up on {cu['entries']:,} entries < 10 s",
                cu["catchup_s"] < 10,
                f"{cu['catchup_s']} s",
            )
        )
        rss = [v for v in cu["peak_rss_mb"].values() if v is not None]
        out.append(
            _target(
                "peak RSS per node < 150 MB",
                bool(rss) and max(rss) < 150,
                f"max {max(rss) if rss else '?'} MiB",
            )
        )
    return out
