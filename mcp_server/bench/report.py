"""Render a :func:`.compare.run_compare` document: rich tables and an SVG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_MARK = {True: Text("met", style="green"), False: Text("not met", style="red")}


def _num(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def _workload_table(doc: dict, workload: str, title: str) -> Table | None:
    rows = [s for s in doc["systems"] if s.get(workload)]
    if not rows:
        return None
    levels = sorted({c["clients"] for s in rows for c in s[workload]})
    t = Table(title=title, header_style="bold", title_justify="left")
    t.add_column("system")
    t.add_column("load avg", justify="right")
    for n in levels:
        t.add_column(f"{n} cl: ops/s", justify="right")
        t.add_column("p50 / p99 ms", justify="right")
    for s in rows:
        cells = {c["clients"]: c for c in s[workload]}
        row = [s["label"], f"{s['load_avg_start']:.1f}"]
        for n in levels:
            c = cells.get(n)
            err = f" ({c['errors']} err)" if c and c["errors"] else ""
            row.append(_num(c and c["throughput"]) + err)
            row.append(f"{_num(c and c['p50_ms'], '{:.2f}')} / {_num(c and c['p99_ms'], '{:.1f}')}")
        t.add_row(*row)
    return t


def _cpu_table(doc: dict) -> Table:
    """The leader's CPU per operation (µs, median) and how busy it was: a system far
    below one CPU is waiting (disk, peers, or a machine shared with others)."""
    t = Table(title="leader CPU per operation, µs (median)", header_style="bold")
    t.add_column("system")
    t.add_column("workload")
    levels = sorted(
        {c["clients"] for s in doc["systems"] for w in ("write", "read", "embedded")
         for c in s.get(w) or []}
    )  # fmt: skip
    for n in levels:
        t.add_column(f"{n} cl", justify="right")
    for s in doc["systems"]:
        for w in ("write", "read", "embedded"):
            cells = {c["clients"]: c for c in s.get(w) or []}
            if cells:
                row = [
                    _num(cells[n].get("leader_cpu_us_per_op") if n in cells else None)
                    for n in levels
                ]
                t.add_row(s["label"], w, *row)
    return t


def _ratio_table(doc: dict) -> Table | None:
    if not doc["ratios"]:
        return None
    t = Table(title="ours ÷ peer (above 1: ours is better)", header_style="bold")
    t.add_column("peer")
    t.add_column("measure")
    t.add_column("ratio", justify="right")
    for peer, r in doc["ratios"].items():
        for k, v in r.items():
            t.add_row(peer, k.replace("_", " "), _num(v, "{:.2f}x"))
    return t


def _other_table(doc: dict) -> Table:
    t = Table(title="failover (kill -9 of the leader) and catch-up", header_style="bold")
    t.add_column("system")
    t.add_column("failover median / max s", justify="right")
    t.add_column("rounds")
    t.add_column("learner catch-up")
    for s in doc["systems"]:
        fo, cu = s.get("failover"), s.get("catchup")
        fo_s = f"{fo['median_s']:.3f} / {fo['max_s']:.3f}" if fo else "-"
        cu_s = "-"
        if cu:
            rss = ", ".join(f"{k} {v}" for k, v in cu["peak_rss_mb"].items())
            cu_s = f"{cu['entries']:,} entries: {cu['catchup_s']} s; peak RSS MiB: {rss}"
        t.add_row(s["label"], fo_s, str(len(fo["rounds_s"])) if fo else "-", cu_s)
    return t


def _targets_table(doc: dict) -> Table:
    t = Table(title="targets (issue 11)", header_style="bold")
    t.add_column("target")
    t.add_column("", justify="center")
    t.add_column("measured")
    for x in doc["targets"]:
        mark = _MARK.get(x["met"], Text("not measured", style="dim"))
        t.add_row(x["target"], mark, x["measured"])
    return t


def render(doc: dict) -> Group:
    parts: list[Any] = [
        Text(
            f"{doc['date']}  {doc['machine']['cpus']} CPUs  {doc['machine']['platform']}  "
            f"{doc['options']['runs']} run(s) x {doc['options']['duration_s']:g}s per cell, "
            "medians; 3 nodes on loopback, 64-byte values",
            style="dim",
        )
    ]
    for workload, title in (
        ("write", "closed-loop writes (HTTP through the leader; PySyncObj: in-process)"),
        ("read", "linearizable reads (ours: all nodes, round-robin; etcd: to the leader)"),
        ("embedded", "embedded proposals (library API, callers in the leader process)"),
    ):
        t = _workload_table(doc, workload, title)
        if t is not None:
            parts.append(t)
    parts.append(_cpu_table(doc))
    parts += [x for x in (_ratio_table(doc),) if x is not None]
    parts += [_other_table(doc), _targets_table(doc)]
    notes = [f"{s['label']}: {n}" for s in doc["systems"] for n in s["notes"]]
    cpus = doc["machine"]["cpus"] or 1
    busy = [s["label"] for s in doc["systems"] if s["load_avg_start"] > cpus]
    if busy:
        notes.append(
            f"the machine was busy (load average above {cpus} CPUs) when these started: "
            f"{', '.join(busy)}; their figures are low and noisy"
        )
    parts += [Text("note: " + n, style="dim") for n in notes]
    return Group(*parts)


def write_chart(doc: dict, path: Path) -> None:
    """Throughput and p50 against concurrency, one line per system and workload (SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    levels = sorted({c["clients"] for s in doc["systems"] for c in s.get("write") or []})
    for s in doc["systems"]:
        for workload, style in (("write", "-o"), ("embedded", "--s"), ("read", ":^")):
            cells = s.get(workload) or []
            if not cells:
                continue
            xs = [c["clients"] for c in cells]
            label = f"{s['label']}: {workload}"
            ax_t.plot(xs, [c["throughput"] for c in cells], style, label=label)
            ax_l.plot(xs, [c["p50_ms"] for c in cells], style, label=label)
    for ax, ylabel in ((ax_t, "operations/s (median)"), (ax_l, "p50 latency, ms (median)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(n) for n in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_l.set_yscale("log")
    ax_t.legend(fontsize=7)
    fig.suptitle(f"3 nodes on loopback, {doc['machine']['cpus']} CPUs, {doc['date']}")
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)
