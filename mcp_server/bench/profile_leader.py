"""Where our leader's time goes under load: py-spy samples of the leader process while
the load generator drives it, summed into top frames by share.

    python -m mcp_server.bench.profile_leader [--fsync always] [--clients 64]
        [--duration 10] [--rate 250] [--raw FILE]

Needs ``py-spy`` (the ``bench`` extra) and permission to trace (root, or
``kernel.yama.ptrace_scope=0``). Samples include idle time (``--idle``): a leaf in the
selector's ``select`` is the event loop waiting, shown as its own share, so the rest
adds up to where the busy time goes. Per frame: "self" counts samples whose leaf is that
function, "total" samples with that function anywhere on the stack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from .loadgen import KVPutRequests, run_load
from .ours import OursCluster

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """``func (path/file.py:line)`` -> ``func (file.py)`` with a short, readable path."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m["file"]
    for marker, keep in (("raft_core/", True), ("mcp_server/", True), ("site-packages/", False)):
        i = file.find(marker)
        if i >= 0:
            file = file[i:] if keep else file[i + len(marker) :]
            break
    else:
        file = re.sub(r"^.*/python3\.\d+/", "", file)
    return f"{m['func']} ({file})"


def summarize(collapsed: str, top: int = 20) -> dict:
    """Shares of samples by leaf ("self") and by presence on the stack ("total")."""
    leaf: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not stack or not n_s.isdigit():
            continue
        n = int(n_s)
        frames = stack.split(";")
        total += n
        if frames[0].startswith("thread ") or frames[0].startswith("process "):
            threads[frames[0].split(" (")[0] if "process" in frames[0] else frames[0]] += n
        names = [_name(f) for f in frames if not f.startswith(("thread ", "process "))]
        if not names:
            continue
        if names[-1].startswith("select (") and "selectors" in names[-1]:
            idle += n
            continue
        leaf[names[-1]] += n
        for name in set(names):
            anywhere[name] += n
    busy = max(total - idle, 1)

    def share(c: Counter[str]) -> list[dict]:
        return [
            {"frame": k, "share_of_busy": round(v / busy, 3), "samples": v}
            for k, v in c.most_common(top)
        ]

    return {
        "samples": total,
        "idle_share": round(idle / max(total, 1), 3),
        "self": share(leaf),
        "total": share(anywhere),
    }


def profile(
    fsync: str, clients: int, duration_s: float, rate: int, raw: Path | None, top: int = 20
) -> dict:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    with OursCluster(fsync) as c, tempfile.TemporaryDirectory() as d:
        pid = c.leader_pid()
        out = Path(d) / "leader.txt"
        api = c.leader_api()
        host, _, port = api.rpartition(":")
        result: dict = {}

        def load() -> None:
            r = asyncio.run(
                run_load(
                    host,
                    int(port),
                    clients=clients,
                    duration_s=duration_s + 2,
                    make_request=KVPutRequests(64),
                    headers={"Content-Type": "application/json"},
                )
            )
            result.update(r.to_dict())

        t = threading.Thread(target=load)
        t.start()
        subprocess.run(
            [spy, "record", "-p", str(pid), "-d", str(int(duration_s)), "-r", str(rate),
             "-f", "raw", "--idle", "--nonblocking", "-o", str(out)],
            check=True, capture_output=True,
        )  # fmt: skip
        t.join()
        text = out.read_text()
        if raw:
            raw.write_text(text)
    summary = summarize(text, top)
    summary["load"] = {k: result.get(k) for k in ("clients", "throughput", "p50_ms", "p99_ms")}
    summary["fsync"] = fsync
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mcp_server.bench.profile_leader")
    p.add_argument("--fsync", default="always", choices=("always", "never"))
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    p.add_argument("--top", type=int, default=20)
    a = p.parse_args(argv)
    s = profile(a.fsync, a.clients, a.duration, a.rate, a.raw, a.top)
    print(json.dumps(s, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
