"""``raft-manager``: the command line over the guarded operations.

``raft-manager [--config FILE] [--cluster NAME] COMMAND [--json]`` (docs/design.md). With
``--json`` a command prints exactly one JSON document on stdout (the operation's
pydantic model; an ``ErrorReport`` on failure) and progress goes to stderr.

Exit codes: 0 ok; 1 refused, unhealthy, divergent, unsafe plan or failed; 2 usage or
configuration error, or verify could not verify; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..core import DemoStep, InputError, ManagerError
from ..local import ClusterError
from ..manager import list_clusters
from ..mcp.args import add_arguments as add_server_arguments
from ..operations.faults import KINDS as FAULT_KINDS
from . import certs, chaos, etcd, launcher, nats, render
from .approve import cmd_approve
from .ui import (
    EPILOG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UI,
    UsageError,
    _Parser,
    config_of,
    emit_outcome,
    mutation_flags,
    open_manager,
)

# -- commands: observation -------------------------------------------------------------


def cmd_clusters(args: argparse.Namespace, ui: UI) -> int:
    ui.emit(list_clusters(config_of(args)), render.clusters_view)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr:
        ui.emit(
            mgr.status(args.group, group_offset=args.group_offset, group_limit=args.group_limit),
            render.status_view,
        )
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr:
        n = 0
        try:
            if ui.json:
                while args.count is None or n < args.count:
                    sys.stdout.write(mgr.status().model_dump_json() + "\n")
                    sys.stdout.flush()
                    n += 1
                    if args.count is None or n < args.count:
                        time.sleep(args.interval)
                return EXIT_OK
            with Live(render.status_view(mgr.status()), console=ui.out, auto_refresh=False) as live:
                n = 1
                while args.count is None or n < args.count:
                    time.sleep(args.interval)
                    live.update(render.status_view(mgr.status()), refresh=True)
                    n += 1
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def cmd_health(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr:
        h = mgr.health_check(args.operation, group=args.group)
    ui.emit(h, render.health_view)
    good = h.safe if args.operation else h.healthy
    return EXIT_OK if good else EXIT_FAILED


def cmd_verify(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr:
        v = mgr.verify_consistency(args.group)
    ui.emit(v, render.verify_view)
    return {True: EXIT_OK, False: EXIT_FAILED, None: EXIT_USAGE}[v.consistent]


def cmd_get(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr:
        r = mgr.read(args.key, "stale" if args.stale else "linearizable")
    ui.emit(r, render.read_view)
    return EXIT_OK


# -- commands: mutations ---------------------------------------------------------------


def cmd_put(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr:
        r = mgr.replicate(
            [{"key": args.key, "value": args.value}], dry_run=args.dry_run, plan_id=args.plan_id
        )
    return emit_outcome(ui, r, render.plan_view, render.replicate_view)


def cmd_elect(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr, ui.spinner("election") as progress:
        r = mgr.elect_leader(
            args.to,
            dry_run=args.dry_run,
            plan_id=args.plan_id,
            progress=progress,
            group=args.group,
        )
    return emit_outcome(ui, r, render.plan_view, render.election_view)


def cmd_member(args: argparse.Namespace, ui: UI) -> int:
    action = args.member_action.replace("-", "_")
    with open_manager(args, ui) as mgr, ui.spinner(f"{args.member_action} {args.node}") as progress:
        r = mgr.change_membership(
            action,
            args.node,
            args.peer_address,
            args.api_address,
            dry_run=args.dry_run,
            plan_id=args.plan_id,
            progress=progress,
            catch_up_timeout_s=args.timeout,
        )
    return emit_outcome(ui, r, render.plan_view, render.plan_view)


def cmd_snapshot(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr, ui.spinner("snapshot") as progress:
        r = mgr.snapshot(
            args.node,
            dry_run=args.dry_run,
            plan_id=args.plan_id,
            progress=progress,
            group=args.group,
        )
    code = emit_outcome(ui, r, render.plan_view, render.snapshot_view)
    if r.result is not None and not all(s.ok for s in r.result.snapshots):
        return EXIT_FAILED
    return code


def cmd_recover(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr, ui.spinner(f"recovering {args.node}") as progress:
        r = mgr.recover_node(
            args.node,
            dry_run=args.dry_run,
            plan_id=args.plan_id,
            progress=progress,
            timeout_s=args.timeout,
            group=args.group,
        )
    code = emit_outcome(ui, r, render.plan_view, render.recover_view)
    if r.result is not None and not r.result.caught_up:
        return EXIT_FAILED
    return code


def cmd_fault(args: argparse.Namespace, ui: UI) -> int:
    with open_manager(args, ui) as mgr:
        r = mgr.inject_fault(args.kind, args.nodes, dry_run=args.dry_run, plan_id=args.plan_id)
    return emit_outcome(ui, r, render.plan_view, render.fault_view)


# -- commands: demo, bench, mcp, audit -------------------------------------------------


def cmd_demo(args: argparse.Namespace, ui: UI) -> int:
    from .demo import run_demo

    console = ui.err if ui.json else ui.out

    def narrate(s: DemoStep) -> None:
        mark = Text("✓", style="green") if s.ok else Text("✗", style="bold red")
        console.print(
            Text.assemble(
                (f"{s.n:>2}. ", "dim"),
                (f"{s.title:<26}", "bold"),
                mark,
                f" {s.result} ",
                (f"({s.seconds:.1f}s)", "dim"),
            ),
            highlight=False,
        )

    if not ui.json:
        ui.out.print(Text("raft-manager demo: a guarded tour of a live Raft cluster", style="bold"))
    report = run_demo(
        args.dir, base_port=args.base_port, narrate=narrate, spinner=ui.spinner, keep=args.keep
    )
    ui.emit(report, render.demo_summary)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_bench(args: argparse.Namespace, ui: UI) -> int:
    """The three-system comparison (``--compare``); with ``--existing``, the guarded
    write load on the configured cluster instead."""
    given = args.clients or ("16" if args.existing else "1,16,64")
    try:
        levels = tuple(int(x) for x in given.split(",") if x.strip())
    except ValueError:
        raise InputError(
            "--clients takes numbers, e.g. 1,16,64", "see raft-manager bench --help"
        ) from None
    if args.existing:
        return _bench_existing(args, ui, levels)
    if args.big_state:
        return _bench_big_state(args, ui, levels)
    from ..bench.compare import BenchOptions, run_compare
    from ..bench.report import render as render_bench
    from ..bench.report import write_chart

    try:
        opts = BenchOptions.make(
            quick=args.quick,
            compare=tuple(x for x in (args.compare or "").split(",") if x),
            runs=args.runs,
            duration_s=args.duration,
            clients=levels or None,
            failovers=args.failovers,
            catchup_entries=args.catchup_entries,
        )
    except ValueError as e:
        raise InputError(str(e), "see raft-manager bench --help") from None
    doc = run_compare(opts, lambda msg: ui.note(f"bench: {msg}"))
    if args.chart:
        write_chart(doc, Path(args.chart))
        doc["chart"] = args.chart
    if ui.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        ui.out.print(render_bench(doc))
        if args.chart:
            ui.note(f"chart: {args.chart}")
    return EXIT_OK


def _bench_big_state(args: argparse.Namespace, ui: UI, levels: tuple[int, ...]) -> int:
    from ..bench.bigstate import BigStateOptions, render, run_big_state

    opts = BigStateOptions(
        keys=args.keys,
        value_size=args.value_size or 1024,
        writers=levels[0] if args.clients else 16,
        compare=tuple(x for x in (args.compare or "").split(",") if x),
    )
    try:
        opts.check()
    except ValueError as e:
        raise InputError(str(e), "see raft-manager bench --help") from None
    doc = run_big_state(opts, lambda msg: ui.note(f"bench: {msg}"))
    if ui.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        ui.out.print(render(doc), markup=False)
    return EXIT_OK


def _bench_existing(args: argparse.Namespace, ui: UI, levels: tuple[int, ...]) -> int:
    from ..bench.harness import run_bench

    if len(levels) != 1:
        raise InputError("--existing takes one --clients level", "e.g. --clients 16")
    duration = args.duration or 3.0
    with open_manager(args, ui) as mgr, ui.spinner(f"{levels[0]} clients for {duration}s"):
        r = run_bench(mgr, clients=levels[0], duration_s=duration, value_size=args.value_size or 64)
    ui.emit(r, render.bench_view)
    return EXIT_OK


def cmd_mcp(args: argparse.Namespace, ui: UI) -> int:
    from ..server import serve  # the MCP SDK loads only for this command

    return serve(args)


def cmd_audit(args: argparse.Namespace, ui: UI) -> int:
    audit = launcher.audit_for(args)
    lines = audit.read()[-args.tail :] if args.tail else audit.read()
    if ui.json:
        sys.stdout.write(json.dumps({"path": str(audit.path), "entries": lines}, indent=2) + "\n")
        return EXIT_OK
    t = Table(title=str(audit.path), header_style="bold")
    for col in ("time", "cluster", "operation", "outcome", "plan", "reason"):
        t.add_column(col)
    for x in lines:
        style = {"refused": "red", "failed": "bold red", "planned": "cyan"}.get(x["outcome"], "")
        t.add_row(
            x["time"],
            x["cluster"],
            x["operation"],
            Text(x["outcome"], style=style),
            x.get("plan_id") or "",
            x.get("reason") or "",
        )
    ui.out.print(t)
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON document on stdout"
    )
    common.add_argument("--config", default=argparse.SUPPRESS, help="clusters.yaml")
    common.add_argument("--cluster", default=argparse.SUPPRESS, help="cluster name in the config")

    p = _Parser(
        prog="raft-manager",
        description="Operate Raft clusters safely: status, elections, replication, membership "
        "changes with plans, consistency checks, recovery.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", default=False, help="one JSON document on stdout")
    p.add_argument(
        "--config",
        default=None,
        help="clusters.yaml (default: $RAFT_MANAGER_CONFIG, else embedded)",
    )
    p.add_argument("--cluster", default=None, help="cluster name in the config")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def cmd(parent: Any, name: str, help: str, func: Callable) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help, description=help, parents=[common])
        sp.set_defaults(func=func)
        return sp

    # local launcher
    cl = sub.add_parser("cluster", help="start/stop a local raft_core cluster (processes)")
    cls = cl.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    up = cmd(
        cls, "up", "start N raft-node processes and wait for a leader", launcher.cmd_cluster_up
    )
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--dir", help="cluster directory (default: the selected local cluster's)")
    up.add_argument("--base-port", type=int, help="peers on P+1.., APIs on P+101.. (default 7100)")
    up.add_argument("--allow-fault-injection", action="store_true")
    up.add_argument("--tick-ms", type=int, default=50)
    up.add_argument("--election-ticks", type=int, default=10)
    up.add_argument("--fsync", choices=["always", "never"], default="always")
    up.add_argument("--api-token-file", help="file holding an API token the nodes will require")
    up.add_argument(
        "--insecure",
        action="store_true",
        help="no peer authentication (default: a throwaway CA, mutual TLS for peers, HTTPS API)",
    )
    for name, help, func in (
        ("down", "stop every process (data kept)", launcher.cmd_cluster_down),
        ("status", "processes, pids, roles", launcher.cmd_cluster_status),
    ):
        sp = cmd(cls, name, help, func)
        sp.add_argument("--dir")
    for name, help, func in (
        ("kill", "SIGKILL one node", launcher.cmd_cluster_kill),
        ("start", "start one stopped node", launcher.cmd_cluster_start),
    ):
        sp = cmd(cls, name, help, func)
        sp.add_argument("node")
        sp.add_argument("--dir")

    et = sub.add_parser("etcd", help="start/stop a local etcd cluster (to try the etcd adapter)")
    ets = et.add_subparsers(dest="etcd_command", required=True, metavar="ACTION")
    eu = cmd(
        ets, "up", "start N etcd members, wait for a leader, write clusters.yaml", etcd.cmd_etcd_up
    )
    eu.add_argument("--nodes", type=int, default=3)
    eu.add_argument("--dir", help="cluster directory (default: STATE_DIR/etcd)")
    eu.add_argument("--base-port", type=int, help="peers on P+1.., clients on P+101..")
    eu.add_argument("--heartbeat-ms", type=int, default=100)
    eu.add_argument("--election-ms", type=int, default=1000)
    ed = cmd(ets, "down", "stop every etcd member (data kept)", etcd.cmd_etcd_down)
    ed.add_argument("--dir", help="cluster directory (default: the config entry's dir)")
    for sp in (eu, ed):
        sp.add_argument("--name", default="etcd", help="the cluster's name in clusters.yaml")

    nt = sub.add_parser("nats", help="start/stop a local NATS JetStream cluster")
    nts = nt.add_subparsers(dest="nats_command", required=True, metavar="ACTION")
    nu = cmd(
        nts,
        "up",
        "start N nats-servers, wait for a meta leader, write clusters.yaml",
        nats.cmd_nats_up,
    )
    nu.add_argument("--nodes", type=int, default=3)
    nu.add_argument("--dir", help="cluster directory (default: STATE_DIR/nats)")
    nu.add_argument("--base-port", type=int, help="clients on P+1.., routes P+51.., HTTP P+101..")
    nd = cmd(nts, "down", "stop every nats-server (data kept)", nats.cmd_nats_down)
    nd.add_argument("--dir", help="cluster directory (default: the config entry's dir)")
    for sp in (nu, nd):
        sp.add_argument("--name", default="nats", help="the cluster's name in clusters.yaml")

    cmd(sub, "clusters", "list configured clusters", cmd_clusters)
    stt = cmd(sub, "status", "members, roles, indexes, lag, warnings", cmd_status)
    stt.add_argument("--group-offset", type=int, default=0, help="first Raft group listed")
    stt.add_argument("--group-limit", type=int, default=10, help="Raft groups per page")
    w = cmd(sub, "watch", "live status view (Ctrl-C to stop)", cmd_watch)
    w.add_argument("--interval", type=float, default=0.5)
    w.add_argument("--count", type=int, help="stop after N refreshes")
    w.add_argument("--once", dest="count", action="store_const", const=1, help="one refresh")
    h = cmd(sub, "health", "pre-operation checks (exit 0 healthy, 1 not)", cmd_health)
    h.add_argument("--operation", help="also say whether this operation is safe now")
    vf = cmd(sub, "verify", "compare state hashes and logs (exit 0/1/2)", cmd_verify)
    e = cmd(sub, "elect", "move leadership (--to) or make a leaderless cluster elect", cmd_elect)
    e.add_argument("--to", help="target voter")
    mutation_flags(e)
    pt = cmd(sub, "put", "replicate KEY=VALUE through the leader", cmd_put)
    pt.add_argument("key")
    pt.add_argument("value")
    mutation_flags(pt)
    g = cmd(sub, "get", "read KEY (linearizable unless --stale)", cmd_get)
    g.add_argument("key")
    g.add_argument("--stale", action="store_true", help="read from any member, maybe stale")

    mb = sub.add_parser("member", help="membership changes, planned and guarded")
    mbs = mb.add_subparsers(dest="member_action", required=True, metavar="ACTION")
    for name, help in (
        ("add-learner", "add NODE as a learner (local clusters start its process)"),
        ("add-voter", "add NODE as a learner, wait until caught up, promote it"),
        ("promote", "promote the learner NODE to voter (only when caught up)"),
        ("remove", "remove NODE (the leader hands over first)"),
    ):
        sp = cmd(mbs, name, help, cmd_member)
        sp.add_argument("node")
        sp.add_argument("--peer-address", help="where NODE listens for peers (HOST:PORT)")
        sp.add_argument("--api-address", help="NODE's API address (HOST:PORT)")
        sp.add_argument("--timeout", type=float, default=30.0, help="catch-up wait, seconds")
        mutation_flags(sp)

    sn = cmd(sub, "snapshot", "snapshot and compact one node (--node) or all", cmd_snapshot)
    sn.add_argument("--node")
    mutation_flags(sn)
    rc = cmd(sub, "recover", "restart (local) a crashed node and wait until caught up", cmd_recover)
    rc.add_argument("node")
    rc.add_argument("--timeout", type=float, default=60.0)
    mutation_flags(rc)
    for sp in (stt, h, vf, e, sn, rc):
        sp.add_argument(
            "--group", help="one Raft group (NATS: meta, stream:NAME, consumer:STREAM/NAME)"
        )
    ft = cmd(sub, "fault", "inject a fault (sandbox only): " + "|".join(FAULT_KINDS), cmd_fault)
    ft.add_argument("kind", choices=list(FAULT_KINDS))
    ft.add_argument("nodes", nargs="*")
    mutation_flags(ft)

    dm = cmd(sub, "demo", "the whole story on a fresh local cluster (about a minute)", cmd_demo)
    dm.add_argument("--dir", help="cluster directory (default: STATE_DIR/demo)")
    dm.add_argument("--base-port", type=int)
    dm.add_argument("--keep", action="store_true", help="leave the cluster running")
    bn = cmd(
        sub,
        "bench",
        "compare ours with etcd and PySyncObj, each a fresh local 3-node cluster",
        cmd_bench,
    )
    bn.add_argument("--quick", action="store_true", help="1 s cells, 1 run, no catch-up")
    bn.add_argument("--compare", help="peers to run after ours: etcd,pysyncobj")
    bn.add_argument("--runs", type=int, help="runs per cell, medians reported (default 3)")
    bn.add_argument("--duration", type=float, help="seconds per run (default 5)")
    bn.add_argument(
        "--clients", help="concurrency levels (default 1,16,64; with --existing one level, 16)"
    )
    bn.add_argument("--failovers", type=int, help="kill -9 rounds per system (default 5)")
    bn.add_argument(
        "--catchup-entries", type=int, help="log size for the learner catch-up (0: skip)"
    )
    bn.add_argument("--chart", help="write an SVG chart of throughput and p50 to this file")
    bn.add_argument(
        "--existing",
        action="store_true",
        help="instead: write load on the configured cluster (guarded; sandbox only)",
    )
    bn.add_argument(
        "--big-state",
        action="store_true",
        help="instead: fill --keys unique 1 KiB keys with 16 writers; per-second "
        "throughput and max latency, leader changes, RSS, loop stalls, snapshots, "
        "restart and learner catch-up (with --compare etcd: etcd in the same run)",
    )
    bn.add_argument(
        "--keys", type=int, default=1_000_000, help="with --big-state (default 1000000)"
    )
    bn.add_argument(
        "--value-size", type=int, help="with --existing (default 64) or --big-state (1024)"
    )
    ch = cmd(
        sub, "chaos", "clients + faults on real processes; a verdict (sandbox)", chaos.cmd_chaos
    )
    chaos.add_arguments(ch)
    certs.add_arguments(sub, cmd)
    mc = cmd(sub, "mcp", "run the MCP server (stdio; --http for streamable HTTP)", cmd_mcp)
    add_server_arguments(mc)
    ap = cmd(
        sub, "approve", "a human approves a plan (needs a terminal; never via MCP)", cmd_approve
    )
    ap.add_argument("plan_id")
    au = cmd(sub, "audit", "show the audit log", cmd_audit)
    au.add_argument("--tail", type=int, default=20)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        UI(json_mode).error(InputError(str(e), "see raft-manager --help"), None)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return int(e.code or 0)
    ui = UI(args.json)
    try:
        return int(args.func(args, ui) or 0)
    except ManagerError as e:
        ui.error(e, getattr(args, "cluster", None))
        return e.exit_code
    except ClusterError as e:
        ui.error(ManagerError(str(e)), getattr(args, "cluster", None))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
