"""The chaos verdict as people read it: one rich table, anomalies, where the files are."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .models import ChaosVerdict


def verdict_view(v: ChaosVerdict) -> Group:
    head = (
        Text("✓ no anomaly", style="bold green")
        if v.ok
        else Text(
            f"✗ {len(v.anomalies)} anomal{'y' if len(v.anomalies) == 1 else 'ies'}",
            style="bold red",
        )
    )
    t = Table(title=f"chaos, seed {v.seed}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    c = v.counts
    by_kind = ", ".join(f"{k} {n}" for k, n in c.by_kind.items())
    rows = [
        ("verdict", head),
        ("linearizable", Text(str(v.linearizable), style="green" if v.linearizable else "red")),
        ("consistent", f"{v.consistent} (common index {v.common_index})"),
        ("operations", f"{c.operations} ({by_kind})"),
        ("outcomes", f"{c.ok} ok, {c.failed} failed, {c.indeterminate} indeterminate"),
        ("faults", ", ".join(f"{k} {n}" for k, n in v.faults.items()) or "none"),
        ("faults refused", str(v.faults_refused)),
        ("duration", f"{v.duration_s:.0f}s of workload, {v.elapsed_s:.0f}s in all"),
        ("members at the end", ", ".join(v.nodes)),
        ("history", v.history_path),
        ("timeline", v.timeline_path),
    ]
    if v.network == "nft":
        rows.insert(7, ("network faults", "nftables rules in the members' namespaces"))
    for k, val in rows:
        t.add_row(k, val)
    parts: list = [t]
    for note in v.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    for a in v.anomalies:
        parts.append(Text(f"{a.kind}: {a.message}", style="red"))
    if v.anomalies:
        parts.append(Text(f"node logs: {', '.join(v.logs)}", style="dim"))
    return Group(*parts)
