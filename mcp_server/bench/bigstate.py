"""``raft-manager bench --big-state``: a state that outgrows memory, ours against etcd.

Each system is a fresh 3-node cluster on loopback (ours: durable, plain HTTP, the
on-disk store; etcd: default flags, fsync on every commit, through its JSON gateway).
``writers`` closed-loop clients fill it with ``keys`` unique keys of ``value_size``
bytes through the leader, in one-second windows (no warm-up: a stall must show), and
the report gives, per system:

* per-second write throughput and max latency (every window), errors, leader changes;
* peak RSS per node (``VmHWM``);
* ours: the largest loop stall (the loop-lag probe of each node), snapshot sizes and
  durations (each node's ``/metrics``);
* restart: a follower killed with -9 and started again, until it serves with
  everything it had applied;
* ours: learner catch-up (an empty node added as a learner, until it has applied the
  leader's commit index).

docs/design.md, "The on-disk state machine", states what the numbers are for; the
issue's targets are marked met or not (``targets``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from .loadgen import KVPutRequests, run_load_sync
from .procinfo import load_average, machine, peak_rss_mb, rss_parts_mb

_HEADERS = {"Content-Type": "application/json"}

Progress = Callable[[str], None]


@dataclass
class BigStateOptions:
    keys: int = 1_000_000
    value_size: int = 1024
    writers: int = 16
    compare: tuple[str, ...] = ()

    def check(self) -> None:
        if self.keys < 1 or self.value_size < 1 or self.writers < 1:
            raise ValueError("--keys, the value size and the writers must be positive")
        if set(self.compare) - {"etcd"}:
            raise ValueError("--big-state compares with etcd only: --compare etcd")


def _window(target: Callable[[], tuple[str, int]], make_request: Any, writers: int) -> dict:
    """One second of closed-loop writes through the leader."""
    host, port = target()
    r = run_load_sync(
        host,
        port,
        clients=writers,
        duration_s=1.0,
        make_request=make_request,
        warmup_s=0.0,
        headers=_HEADERS,
    )
    return {
        "throughput": round(r.throughput, 1),
        "max_ms": round(r.max_ms, 1),
        "errors": r.errors,
        "ok": r.requests - (r.errors - r.conn_errors - r.timeouts),
    }


class _RssPeaks:
    """The largest anonymous and file-backed resident sets seen per node, sampled once
    a window: VmHWM gives only their peak sum, and the two mean different things (a
    store's memory map is page cache the kernel can take back)."""

    def __init__(self, pids: Callable[[], dict[str, int]]) -> None:
        self.pids = pids
        self.anon: dict[str, float] = {}
        self.file: dict[str, float] = {}

    def sample(self) -> None:
        for name, pid in self.pids().items():
            parts = rss_parts_mb(pid)
            if parts is not None:
                self.anon[name] = max(self.anon.get(name, 0.0), parts["anon"])
                self.file[name] = max(self.file.get(name, 0.0), parts["file"])


def _fill(
    target: Callable[[], tuple[str, int]],
    requests: Callable[[int], Any],
    opts: BigStateOptions,
    leader_of: Callable[[], str | None],
    say: Progress,
    what: str,
    rss: _RssPeaks,
) -> dict:
    """Write ``opts.keys`` keys in one-second windows; per-window figures."""
    windows: list[dict] = []
    written = errors = 0
    leaders: list[str | None] = [leader_of()]
    started = time.monotonic()
    while written < opts.keys:
        w = _window(target, requests(len(windows)), opts.writers)
        written += w.pop("ok")
        errors += w["errors"]
        windows.append(w)
        rss.sample()
        lead = leader_of()
        if lead != leaders[-1]:
            leaders.append(lead)
        if len(windows) % 10 == 0:
            say(f"{what}: {written:,} of {opts.keys:,} keys written")
    thr = sorted(w["throughput"] for w in windows)
    return {
        "keys_written": written,
        "seconds": round(time.monotonic() - started, 1),
        "errors": errors,
        "leader_changes": len(leaders) - 1,
        "throughput_median": thr[len(thr) // 2],
        "throughput_min": thr[0],
        "worst_max_ms": max(w["max_ms"] for w in windows),
        "windows": windows,
    }


def _wait(pred: Callable[[], bool], timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"{what} did not happen within {timeout_s:.0f}s")
        time.sleep(0.02)
    return round(time.monotonic() - t0, 2)


# -- ours ---------------------------------------------------------------------


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def bench_ours(opts: BigStateOptions, say: Progress) -> dict:
    from .ours import OursCluster

    sysd: dict[str, Any] = {"name": "ours", "label": "ours, --fsync always, LMDB store"}
    sysd["load_avg_start"] = load_average()
    with OursCluster("always", value_size=opts.value_size) as oc:
        c, http = oc.c, oc.http

        def status(api: str) -> dict | None:
            try:
                r = http.get(oc._url(api, "/v1/status"), timeout=2.0)
                return r.json() if r.status_code == 200 else None
            except Exception:
                return None

        def target() -> tuple[str, int]:
            host, _, port = oc.leader_api().rpartition(":")
            return host, int(port)

        def leader_of() -> str | None:
            st = status(oc.leader_api())
            return st["leader"] if st else None

        rss = _RssPeaks(lambda: {n.id: n.pid for n in c.nodes if n.pid})
        sysd["fill"] = _fill(
            target,
            lambda w: KVPutRequests(opts.value_size, prefix=f"/v1/kv/b{w}-"),
            opts,
            leader_of,
            say,
            "ours",
            rss,
        )
        nodes = list(c.nodes)
        sysd["peak_rss_mb"] = {n.id: peak_rss_mb(n.pid) for n in nodes if n.pid}

        def stalls() -> dict[str, float]:
            """Each node's largest loop stall since it started (the loop-lag probe)."""
            lags = {n.id: (status(n.api_address) or {}).get("loop_lag_ms") or {} for n in c.nodes}
            return {nid: lag.get("max", 0.0) for nid, lag in lags.items()}

        sysd["loop_stall_ms_in_fill"] = stalls()

        def snapshots() -> dict[str, dict]:
            """Per node since it started: snapshots taken (checkpoints and images), of
            which images, their mean duration, and the size of the last image."""
            snaps = {}
            for n in c.nodes:
                text = http.get(oc._url(n.api_address, "/metrics")).text
                count = _metric(text, "raft_snapshot_seconds_count") or 0
                total = _metric(text, "raft_snapshot_seconds_sum") or 0.0
                snaps[n.id] = {
                    "taken": int(count),
                    "images": int(_metric(text, "raft_snapshot_images_total") or 0),
                    "mean_s": round(total / count, 2) if count else None,
                    "last_image_bytes": int(_metric(text, "raft_snapshot_bytes") or 0),
                }
            return snaps

        sysd["snapshots"] = snapshots()
        # Restart: a follower, killed with -9, until it serves what it had applied.
        lead = c.wait_for_leader()
        victim = next(n for n in nodes if n.id != lead)
        applied = (status(victim.api_address) or {}).get("applied_index", 0)
        c.kill(victim.id)
        say(f"ours: restarting {victim.id} (applied {applied:,})")
        t0 = time.monotonic()
        c.start(victim.id, wait_s=120)
        _wait(
            lambda: (status(victim.api_address) or {}).get("applied_index", 0) >= applied,
            120,
            "the restarted node serving its state",
        )
        sysd["restart_s"] = round(time.monotonic() - t0, 2)
        say("ours: adding an empty learner while the writers go on")
        during: list[dict] = []
        stop = threading.Event()

        def write_on() -> None:
            while not stop.is_set():
                prefix = f"/v1/kv/l{len(during)}-"
                during.append(_window(target, KVPutRequests(opts.value_size, prefix), opts.writers))

        writer = threading.Thread(target=write_on, name="bench-writers", daemon=True)
        writer.start()
        try:
            sysd["learner_catchup_s"] = oc.add_learner_and_wait("n4")
        finally:
            stop.set()
            writer.join()
        thr = sorted(w["throughput"] for w in during)
        median = thr[len(thr) // 2] if thr else 0.0
        sysd["writes_during_catchup"] = {
            "seconds": len(during),
            "throughput_median": median,
            "ratio_to_fill": round(median / sysd["fill"]["throughput_median"], 2),
            "worst_max_ms": max((w["max_ms"] for w in during), default=0.0),
            "errors": sum(w["errors"] for w in during),
        }
        sysd["loop_stall_ms_after_catchup"] = stalls()  # the restarted node's since its start
        sysd["largest_loop_stall_ms"] = max(
            *sysd["loop_stall_ms_in_fill"].values(), *sysd["loop_stall_ms_after_catchup"].values()
        )
        sysd["snapshots_after_catchup"] = snapshots()  # the image the learner needed
        sysd["peak_rss_mb"] = {n.id: peak_rss_mb(n.pid) for n in c.nodes if n.pid}
        rss.sample()
        sysd["peak_rss_anon_mb"], sysd["peak_rss_file_mb"] = rss.anon, rss.file
    return sysd


# -- etcd -----------------------------------------------------------------------


def bench_etcd(opts: BigStateOptions, say: Progress) -> dict:
    import signal

    from ..local.etcd import INSTALL_HINT, binary_version, find_binary
    from .etcd_system import EtcdCluster, EtcdPuts

    binary = find_binary("etcd")
    if binary is None:
        raise RuntimeError(f"no etcd binary for --compare etcd; {INSTALL_HINT}")
    sysd: dict[str, Any] = {"name": "etcd", "label": f"etcd {binary_version(binary)}"}
    sysd["load_avg_start"] = load_average()
    with EtcdCluster(binary, value_size=opts.value_size) as ec:

        def target() -> tuple[str, int]:
            return "127.0.0.1", ec.leader().client_port

        rss = _RssPeaks(lambda: {m.name: m.pid for m in ec.c.members if m.pid})
        sysd["fill"] = _fill(
            target,
            lambda w: EtcdPuts(opts.value_size, prefix=f"b{w}-"),
            opts,
            lambda: ec.leader().name,
            say,
            "etcd",
            rss,
        )
        members = list(ec.c.members)
        sysd["peak_rss_mb"] = {m.name: peak_rss_mb(m.pid) for m in members if m.pid}
        sysd["peak_rss_anon_mb"], sysd["peak_rss_file_mb"] = rss.anon, rss.file
        lead = ec.leader()
        victim = next(m for m in members if m is not lead)
        applied = int((ec._status(victim) or {}).get("raftIndex", 0))
        ec.c.signal(victim.name, signal.SIGKILL)
        say(f"etcd: restarting {victim.name}")
        t0 = time.monotonic()
        ec.c.start(victim.name, wait_s=120)
        _wait(
            lambda: int((ec._status(victim) or {}).get("raftIndex", 0)) >= applied,
            120,
            "the restarted etcd member serving",
        )
        sysd["restart_s"] = round(time.monotonic() - t0, 2)
    return sysd


# -- the document -----------------------------------------------------------------


def targets(systems: list[dict]) -> list[dict]:
    """The issue's big-state targets, met / not met / not measured (None)."""
    by = {s["name"]: s for s in systems}
    ours, etcd = by.get("ours"), by.get("etcd")
    out: list[dict] = []

    def add(name: str, met: bool | None, measured: str) -> None:
        out.append({"target": name, "met": met, "measured": measured})

    if ours is None:
        return out
    f = ours["fill"]
    add("zero leader changes", f["leader_changes"] == 0, str(f["leader_changes"]))
    add(
        "no loop stall over 100 ms",
        ours["largest_loop_stall_ms"] <= 100,
        f"{ours['largest_loop_stall_ms']} ms",
    )
    add("restart to serving <= 10 s", ours["restart_s"] <= 10, f"{ours['restart_s']} s")
    add(
        "learner catch-up <= 60 s",
        ours["learner_catchup_s"] <= 60,
        f"{ours['learner_catchup_s']} s",
    )
    during = ours["writes_during_catchup"]
    add(
        "writes during the learner's catch-up >= half the fill's (median second)",
        during["ratio_to_fill"] >= 0.5,
        f"{during['ratio_to_fill']}x, {during['throughput_median']} writes/s",
    )
    if etcd is None:
        return out
    e = etcd["fill"]
    add(
        "worst per-second max write latency <= 2x etcd's",
        f["worst_max_ms"] <= 2 * e["worst_max_ms"],
        f"ours {f['worst_max_ms']} ms, etcd {e['worst_max_ms']} ms",
    )
    ours_rss = max(v for v in ours["peak_rss_mb"].values() if v is not None)
    etcd_rss = max(v for v in etcd["peak_rss_mb"].values() if v is not None)
    ours_anon = max(ours["peak_rss_anon_mb"].values(), default=0.0)
    etcd_anon = max(etcd["peak_rss_anon_mb"].values(), default=0.0)
    add(
        "peak RSS per node <= etcd's",
        ours_rss <= etcd_rss,
        f"ours {ours_rss} MiB, etcd {etcd_rss} MiB (anonymous: ours {ours_anon}, etcd {etcd_anon})",
    )
    ratio = round(f["throughput_median"] / e["throughput_median"], 2)
    add("write throughput >= 1.5x etcd's (median second)", ratio >= 1.5, f"{ratio}x")
    return out


def run_big_state(opts: BigStateOptions, say: Progress = lambda _: None) -> dict:
    opts.check()
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "options": asdict(opts),
        "systems": [bench_ours(opts, say)],
    }
    if "etcd" in opts.compare:
        doc["systems"].append(bench_etcd(opts, say))
    doc["targets"] = targets(doc["systems"])
    return doc


def _per_node(
    key: str, cell: Callable[[dict, str, Any], str | None], sep: str = ", "
) -> Callable[[dict], str]:
    """A table row with one figure per node from ``system[key]`` (cells that are None
    left out); "n/a" for a system that does not report it."""

    def row(system: dict) -> str:
        if key not in system:
            return "n/a"
        cells = (cell(system, n, v) for n, v in system[key].items())
        return sep.join(c for c in cells if c is not None) or "none"

    return row


def _learner_images(system: dict, node: str, after: dict) -> str | None:
    """The images a node made after the fill (for the learner), and the last one's size."""
    made = after["images"] - system["snapshots"].get(node, {}).get("images", 0)
    return f"{node}: {made} ({after['last_image_bytes'] / 2**20:.0f})" if made > 0 else None


def render(doc: dict) -> str:
    """The README table: one column per system."""
    systems = doc["systems"]
    o = doc["options"]
    rows: list[tuple[str, Callable[[dict], Any]]] = [
        ("keys written", lambda s: f"{s['fill']['keys_written']:,}"),
        ("writes/s, median second", lambda s: s["fill"]["throughput_median"]),
        ("writes/s, slowest second", lambda s: s["fill"]["throughput_min"]),
        ("worst per-second max latency, ms", lambda s: s["fill"]["worst_max_ms"]),
        ("errors", lambda s: s["fill"]["errors"]),
        ("leader changes", lambda s: s["fill"]["leader_changes"]),
        ("peak RSS per node, MiB", lambda s: ", ".join(str(v) for v in s["peak_rss_mb"].values())),
        (
            "of which anonymous / mapped files, peak MiB",
            lambda s: ", ".join(
                f"{s['peak_rss_anon_mb'][n]} / {s['peak_rss_file_mb'][n]}"
                for n in s["peak_rss_anon_mb"]
            ),
        ),
        ("largest loop stall, ms", lambda s: s.get("largest_loop_stall_ms", "n/a")),
        (
            "per node: in the fill / to the end, ms",
            _per_node(
                "loop_stall_ms_after_catchup",
                lambda s, n, v: f"{n} {s['loop_stall_ms_in_fill'].get(n, '-')} / {v}",
            ),
        ),
        (
            "snapshots in the fill (taken, of which images, mean s)",
            _per_node(
                "snapshots",
                lambda s, n, v: f"{n}: {v['taken']}, {v['images']}, {v['mean_s']}",
                "; ",
            ),
        ),
        (
            "images made for the learner (MiB)",
            _per_node("snapshots_after_catchup", _learner_images, "; "),
        ),
        ("restart to serving, s", lambda s: s.get("restart_s", "n/a")),
        ("learner catch-up, s", lambda s: s.get("learner_catchup_s", "n/a")),
        (
            "writes/s during it, median (x the fill's)",
            lambda s: (
                f"{s['writes_during_catchup']['throughput_median']} "
                f"({s['writes_during_catchup']['ratio_to_fill']}x)"
                if "writes_during_catchup" in s
                else "n/a"
            ),
        ),
    ]
    head = f"| {o['keys']:,} keys x {o['value_size']} B, {o['writers']} writers | "
    lines = [head + " | ".join(s["label"] for s in systems) + " |"]
    lines.append("|---" * (len(systems) + 1) + "|")
    for name, get in rows:
        lines.append(f"| {name} | " + " | ".join(str(get(s)) for s in systems) + " |")
    lines.append("")
    for t in doc["targets"]:
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"- {t['target']}: {mark} ({t['measured']})")
    return "\n".join(lines)
