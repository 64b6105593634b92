"""Where our leader's time goes under load: py-spy samples of the leader process while
the load generator drives it, summed into top frames by share.

    python -m mcp_server.bench.profile_leader [--fsync always] [--clients 64]
        [--duration 10] [--rate 250] [--raw FILE]

Needs ``py-spy`` (the ``bench`` extra) and permission to trace (root, or
``kernel.yama.ptrace_scope=0``). Samples include idle time (``--idle``): a leaf in the
selector's ``select`` is the event loop waiting, a pool thread's ``_worker`` leaf is the
disk thread waiting; each thread group shows that idle share apart, so the rest adds up
to where its busy time goes. Per frame: "self" counts busy samples whose leaf is that
function, "total" busy samples with that function anywhere on the stack.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from .loadgen import KVPutRequests, run_load_sync
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


def _is_idle(leaf: str) -> bool:
    """The loop waiting in its selector, or a pool thread waiting for work."""
    return (
        leaf.endswith("select (selectors.py)") or leaf == "_worker (concurrent/futures/thread.py)"
    )


def _thread_of(names: list[str]) -> str:
    """A pool thread's stack starts in ``Thread._bootstrap``; any other (even when py-spy
    could not walk it to the bottom) is the event loop's."""
    return "threads" if "bootstrap (threading.py)" in names[0] else "event loop"


def summarize(collapsed: str, top: int = 20) -> dict:
    """Per thread group (the event loop's thread; the disk and other pool threads): its
    idle share, and its busy samples' shares by leaf ("self") and by presence on the
    stack ("total")."""
    groups: dict[str, dict] = {}
    for line in collapsed.splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not stack or not n_s.isdigit():
            continue
        n = int(n_s)
        names = [_name(f) for f in stack.split(";") if not f.startswith(("thread ", "process "))]
        if not names:
            continue
        g = groups.setdefault(
            _thread_of(names), {"samples": 0, "idle": 0, "self": Counter(), "total": Counter()}
        )
        g["samples"] += n
        if _is_idle(names[-1]):
            g["idle"] += n
            continue
        g["self"][names[-1]] += n
        for name in set(names):
            g["total"][name] += n

    def share(c: Counter[str], busy: int) -> list[dict]:
        return [
            {"frame": k, "share_of_busy": round(v / busy, 3), "samples": v}
            for k, v in c.most_common(top)
        ]

    out = {}
    for name, g in sorted(groups.items()):
        busy = max(g["samples"] - g["idle"], 1)
        out[name] = {
            "samples": g["samples"],
            "idle_share": round(g["idle"] / max(g["samples"], 1), 3),
            "self": share(g["self"], busy),
            "total": share(g["total"], busy),
        }
    return out


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
            r = run_load_sync(
                host,
                int(port),
                clients=clients,
                duration_s=duration_s + 2,
                make_request=KVPutRequests(64),
                headers={"Content-Type": "application/json"},
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
    load = {k: result.get(k) for k in ("clients", "throughput", "p50_ms", "p99_ms")}
    return {"fsync": fsync, "load": load, "threads": summarize(text, top)}


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
