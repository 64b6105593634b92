"""Free loopback ports for local clusters.

A local cluster of N nodes uses peer ports ``base+1..base+N`` and API ports
``base+101..base+100+N``; one allocator finds such a block for ``cluster up``, the
demo, the embedded default cluster and the tests.
"""

from __future__ import annotations

import socket

EPHEMERAL_FLOOR = 32000  # the kernel hands out ephemeral ports from 32768 up


def port_free(port: int) -> bool:
    """Can a server bind ``port`` on 127.0.0.1 now (as the servers bind: SO_REUSEADDR)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: ports in TIME_WAIT are reusable, listening ones are not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ports_free(base: int, count: int = 9) -> bool:
    """Are the peer and API ports of ``count`` nodes at ``base`` all free?"""
    ports = [*range(base + 1, base + count + 1), *range(base + 101, base + count + 101)]
    return all(port_free(p) for p in ports)


def free_base_port(
    preferred: int = 7100, step: int = 300, tries: int = 60, count: int = 9
) -> int | None:
    """``preferred`` if its block is free, else the next free block; None if none is."""
    base = preferred
    for _ in range(tries):
        if base + 200 >= EPHEMERAL_FLOOR:
            base = 10000
        if ports_free(base, count):
            return base
        base += step
    return None


def ephemeral_port() -> int:
    """A port the kernel says is free right now (for a single listener in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
