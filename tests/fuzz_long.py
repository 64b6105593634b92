"""Long fuzz runs by hand: ``python tests/fuzz_long.py TARGET --inputs N [--seed S]``.

Targets are those of :mod:`tests.fuzz_targets` (``peer``, ``wal``, ``snapshot``,
``http``). The suite runs a few hundred hypothesis examples per target; this runner
goes much further, cheaply: seeded random mutation of valid inputs (bit flips, byte
sets, inserts, deletes, splices, "interesting" values such as 4 GB length prefixes and
msgpack containers claiming 4G items), half of them with checksums repaired so they
reach the parsers behind the CRCs, plus some pure noise. Reproducible: the same seed
gives the same inputs.

It never stops at a failure: every distinct failure (exception type and the line it
came from) is counted, its first input saved under ``--out`` (default
``fuzz-findings/``), and the totals printed at the end together with the slowest input
(CPU time; a hang shows there) and the peak resident memory (an unbounded allocation shows
there). Exit status 1 if anything failed or an input took longer than ``--slow`` s.

Run it niced in the background, e.g.::

    nice -n 19 .venv/bin/python tests/fuzz_long.py wal --inputs 1000000 > wal.log 2>&1 &
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
import traceback
from pathlib import Path

from fuzz_targets import TARGETS, generate


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    last = tb[-1] if tb else None
    return f"{type(exc).__name__} at {last.filename}:{last.lineno}" if last else type(exc).__name__


def run(name: str, inputs: int, seed: int, out: Path, slow: float, report_every: int) -> int:
    target = TARGETS[name]
    rng = random.Random(seed)
    corpus = target.seeds()
    failures: dict[str, int] = {}
    slowest = (0.0, b"")
    start = time.monotonic()
    for i in range(1, inputs + 1):
        data = generate(target, rng, corpus)
        t0 = time.thread_time()  # CPU time: a niced run being descheduled is no hang
        try:
            target.check(data)
        except Exception as exc:
            key = _where(exc)
            if key not in failures:
                out.mkdir(parents=True, exist_ok=True)
                path = out / f"{name}-{len(failures)}.bin"
                path.write_bytes(data)
                print(f"[{i}] NEW FAILURE {key}: {exc!r} (input saved to {path})", flush=True)
            failures[key] = failures.get(key, 0) + 1
        took = time.thread_time() - t0
        if took > slowest[0]:
            slowest = (took, data)
        if report_every and i % report_every == 0:
            rate = i / (time.monotonic() - start)
            print(f"[{i}] {rate:.0f} inputs/s, {sum(failures.values())} failures", flush=True)
    elapsed = time.monotonic() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"target={name} seed={seed} inputs={inputs} elapsed={elapsed:.0f}s "
        f"failures={sum(failures.values())} distinct={len(failures)} "
        f"slowest={slowest[0] * 1000:.1f}ms-cpu ({len(slowest[1])} bytes) peak_rss={rss_mb:.0f}MB"
    )
    for key, count in sorted(failures.items()):
        print(f"  {count:8d}  {key}")
    return 1 if failures or slowest[0] > slow else 0


def main(argv: list[str] | None = None) -> int:
    doc = (__doc__ or "").split("\n")[0]
    p = argparse.ArgumentParser(prog="python tests/fuzz_long.py", description=doc)
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--inputs", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("fuzz-findings"))
    p.add_argument("--slow", type=float, default=1.0, help="seconds per input counted as a hang")
    p.add_argument("--report-every", type=int, default=100_000)
    a = p.parse_args(argv)
    return run(a.target, a.inputs, a.seed, a.out, a.slow, a.report_every)


if __name__ == "__main__":
    sys.exit(main())
