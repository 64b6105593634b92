"""Rich renderings of the manager's models for people (``--json`` skips all of this)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..core.models import (
    BenchResult,
    ClusterList,
    ClusterStatus,
    DemoReport,
    ElectionResult,
    FaultResult,
    HealthReport,
    LocalClusterState,
    MembershipChange,
    Plan,
    ReadResult,
    RecoverResult,
    ReplicateResult,
    SnapshotResult,
    VerifyReport,
)
from ..core.view import group_line

ROLE_STYLE = {
    "leader": "bold green",
    "follower": "cyan",
    "learner": "magenta",
    "candidate": "yellow",
    "pre_candidate": "yellow",
    "unknown": "red",
}


def role_text(role: str | None, reachable: bool = True) -> Text:
    if not reachable:
        return Text("unreachable", style="bold red")
    role = role or "unknown"
    return Text(role, style=ROLE_STYLE.get(role, ""))


def _n(v: Any) -> str:
    return "-" if v is None else str(v)


def ok_mark(ok: bool | None) -> Text:
    if ok is None:
        return Text("?", style="yellow")
    return Text("✓", style="green") if ok else Text("✗", style="bold red")


def status_view(st: ClusterStatus) -> Group:
    head = Text.assemble(
        ("cluster ", "dim"),
        (st.cluster, "bold"),
        (f" ({st.kind}, {st.mode})  ", "dim"),
        ("leader ", "dim"),
        (st.leader or "none", "bold green" if st.leader else "bold red"),
        ("  term ", "dim"),
        (_n(st.term), "bold"),
        ("  commit ", "dim"),
        (_n(st.commit_index), ""),
        ("  voters available ", "dim"),
        (
            f"{st.reachable_voters}/{len(st.voters)} (quorum {st.quorum})",
            "green" if st.reachable_voters > st.quorum else "yellow",
        ),
        (f"  {st.checked_at[11:23]}", "dim"),
    )
    t = Table(show_edge=False, pad_edge=False, header_style="bold")
    etcd = any(m.member_id for m in st.members)  # etcd: its member IDs, revisions, db sizes
    cols = ["id", "role", "member", "term", "commit", "applied", "lag", "repl", "pid"]
    cols += ["member id", "rev", "db"] if etcd else []
    for col in cols:
        left = col in ("id", "role", "member", "repl", "member id")
        t.add_column(col, justify="left" if left else "right", no_wrap=True)
    for m in st.members:
        member = "voter" if m.voter else ("learner" if m.learner else "-")
        lag = Text(_n(m.lag), style="yellow" if m.caught_up is False else "")
        proc = Text("stopped", style="red") if m.process == "stopped" else Text(_n(m.pid))
        extra = [_n(m.member_id), _n(m.revision), _n(m.db_size)] if etcd else []
        t.add_row(
            m.id,
            role_text(m.role, m.reachable),
            member,
            _n(m.term),
            _n(m.commit_index),
            _n(m.applied_index),
            lag,
            _n(m.replication),
            proc,
            *extra,
        )
    parts: list[Any] = [head, t]
    if st.joint:
        parts.append(Text(f"joint configuration: old voters {','.join(st.voters_outgoing)}"))
    parts += [Text(f"! {w}", style="yellow") for w in st.warnings]
    if not st.warnings:
        parts.append(Text("no warnings", style="green"))
    if st.groups_total > 1:  # several Raft groups (NATS): one line each, one page
        parts.append(Text(f"raft groups ({st.groups_total}):", style="bold"))
        parts += [
            Text(f"  {group_line(g)}", style="yellow" if g.warnings else "") for g in st.groups
        ]
        if st.next_group_offset is not None:
            parts.append(Text(f"  more: --group-offset {st.next_group_offset}", style="dim"))
    return Group(*parts)


def health_view(h: HealthReport) -> Group:
    t = Table(show_edge=False, header_style="bold")
    t.add_column("")
    t.add_column("check")
    t.add_column("detail")
    for c in h.checks:
        t.add_row(ok_mark(c.ok), c.name, c.detail)
    verdict = "healthy" if h.healthy else "NOT healthy"
    line = Text(f"{h.cluster}: {verdict}", style="bold green" if h.healthy else "bold red")
    parts: list[Any] = [line, t]
    if h.operation:
        parts.append(
            Text(
                f"{h.operation}: {'safe now' if h.safe else 'NOT safe now'}",
                style="bold green" if h.safe else "bold red",
            )
        )
    parts += [Text(f"- {r}", style="red") for r in h.reasons]
    parts += [Text(f"! {w}", style="yellow") for w in h.warnings]
    return Group(*parts)


def plan_view(p: Plan) -> Group:
    verdict = Text(
        "safe" if p.safe else "UNSAFE: will not be applied",
        style="bold green" if p.safe else "bold red",
    )
    head = Text.assemble(
        ("plan ", "dim"),
        (p.plan_id, "bold"),
        (f"  {p.operation} {_args(p.arguments)}  ", ""),
        verdict,
    )
    parts: list[Any] = [head]
    if isinstance(p, MembershipChange):
        parts.append(
            Text(
                f"voters {','.join(p.voters) or '-'} -> {','.join(p.voters_after) or '-'} "
                f"(quorum {p.quorum_before} -> {p.quorum_after}); learners "
                f"{','.join(p.learners) or '-'} -> {','.join(p.learners_after) or '-'}",
                style="dim",
            )
        )
    for i, s in enumerate(p.steps, 1):
        parts.append(Text(f"  {i}. {s.detail}"))
    parts += [Text(f"- {r}", style="red") for r in p.reasons]
    parts += [Text(f"! {r}", style="yellow") for r in p.risks]
    if isinstance(p, MembershipChange) and p.results:
        for r in p.results:
            parts.append(Text.assemble(ok_mark(r.ok), f" {r.detail} ({r.seconds:.2f}s)"))
    if not p.applied:
        parts.append(
            Text(
                f"made in term {p.term} with leader {p.leader}; expires {p.expires_at}. "
                f"Apply with --plan-id {p.plan_id}"
                if p.safe
                else "fix the reasons above, then plan again",
                style="dim",
            )
        )
    if p.requires_approval and not p.applied:
        parts.append(
            Text(
                f"needs a human's approval first: `raft-manager approve {p.plan_id}` at a terminal",
                style="yellow",
            )
        )
    return Group(*parts)


def _args(args: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items() if v is not None and k != "entries")


def verify_view(v: VerifyReport) -> Group:
    if v.consistent is True:
        head = Text(
            f"consistent: {len(v.checked)} members agree at index {v.common_index}"
            + (f"; {v.log_indexes_checked} committed log entries compared" if v.log_range else ""),
            style="bold green",
        )
    elif v.consistent is False:
        head = Text(f"DIVERGENT: {len(v.divergences)} divergence(s)", style="bold red")
    else:
        head = Text("could not verify", style="bold yellow")
    parts: list[Any] = [head]
    for d in v.divergences:
        parts.append(Text(f"  {d.member} at index {d.index} ({d.kind}): {d.detail}", style="red"))
    parts += [Text(f"- {r}", style="yellow") for r in v.reasons]
    return Group(*parts)


def election_view(e: ElectionResult) -> Text:
    return Text.assemble(
        ok_mark(e.leader is not None),
        f" {e.detail} ",
        (f"({e.seconds:.2f}s)", "dim"),
    )


def replicate_view(r: ReplicateResult) -> Group:
    lines = [
        Text(f"✓ {e.key} committed at index {e.index}, term {e.term}", style="green")
        for e in r.entries
    ]
    return Group(*lines)


def read_view(r: ReadResult) -> Text:
    value = "(absent)" if r.value is None else r.value
    return Text.assemble(
        (f"{r.key} = ", "bold"),
        (value, ""),
        (f"   ({r.consistency} read from {r.served_by} at index {r.applied_index})", "dim"),
    )


def snapshot_view(s: SnapshotResult) -> Group:
    return Group(
        *[
            Text.assemble(
                ok_mark(x.ok),
                f" {x.node}: "
                + (
                    f"snapshot at index {x.snapshot_index} ({x.bytes} bytes)"
                    if x.ok
                    else str(x.error)
                ),
            )
            for x in s.snapshots
        ]
    )


def recover_view(r: RecoverResult) -> Group:
    if r.caught_up:
        head = Text(
            f"✓ {r.node_id} {r.action} and caught up (applied {r.applied_index}, target "
            f"{r.target_index}) in {r.seconds:.1f}s",
            style="green",
        )
    else:
        head = Text(f"✗ {r.node_id} not recovered: the operator must act", style="bold red")
    return Group(head, *[Text(f"  - {i}") for i in r.instructions])


def fault_view(f: FaultResult) -> Text:
    return Text(f"✓ {f.kind}: {f.detail}", style="yellow")


def clusters_view(cl: ClusterList) -> Table:
    t = Table(title=f"clusters ({cl.config or 'embedded default'})", header_style="bold")
    for col in ("name", "kind", "mode", "read-only", "approval", "allowed", "location"):
        t.add_column(col)
    for c in cl.clusters:
        t.add_row(
            Text(c.name + (" *" if c.default else ""), style="bold" if c.default else ""),
            c.kind,
            Text(c.mode, style="red" if c.mode == "production" else "green"),
            "yes" if c.read_only else "no",
            "required" if c.require_approval else "-",
            ", ".join(c.allowed_operations) if c.allowed_operations else "all",
            c.location,
        )
    return t


def local_view(s: LocalClusterState) -> Group:
    t = Table(show_edge=False, header_style="bold")
    for col in ("id", "role", "term", "pid", "peer", "api", "log"):
        t.add_column(col)
    for n in s.nodes:
        t.add_row(
            n.id,
            role_text(n.role, True) if n.running else Text("stopped", style="red"),
            _n(n.term),
            _n(n.pid),
            n.peer_address,
            n.api_address,
            Text(n.log, style="dim"),
        )
    return Group(Text(s.detail, style="bold"), t)


def bench_view(b: BenchResult) -> Text:
    return Text(
        f"{b.throughput:,.0f} writes/s with {b.clients} clients for {b.duration_s:.0f}s "
        f"(p50 {_n(b.p50_ms)} ms, p99 {_n(b.p99_ms)} ms, {b.errors} errors) via leader {b.leader}"
    )


def demo_summary(d: DemoReport) -> Text:
    return Text(
        f"{'demo complete' if d.ok else 'demo FAILED'}: {len(d.steps)} steps in {d.seconds:.1f}s",
        style="bold green" if d.ok else "bold red",
    )


def print_to(console: Console, renderable: Any) -> None:
    console.print(renderable, highlight=False)
