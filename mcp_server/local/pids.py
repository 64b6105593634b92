"""Process primitives shared by the local clusters (raft-node and etcd members).

Both kinds of local cluster run their members as children in their own session and
record their pids; whether a pid is still a live process, whether it is frozen by
SIGSTOP, and sending it a signal are the same question for both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def spawn(argv: list[str], log_path: Path, cwd: Path) -> int:
    """Start a member process in its own session (a terminal's Ctrl-C must not reach
    it), output appended to ``log_path``; its pid."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=cwd
        )
    return proc.pid


def state(pid: int) -> str:
    """The process's state letter from ``/proc`` (R, S, T, Z, ...), or "?"."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def alive(pid: int | None) -> bool:
    """Is ``pid`` a live process? A zombie child of ours counts as dead (and is reaped,
    so that the pid is really gone once this says so)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    if state(pid) in ("Z", "X"):
        # Exited, but a multi-threaded child (etcd is Go) shows "Z" while its other
        # threads finish and cannot be reaped without waiting: wait, it takes moments.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        return False
    return True


def frozen(pid: int | None) -> bool:
    """Alive but stopped by SIGSTOP (``fault stop``)."""
    return alive(pid) and state(pid or 0) == "T"


def send(pid: int, sig: signal.Signals, wait_s: float = 5.0) -> None:
    """Send ``sig``; after SIGKILL, wait (up to ``wait_s``) until the process is gone."""
    os.kill(pid, sig)
    if sig == signal.SIGKILL:
        deadline = time.monotonic() + wait_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)


def stop(pids: Sequence[int | None], grace_s: float) -> list[bool]:
    """Stop every live process of ``pids``: SIGTERM (after SIGCONT, since a frozen
    process cannot act on it), then SIGKILL whatever is still alive ``grace_s`` later.
    Which of them were running, in order: one cluster's ``down`` for both kinds."""
    running = [alive(pid) for pid in pids]
    for pid, up in zip(pids, running, strict=True):
        if up:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # type: ignore[arg-type]
                os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
    deadline = time.monotonic() + grace_s
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
    return running
