"""``python -m raft_core.sim campaign|replay``: the randomized simulation campaign."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .campaign import replay_command, run_campaign, run_one


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raft_core.sim", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("campaign", help="run many randomized simulations")
    c.add_argument("--seeds", type=int, default=200, help="number of runs (default 200)")
    c.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    c.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes (default: min(2, CPUs))",
    )
    c.add_argument("--json", action="store_true", help="end with a JSON summary line")
    r = sub.add_parser("replay", help="re-run one seed and print its trace")
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--trace", action="store_true", help="print the trace even if it passes")
    sub.add_parser("story", help="a short narrated run of a simulated cluster")
    args = p.parse_args(argv)

    if args.cmd == "story":
        from .story import tell

        tell()
        return 0

    if args.cmd == "replay":
        res = run_one(args.seed, keep_trace=True)
        if not res.ok or args.trace:
            print("\n".join(res.trace))
        status = "ok" if res.ok else f"FAILED ({res.kind}): {res.reason}"
        print(f"seed {args.seed}: {status}")
        print(json.dumps(res.stats, sort_keys=True))
        return 0 if res.ok else 1

    seeds = list(range(args.start, args.start + args.seeds))
    done = 0

    def progress(res) -> None:
        nonlocal done
        done += 1
        if not res.ok:
            print(
                f"seed {res.seed} FAILED ({res.kind}): {res.reason.splitlines()[0]}\n"
                f"  replay: {replay_command(res.seed)}",
                file=sys.stderr if args.json else sys.stdout,
                flush=True,
            )
        elif not args.json and done % 100 == 0:
            print(f"{done}/{len(seeds)} runs", flush=True)

    summary = run_campaign(seeds, jobs=max(1, args.jobs), progress=progress)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(
            f"{summary['runs']} runs in {summary['seconds']} s: {len(summary['failures'])} failed"
        )
        for k in (
            "elections",
            "commits",
            "leadership_transfers",
            "membership_changes",
            "snapshots_installed",
            "crashes",
            "partitions",
        ):
            print(f"  {k}: {summary[k]}")
        for f in summary["failures"]:
            print(
                f"  seed {f['seed']}: {f['kind']}: {f['reason']}\n    {replay_command(f['seed'])}"
            )
    return 0 if not summary["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
