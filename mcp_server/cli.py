"""``raft-manager``: the command line over the guarded operations.

``raft-manager [--config FILE] [--cluster NAME] COMMAND [--json]`` (DESIGN.md). With
``--json`` a command prints exactly one JSON document on stdout (the operation's
pydantic model; an ``ErrorReport`` on failure) and progress goes to stderr.

Exit codes: 0 ok; 1 refused, unhealthy, divergent, unsafe plan or failed; 2 usage or
configuration error, or verify could not verify; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import policy, render
from .audit import AuditLog
from .config import ClusterConfig, Config, load_config, state_dir
from .errors import ConfigError, ManagerError, Refused
from .local import describe, free_base_port, ports_free
from .local_cluster import ClusterError, LocalCluster, LocalSettings
from .models import DemoStep, ErrorReport, Plan
from .operations import Manager, ProgressFn, list_clusters

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """exit codes: 0 ok; 1 refused, unhealthy, divergent, unsafe plan or failed;
2 usage/configuration error or verify could not verify; 130 interrupted.
With --json every command prints exactly one JSON document on stdout."""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


# -- output ----------------------------------------------------------------------------


class UI:
    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def emit(self, model: BaseModel, view: Callable[[Any], Any]) -> None:
        if self.json:
            sys.stdout.write(model.model_dump_json(indent=2) + "\n")
            sys.stdout.flush()
        else:
            self.out.print(view(model))

    def note(self, text: str) -> None:
        self.err.print(Text(text, style="dim"))

    @contextlib.contextmanager
    def spinner(self, message: str) -> Iterator[ProgressFn]:
        if not self.err.is_terminal:
            yield lambda done, total, msg: None
            return
        with self.err.status(message) as status:

            def progress(done: float, total: float | None, msg: str) -> None:
                status.update(f"{message}: {msg}")

            yield progress

    def error(self, e: ManagerError, cluster: str | None) -> None:
        if self.json:
            doc = ErrorReport(
                error=e.code,  # type: ignore[arg-type]
                operation=e.operation,
                cluster=cluster,
                reason=e.reason,
                reasons=e.reasons,
                next_step=e.next_step,
            )
            sys.stdout.write(doc.model_dump_json(indent=2) + "\n")
            sys.stdout.flush()
            return
        label = {"refused": "refused", "config": "error"}.get(e.code, "failed")
        self.err.print(Text(f"{label}: {e.reason}", style="bold red"))
        for r in e.reasons:
            if r != e.reason:
                self.err.print(Text(f"  - {r}", style="red"))
        if e.next_step:
            self.err.print(Text(f"next: {e.next_step}", style="yellow"))


# -- helpers ---------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _manager(args: argparse.Namespace, ui: UI, *, start: bool = True) -> Manager:
    cfg = _config(args)
    c = cfg.cluster(args.cluster)
    if start and c.auto_start and c.is_local:
        with ui.spinner(f"starting the {c.name} cluster"):
            return Manager.open(cfg, c.name, start=True, progress=ui.note)
    return Manager(c, config=cfg)


def _plan_exit(result: Any) -> int:
    if isinstance(result, Plan) and not result.applied:
        return EXIT_OK if result.safe else EXIT_FAILED
    return EXIT_OK


def _mutation_flags(sp: argparse.ArgumentParser) -> None:
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--dry-run", action="store_true", help="only plan; print the plan and its id")
    g.add_argument("--plan-id", help="apply the plan a --dry-run printed (required in production)")


# -- commands: observation -------------------------------------------------------------


def cmd_clusters(args: argparse.Namespace, ui: UI) -> int:
    ui.emit(list_clusters(_config(args)), render.clusters_view)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, ui: UI) -> int:
    with _manager(args, ui) as mgr:
        ui.emit(mgr.status(), render.status_view)
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, ui: UI) -> int:
    with _manager(args, ui) as mgr:
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
    with _manager(args, ui) as mgr:
        h = mgr.health_check(args.operation)
    ui.emit(h, render.health_view)
    good = h.safe if args.operation else h.healthy
    return EXIT_OK if good else EXIT_FAILED


def cmd_verify(args: argparse.Namespace, ui: UI) -> int:
    with _manager(args, ui) as mgr:
        v = mgr.verify_consistency()
    ui.emit(v, render.verify_view)
    return {True: EXIT_OK, False: EXIT_FAILED, None: EXIT_USAGE}[v.consistent]


def cmd_get(args: argparse.Namespace, ui: UI) -> int:
    with _manager(args, ui) as mgr:
        r = mgr.read(args.key, "stale" if args.stale else "linearizable")
    ui.emit(r, render.read_view)
    return EXIT_OK


# -- commands: mutations ---------------------------------------------------------------


def cmd_put(args: argparse.Namespace, ui: UI) -> int:
    with _manager(args, ui) as mgr:
        r = mgr.replicate(
            [{"key": args.key, "value": args.value}], dry_run=args.dry_run, plan_id=args.plan_id
        )
    ui.emit(r, render.plan_view if isinstance(r, Plan) else render.replicate_view)
    return _plan_exit(r)


def cmd_elect(args: argparse.Namespace, ui: UI) -> int:
    with _manager(args, ui) as mgr, ui.spinner("election") as progress:
        r = mgr.elect_leader(args.to, dry_run=args.dry_run, plan_id=args.plan_id, progress=progress)
    ui.emit(r, render.plan_view if isinstance(r, Plan) else render.election_view)
    return _plan_exit(r)


def cmd_member(args: argparse.Namespace, ui: UI) -> int:
    action = args.member_action.replace("-", "_")
    with _manager(args, ui) as mgr, ui.spinner(f"{args.member_action} {args.node}") as progress:
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
    ui.emit(r, render.plan_view)
    return _plan_exit(r)


def cmd_snapshot(args: argparse.Namespace, ui: UI) -> int:
    with _manager(args, ui) as mgr:
        r = mgr.snapshot(args.node, dry_run=args.dry_run, plan_id=args.plan_id)
    if isinstance(r, Plan):
        ui.emit(r, render.plan_view)
        return _plan_exit(r)
    ui.emit(r, render.snapshot_view)
    return EXIT_OK if all(s.ok for s in r.snapshots) else EXIT_FAILED


def cmd_recover(args: argparse.Namespace, ui: UI) -> int:
    with _manager(args, ui) as mgr, ui.spinner(f"recovering {args.node}") as progress:
        r = mgr.recover_node(
            args.node,
            dry_run=args.dry_run,
            plan_id=args.plan_id,
            progress=progress,
            timeout_s=args.timeout,
        )
    if isinstance(r, Plan):
        ui.emit(r, render.plan_view)
        return _plan_exit(r)
    ui.emit(r, render.recover_view)
    return EXIT_OK if r.caught_up else EXIT_FAILED


def cmd_fault(args: argparse.Namespace, ui: UI) -> int:
    with _manager(args, ui) as mgr:
        r = mgr.inject_fault(args.kind, args.nodes, dry_run=args.dry_run, plan_id=args.plan_id)
    ui.emit(r, render.plan_view if isinstance(r, Plan) else render.fault_view)
    return _plan_exit(r)


# -- commands: the local launcher ------------------------------------------------------


def _launcher_target(args: argparse.Namespace) -> tuple[ClusterConfig, Path]:
    """The cluster a `cluster ...` command acts on: --dir, else the selected local cluster."""
    cfg: Config | None = None
    if args.dir:
        d = Path(args.dir).expanduser().resolve()
        with contextlib.suppress(ConfigError):
            cfg = _config(args)
        for c in cfg.clusters.values() if cfg else []:
            if c.dir and Path(c.dir) == d:
                return c, d
        return ClusterConfig(name=f"dir:{d}", dir=str(d), mode="sandbox"), d
    cfg = _config(args)
    c = cfg.cluster(args.cluster)
    if not c.is_local:
        raise ConfigError(
            f"cluster {c.name!r} is not a local cluster (it has no `dir`)",
            "pass --dir DIR, or pick a local cluster with --cluster",
        )
    return c, Path(c.dir)  # type: ignore[arg-type]


def _audit_for(args: argparse.Namespace) -> AuditLog:
    try:
        return AuditLog(_config(args).audit_path())
    except ConfigError:
        return AuditLog(state_dir() / "audit.jsonl")


def _launch(
    args: argparse.Namespace,
    operation: str,
    arguments: dict[str, Any],
    fn: Callable[[ClusterConfig, Path], Any],
) -> Any:
    c, d = _launcher_target(args)
    audit = _audit_for(args)
    rec = lambda outcome, reason=None, result=None: audit.record(  # noqa: E731
        cluster=c.name,
        mode=c.mode,
        operation=operation,
        arguments=arguments,
        outcome=outcome,
        reason=reason,
        result=result,
    )
    try:
        policy.check(
            cluster=c.name,
            mode=c.mode,
            read_only=c.read_only,
            allowed_operations=c.allowed_operations,
            operation=operation,
        )
        out = fn(c, d)
    except Refused as e:
        rec("refused", e.reason)
        raise
    except ClusterError as e:
        rec("failed", str(e))
        raise ManagerError(str(e), f"see the node logs in {d}", operation=operation) from None
    except ManagerError as e:
        rec("failed", e.reason)
        raise
    if operation != "cluster_status":
        rec("ok", result={"detail": getattr(out, "detail", None)})
    return out


def cmd_cluster_up(args: argparse.Namespace, ui: UI) -> int:
    def up(c: ClusterConfig, d: Path):
        if args.base_port is not None:
            base = args.base_port
            if not ports_free(base, args.nodes):
                raise ConfigError(
                    f"ports {base + 1}-{base + args.nodes} or "
                    f"{base + 101}-{base + 100 + args.nodes} are in use",
                    "pick another --base-port (or stop what uses them)",
                )
        else:
            base = free_base_port(c.base_port or 7100)
        token_file = str(Path(args.api_token_file).resolve()) if args.api_token_file else None
        settings = LocalSettings(
            allow_fault_injection=args.allow_fault_injection,
            tick_ms=args.tick_ms,
            election_ticks=args.election_ticks,
            fsync=args.fsync,
            api_token_file=token_file,
        )
        t0 = time.monotonic()
        with ui.spinner(f"starting {args.nodes} nodes and waiting for a leader"):
            lc = LocalCluster.up(d, nodes=args.nodes, base_port=base, settings=settings)
        took = time.monotonic() - t0
        st = describe(lc, "up", took, "")
        st.detail = f"{args.nodes} nodes up in {d}; leader {st.leader} (in {took:.1f}s)"
        return st

    arguments = {
        "dir": args.dir,
        "nodes": args.nodes,
        "base_port": args.base_port,
        "allow_fault_injection": args.allow_fault_injection,
    }
    ui.emit(_launch(args, "cluster_up", arguments, up), render.local_view)
    return EXIT_OK


def cmd_cluster_down(args: argparse.Namespace, ui: UI) -> int:
    def down(c: ClusterConfig, d: Path):
        t0 = time.monotonic()
        lc = LocalCluster.load(d)
        with ui.spinner("stopping the cluster"):
            stopped = lc.down()
        return describe(
            lc,
            "down",
            time.monotonic() - t0,
            f"stopped {len(stopped)} process(es): {', '.join(stopped) or 'none was running'}",
        )

    ui.emit(_launch(args, "cluster_down", {"dir": args.dir}, down), render.local_view)
    return EXIT_OK


def _cluster_node_command(
    args: argparse.Namespace, ui: UI, action: str, act: Callable[[LocalCluster], None], done: str
) -> int:
    """`cluster kill|start NODE`: one launcher action on one node, audited."""

    def run(c: ClusterConfig, d: Path):
        t0 = time.monotonic()
        lc = LocalCluster.load(d)
        act(lc)
        return describe(lc, action, time.monotonic() - t0, done)

    arguments = {"dir": args.dir, "node": args.node}
    ui.emit(_launch(args, f"cluster_{action}", arguments, run), render.local_view)
    return EXIT_OK


def cmd_cluster_kill(args: argparse.Namespace, ui: UI) -> int:
    return _cluster_node_command(
        args, ui, "kill", lambda lc: lc.kill(args.node), f"killed {args.node} (SIGKILL)"
    )


def cmd_cluster_start(args: argparse.Namespace, ui: UI) -> int:
    def start(lc: LocalCluster) -> None:
        with ui.spinner(f"starting {args.node}"):
            lc.start(args.node)

    return _cluster_node_command(args, ui, "start", start, f"started {args.node}")


def cmd_cluster_status(args: argparse.Namespace, ui: UI) -> int:
    def status(c: ClusterConfig, d: Path):
        t0 = time.monotonic()
        lc = LocalCluster.load(d)
        running = sum(lc.alive(n) for n in lc.nodes)
        return describe(
            lc, "status", time.monotonic() - t0, f"{running}/{len(lc.nodes)} running in {d}"
        )

    ui.emit(_launch(args, "cluster_status", {"dir": args.dir}, status), render.local_view)
    return EXIT_OK


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
    from .bench import run_bench

    with _manager(args, ui) as mgr, ui.spinner(f"{args.clients} clients for {args.duration}s"):
        r = run_bench(
            mgr, clients=args.clients, duration_s=args.duration, value_size=args.value_size
        )
    ui.emit(r, render.bench_view)
    return EXIT_OK


# -- command: chaos (self-contained: mcp_server/chaos) ---------------------------------


def cmd_chaos(args: argparse.Namespace, ui: UI) -> int:
    import random as _random

    from .chaos import ChaosOptions, run_chaos
    from .chaos.runner import default_out_dir
    from .chaos.schedule import parse_nemeses
    from .chaos.summary import verdict_view

    try:
        nemeses = parse_nemeses(args.nemesis)
    except ValueError as e:
        raise ConfigError(str(e), "see raft-manager chaos --help") from None
    if args.duration <= 0 or args.clients < 1:
        raise ConfigError("--duration must be > 0 and --clients >= 1", "see raft-manager --help")
    seed = args.seed if args.seed is not None else _random.randrange(1_000_000)
    named = None
    cfg = None
    if args.cluster:
        cfg = _config(args)
        named = cfg.cluster(args.cluster)
    out = Path(args.out).expanduser() if args.out else default_out_dir(seed)
    ui.note(f"chaos: seed {seed}, {args.duration:.0f}s, nemeses {','.join(nemeses)}; out {out}")
    verdict = run_chaos(
        ChaosOptions(
            duration_s=args.duration,
            nemeses=nemeses,
            seed=seed,
            out_dir=out,
            clients=args.clients,
            cluster=named,
            config=cfg,
        ),
        log=ui.note,
    )
    ui.emit(verdict, verdict_view)
    return EXIT_OK if verdict.ok else EXIT_FAILED


def cmd_mcp(args: argparse.Namespace, ui: UI) -> int:
    try:
        from . import server  # type: ignore[attr-defined]
    except ImportError:
        server = None
    entry = getattr(server, "main", None) if server is not None else None
    if entry is None:
        raise ManagerError(
            "the MCP server is not part of this build yet",
            "it arrives as `raft-manager-mcp [--config FILE]`; until then use the CLI with --json",
        )
    argv = [*(["--config", args.config] if args.config else [])]
    return int(entry(argv) or 0)


def cmd_audit(args: argparse.Namespace, ui: UI) -> int:
    audit = _audit_for(args)
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
    up = cmd(cls, "up", "start N raft-node processes and wait for a leader", cmd_cluster_up)
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--dir", help="cluster directory (default: the selected local cluster's)")
    up.add_argument("--base-port", type=int, help="peers on P+1.., APIs on P+101.. (default 7100)")
    up.add_argument("--allow-fault-injection", action="store_true")
    up.add_argument("--tick-ms", type=int, default=50)
    up.add_argument("--election-ticks", type=int, default=10)
    up.add_argument("--fsync", choices=["always", "never"], default="always")
    up.add_argument("--api-token-file", help="file holding an API token the nodes will require")
    for name, help, func in (
        ("down", "stop every process (data kept)", cmd_cluster_down),
        ("status", "processes, pids, roles", cmd_cluster_status),
    ):
        sp = cmd(cls, name, help, func)
        sp.add_argument("--dir")
    for name, help, func in (
        ("kill", "SIGKILL one node", cmd_cluster_kill),
        ("start", "start one stopped node", cmd_cluster_start),
    ):
        sp = cmd(cls, name, help, func)
        sp.add_argument("node")
        sp.add_argument("--dir")

    cmd(sub, "clusters", "list configured clusters", cmd_clusters)
    cmd(sub, "status", "members, roles, indexes, lag, warnings", cmd_status)
    w = cmd(sub, "watch", "live status view (Ctrl-C to stop)", cmd_watch)
    w.add_argument("--interval", type=float, default=0.5)
    w.add_argument("--count", type=int, help="stop after N refreshes")
    w.add_argument("--once", dest="count", action="store_const", const=1, help="one refresh")
    h = cmd(sub, "health", "pre-operation checks (exit 0 healthy, 1 not)", cmd_health)
    h.add_argument("--operation", help="also say whether this operation is safe now")
    cmd(sub, "verify", "compare state hashes and logs (exit 0/1/2)", cmd_verify)
    e = cmd(sub, "elect", "move leadership (--to) or make a leaderless cluster elect", cmd_elect)
    e.add_argument("--to", help="target voter")
    _mutation_flags(e)
    pt = cmd(sub, "put", "replicate KEY=VALUE through the leader", cmd_put)
    pt.add_argument("key")
    pt.add_argument("value")
    _mutation_flags(pt)
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
        _mutation_flags(sp)

    sn = cmd(sub, "snapshot", "snapshot and compact one node (--node) or all", cmd_snapshot)
    sn.add_argument("--node")
    _mutation_flags(sn)
    rc = cmd(sub, "recover", "restart (local) a crashed node and wait until caught up", cmd_recover)
    rc.add_argument("node")
    rc.add_argument("--timeout", type=float, default=60.0)
    _mutation_flags(rc)
    ft = cmd(sub, "fault", "inject a fault (sandbox only): partition|heal|kill|restart", cmd_fault)
    ft.add_argument("kind", choices=["partition", "heal", "kill", "restart"])
    ft.add_argument("nodes", nargs="*")
    _mutation_flags(ft)

    dm = cmd(sub, "demo", "the whole story on a fresh local cluster (about a minute)", cmd_demo)
    dm.add_argument("--dir", help="cluster directory (default: STATE_DIR/demo)")
    dm.add_argument("--base-port", type=int)
    dm.add_argument("--keep", action="store_true", help="leave the cluster running")
    bn = cmd(sub, "bench", "write throughput/latency through the leader (sandbox)", cmd_bench)
    bn.add_argument("--clients", type=int, default=16)
    bn.add_argument("--duration", type=float, default=3.0)
    bn.add_argument("--value-size", type=int, default=64)
    ch = cmd(sub, "chaos", "clients + faults on real processes; a verdict (sandbox)", cmd_chaos)
    ch.add_argument("--duration", type=float, default=60.0, help="seconds of workload")
    ch.add_argument(
        "--nemesis", help="kill,pause,partition,membership,transfer,disk (default: all)"
    )
    ch.add_argument("--seed", type=int, help="schedule seed (default: random, printed)")
    ch.add_argument("--clients", type=int, default=5, help="concurrent clients")
    ch.add_argument("--out", help="where history, timeline and verdict go")
    cmd(sub, "mcp", "run the MCP server (stdio)", cmd_mcp)
    au = cmd(sub, "audit", "show the audit log", cmd_audit)
    au.add_argument("--tail", type=int, default=20)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        UI(json_mode).error(ConfigError(str(e), "see raft-manager --help"), None)
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
