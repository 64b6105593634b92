"""What the harness reads about processes and the machine (Linux ``/proc``).

CPU seconds per process tell a slow client from a slow server; the peak resident set
(``VmHWM``) is the memory figure the catch-up target asks for; the load average at the
start of each system's run says how shared the machine was.
"""

from __future__ import annotations

import math
import os
import platform


def proc_cpu_s(pid: int) -> float:
    """user+system CPU seconds of a process; NaN when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set size (``VmHWM``) in MiB; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_parts_mb(pid: int) -> dict[str, float] | None:
    """The resident set now, split: ``anon`` (heap, stacks: the process's own memory)
    and ``file`` (mapped file pages, such as a store's memory map: page cache the
    kernel can take back), in MiB; None if unreadable."""
    parts: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:")):
                    key = "anon" if line.startswith("RssAnon") else "file"
                    parts[key] = round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return parts if len(parts) == 2 else None


def load_average() -> float:
    """The 1-minute load average (the machine's business when a system's run starts)."""
    return round(os.getloadavg()[0], 2)


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
    }
