"""The timeline: one self-contained HTML page with an inline SVG, no scripts.

Rows are clients (plus ``probe``, the reads sent to a woken paused leader, and
``final``, the reads after healing); each operation is a bar from its call to its
return (green ok, grey failed, orange indeterminate: drawn until the client gave up).
Faults are coloured bands behind the rows, labelled with their variant and targets.
Anomalies are red markers with a line through every row. Hovering any shape shows its
details (SVG ``<title>``).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from .models import Anomaly, ChaosVerdict, FaultEvent
from .workload import OP_DEADLINE_S, Op

ROW_H, BAR_H, LEFT, TOP = 16, 10, 90, 64
# At least this wide, and wide enough for fault labels in long runs (scrolls sideways).
MIN_WIDTH, PX_PER_S = 1400, 9
COLOURS = {"ok": "#2e7d32", "fail": "#9e9e9e", "info": "#ef6c00"}
FAULT_COLOURS = {
    "kill": "#e53935",
    "pause": "#8e24aa",
    "partition": "#1e88e5",
    "membership": "#00897b",
    "transfer": "#fdd835",
}


def _rows(ops: list[Op]) -> list[str]:
    names = sorted({op.client for op in ops if op.client not in ("probe", "final")})
    return [*names, *(n for n in ("probe", "final") if any(op.client == n for op in ops))]


def _stop(op: Op) -> float:
    """Where an operation's bar ends: its answer, else when its client gave up."""
    if op.ret is not None:
        return op.ret
    return op.end if op.end is not None else op.call + OP_DEADLINE_S


def render_svg(ops: list[Op], faults: list[FaultEvent], anomalies: list[Anomaly]) -> str:
    rows = _rows(ops)
    end = max([1.0, *(_stop(op) for op in ops), *(f.end for f in faults)])
    width = max(MIN_WIDTH, round(end * PX_PER_S))
    scale = width / end
    height = TOP + ROW_H * len(rows) + 40
    total_w = LEFT + width + 20

    def x(t: float) -> float:
        return round(LEFT + t * scale, 2)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" '
        f'viewBox="0 0 {total_w} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="0" y="0" width="{total_w}" height="{height}" fill="#ffffff"/>',
    ]
    lanes = len(rows) * ROW_H
    for i, f in enumerate(faults):
        label_y = TOP - 8 - 12 * (i % 3)  # three staggered lines of labels
        colour = FAULT_COLOURS.get(f.kind, "#757575")
        w = max(x(f.end) - x(f.start), 1.0)
        tip = escape(f"{f.variant} {','.join(f.targets)} {f.start:.1f}-{f.end:.1f}s: {f.detail}")
        opacity = "0.18" if f.applied else "0.06"
        out.append(
            f'<rect x="{x(f.start)}" y="{TOP - 4}" width="{w:.2f}" height="{lanes + 8}" '
            f'fill="{colour}" fill-opacity="{opacity}"><title>{tip}</title></rect>'
        )
        out.append(
            f'<text x="{x(f.start) + 2}" y="{label_y}" fill="{colour}">{escape(f.variant)}</text>'
        )
    index = {name: i for i, name in enumerate(rows)}
    for i, name in enumerate(rows):
        y = TOP + i * ROW_H
        out.append(f'<text x="4" y="{y + BAR_H}">{escape(name)}</text>')
        out.append(
            f'<line x1="{LEFT}" y1="{y + ROW_H - 2}" x2="{LEFT + width}" y2="{y + ROW_H - 2}" '
            'stroke="#eeeeee"/>'
        )
    for op in ops:
        y = TOP + index[op.client] * ROW_H
        stop = _stop(op)
        w = max(x(stop) - x(op.call), 0.6)
        args = op.value if op.kind != "cas" else f"{op.expected}->{op.value}"
        tip = escape(
            f"#{op.id} {op.client} {op.kind} {op.key} {args or ''} -> {op.status} "
            f"{op.output or op.error or ''} [{op.call:.3f}, {stop:.3f}] via {op.node}"
        )
        out.append(
            f'<rect x="{x(op.call)}" y="{y}" width="{w:.2f}" height="{BAR_H}" '
            f'fill="{COLOURS[op.status]}"><title>{tip}</title></rect>'
        )
    for a in anomalies:
        if a.time is None:
            continue
        ax = x(a.time)
        tip = escape(f"{a.kind}: {a.message[:400]}")
        out.append(
            f'<g><title>{tip}</title><line x1="{ax}" y1="{TOP - 4}" x2="{ax}" '
            f'y2="{TOP + lanes + 4}" stroke="#d50000" stroke-width="2"/>'
            f'<polygon points="{ax - 6},{TOP - 16} {ax + 6},{TOP - 16} {ax},{TOP - 4}" '
            'fill="#d50000"/></g>'
        )
    axis_y = TOP + lanes + 16
    step = max(1, round(end / 20))
    t = 0
    while t <= end:
        out.append(f'<line x1="{x(t)}" y1="{axis_y - 6}" x2="{x(t)}" y2="{axis_y}" stroke="#555"/>')
        out.append(f'<text x="{x(t) - 6}" y="{axis_y + 12}">{t}s</text>')
        t += step
    out.append("</svg>")
    return "\n".join(out)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def write_timeline(
    path: Path, verdict: ChaosVerdict, ops: list[Op], faults: list[FaultEvent]
) -> None:
    title = f"raft-manager chaos, seed {verdict.seed}: " + (
        "no anomaly" if verdict.ok else _plural(len(verdict.anomalies), "anomaly", "anomalies")
    )
    c = verdict.counts
    legend = " ".join(
        f'<span style="color:{col}">&#9632; {escape(name)}</span>'
        for name, col in [
            ("ok", COLOURS["ok"]),
            ("failed", COLOURS["fail"]),
            ("indeterminate", COLOURS["info"]),
            *((f"fault: {k}", v) for k, v in FAULT_COLOURS.items()),
            ("anomaly", "#d50000"),
        ]
    )
    anomalies = "".join(
        f"<li><b>{escape(a.kind)}</b> <pre>{escape(a.message)}</pre></li>"
        for a in verdict.anomalies
    )
    fault_text = ", ".join(f"{k} {n}" for k, n in verdict.faults.items())
    notes = "".join(f"<li>{escape(n)}</li>" for n in verdict.notes)
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif;margin:16px}} pre{{white-space:pre-wrap;font-size:11px}}
.bad{{color:#d50000}} .good{{color:#2e7d32}}</style></head>
<body><h1 class="{"good" if verdict.ok else "bad"}">{escape(title)}</h1>
<p>{c.operations} operations ({c.ok} ok, {c.failed} failed, {c.indeterminate} indeterminate)
in {verdict.duration_s:.0f}s; faults: {escape(fault_text or "none")};
linearizable: {verdict.linearizable}; consistent: {verdict.consistent}.</p>
<p>{legend}</p>
{render_svg(ops, faults, verdict.anomalies)}
{"<h2>Anomalies</h2><ul>" + anomalies + "</ul>" if anomalies else ""}
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
</body></html>
"""
    path.write_text(html)
