"""``raft-manager chaos``: clients and a nemesis against a sandbox cluster, then a verdict.

The run itself is ``mcp_server.chaos``; this module parses the flags, picks the cluster
(``--cluster``: a local raft-node or etcd sandbox; none: a throwaway raft-node cluster)
and prints the verdict. Exit 0 only when the verdict has no anomaly.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from ..core import InputError
from .ui import EXIT_FAILED, EXIT_OK, UI, config_of


def add_arguments(ch: argparse.ArgumentParser) -> None:
    ch.add_argument("--duration", type=float, default=60.0, help="seconds of workload")
    ch.add_argument(
        "--nemesis", help="kill,pause,partition,membership,transfer,disk (default: all)"
    )
    ch.add_argument("--seed", type=int, help="schedule seed (default: random, printed)")
    ch.add_argument("--clients", type=int, default=5, help="concurrent clients")
    ch.add_argument("--out", help="where history, timeline and verdict go")
    ch.add_argument(
        "--network",
        choices=["api", "nft"],
        default="api",
        help="partitions through the node fault API (default) or as nftables rules in the "
        "members' network namespaces (nft: a --cluster whose members have their own)",
    )


def cmd_chaos(args: argparse.Namespace, ui: UI) -> int:
    from .. import chaos  # the chaos package loads only for this command
    from ..chaos.runner import default_out_dir
    from ..chaos.schedule import parse_nemeses
    from ..chaos.summary import verdict_view

    try:
        nemeses = parse_nemeses(args.nemesis)
    except ValueError as e:
        raise InputError(str(e), "see raft-manager chaos --help") from None
    if args.duration <= 0 or args.clients < 1:
        raise InputError("--duration must be > 0 and --clients >= 1", "see raft-manager --help")
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    cfg = named = None
    if args.cluster:
        cfg = config_of(args)
        named = cfg.cluster(args.cluster)
    elif args.network == "nft":
        raise InputError(
            "--network nft needs --cluster: a cluster whose members run in network namespaces "
            "of their own (the throwaway cluster's all share this machine's)",
            "see docs/three-machines.md (python tests/netns_bed.py chaos DIR ... runs one here)",
        )
    out = Path(args.out).expanduser() if args.out else default_out_dir(seed)
    ui.note(
        f"chaos: seed {seed}, {args.duration:.0f}s, nemeses {','.join(nemeses)}, "
        f"network faults via {args.network}; out {out}"
    )
    verdict = chaos.run_chaos(
        chaos.ChaosOptions(
            duration_s=args.duration,
            nemeses=nemeses,
            seed=seed,
            out_dir=out,
            clients=args.clients,
            cluster=named,
            config=cfg,
            network=args.network,
        ),
        log=ui.note,
    )
    ui.emit(verdict, verdict_view)
    return EXIT_OK if verdict.ok else EXIT_FAILED
