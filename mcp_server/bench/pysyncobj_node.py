"""One PySyncObj member for the comparison: a replicated dict, driven over stdin/stdout.

PySyncObj keeps its log in memory and never fsyncs (no journal file is configured;
with one it still does not fsync each entry). Its callers run inside the process, and
appends go out at once (``appendEntriesUseBatch=False``), as PySyncObj's own
benchmarks configure it. One command per stdin line, one JSON line back:

    status            -> {"leader": bool, "ready": bool}
    load N SECONDS    -> closed loop of N callers in this process (call it on the leader)
    probe             -> write every 10 ms until one commits -> {"probe_ok": unix time}

    python -m mcp_server.bench.pysyncobj_node SELF_ADDR PARTNER_ADDR...
"""

from __future__ import annotations

import json
import sys
import threading
import time

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from .loadgen import in_process_row

PROBE_EVERY_S = 0.01


class KV(SyncObj):
    def __init__(self, me: str, partners: list[str]) -> None:
        super().__init__(me, partners, SyncObjConf(appendEntriesUseBatch=False))
        self._data: dict[str, str] = {}

    @replicated
    def set(self, key: str, value: str) -> bool:
        self._data[key] = value
        return True


def _load(kv: KV, clients: int, duration_s: float) -> dict:
    """Closed loop: each caller issues its next write from the previous one's callback."""
    clock = time.perf_counter
    latencies: list[float] = []
    errors = [0]
    t_warm = clock() + 0.5
    t_end = t_warm + duration_s
    done = threading.Semaphore(0)
    value = "x" * 64
    cpu0 = time.process_time()

    def call(c: int, seq: int) -> None:
        t0 = clock()
        if t0 >= t_end:
            done.release()
            return

        def cb(_result: object, err: int) -> None:
            t1 = clock()
            if t_warm <= t1 <= t_end:
                if err == FAIL_REASON.SUCCESS:
                    latencies.append(t1 - t0)
                else:
                    errors[0] += 1
            call(c, seq + 1)

        kv.set(f"p{c}-{seq}", value, callback=cb)

    for c in range(clients):
        call(c, 0)
    for _ in range(clients):
        done.acquire(timeout=duration_s + 30)
    return in_process_row(clients, latencies, duration_s, errors[0], time.process_time() - cpu0)


def _probe(kv: KV, timeout_s: float = 30.0) -> dict:
    committed: list[float] = []
    ok = threading.Event()

    def cb(_result: object, err: int) -> None:
        if err == FAIL_REASON.SUCCESS and not ok.is_set():
            committed.append(time.time())
            ok.set()

    seq = 0
    deadline = time.monotonic() + timeout_s
    while not ok.wait(PROBE_EVERY_S):
        if time.monotonic() > deadline:
            return {"probe_ok": None}
        seq += 1
        kv.set("failover", str(seq), callback=cb)
    return {"probe_ok": committed[0]}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    kv = KV(args[0], args[1:])
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "status":
            out: dict = {"leader": kv._isLeader(), "ready": kv.isReady()}
        elif cmd[0] == "load":
            out = _load(kv, int(cmd[1]), float(cmd[2]))
        elif cmd[0] == "probe":
            out = _probe(kv)
        else:
            out = {"error": f"unknown command {cmd[0]!r}"}
        print(json.dumps(out), flush=True)
    kv.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
