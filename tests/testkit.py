"""What every test file shares for waiting and ports: one ``wait_until``, one port
allocator (``reserve_base_port`` / ``release_base_port``), ``free_port``, and
``started_single_node`` for in-process tests of one ``RaftNode``.

Port blocks: a local cluster's node i listens on base+i (peers) and base+100+i (API);
``add_node(base_port=base+10)`` uses base+11.. and base+111..; a block of 200 ports
covers a cluster and the nodes a test adds. Blocks lie in 12000..32600, below the
kernel's ephemeral range (32768+), and a block is reserved across concurrent pytest
sessions with a lock file for as long as its cluster runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import pytest

from mcp_server.local.ports import ephemeral_port, ports_free
from raft_core.node.config import NodeConfig
from raft_core.node.server import RaftNode
from raft_core.status import NodeRole

T = TypeVar("T")

PORT_LOW, PORT_HIGH, PORT_BLOCK = 12000, 32600, 200
NODES_PER_BLOCK = 20
_LOCK_DIR = Path(tempfile.gettempdir()) / "agent-raft-manager-test-ports"
_blocks = itertools.count()
_held: dict[int, IO[str]] = {}
_mutex = threading.Lock()


class _Deadline:
    """The one rule of every wait here: done when the predicate is truthy, failed (with
    what it waited for and the last answer) once ``timeout`` seconds have passed."""

    def __init__(self, timeout: float, what: str) -> None:
        self.timeout, self.what = timeout, what
        self.at = time.monotonic() + timeout

    def done(self, last: Any) -> bool:
        if last:
            return True
        if time.monotonic() >= self.at:
            raise AssertionError(
                f"timed out after {self.timeout:.1f}s waiting for {self.what} (last={last!r})"
            )
        return False


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = _Deadline(timeout, what)
    while not deadline.done(last := predicate()):
        time.sleep(interval)
    return last


async def until(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    what: str = "the condition",
    *,
    interval: float = 0.01,
) -> T:
    """``wait_until`` for code that shares the event loop with what it waits for: it
    yields to the loop between polls, so a busy machine only makes it slower."""
    deadline = _Deadline(timeout, what)
    while not deadline.done(last := predicate()):
        await asyncio.sleep(interval)
    return last


def reserve_base_port() -> int:
    """A free block of ports, reserved (also against other pytest sessions) until released."""
    _LOCK_DIR.mkdir(exist_ok=True)
    n = (PORT_HIGH - PORT_LOW) // PORT_BLOCK
    start = os.getpid() % n  # concurrent test runs start in different blocks
    with _mutex:
        for _ in range(n):
            base = PORT_LOW + ((start + next(_blocks)) % n) * PORT_BLOCK
            if base in _held:
                continue
            f = open(_LOCK_DIR / f"{base}.lock", "w")  # noqa: SIM115 - held while in use
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            if ports_free(base, NODES_PER_BLOCK):
                _held[base] = f
                return base
            f.close()
    raise RuntimeError(f"no free block of ports in {PORT_LOW}..{PORT_HIGH}")


def release_base_port(base: int) -> None:
    with _mutex:
        f = _held.pop(base, None)
    if f is not None:
        f.close()


def unavailable(message: str) -> NoReturn:
    """A test's prerequisite (a binary, a capability) is missing: fail under CI, where a
    skip would hide that the test never ran, and skip elsewhere, saying ``message``."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def launched_cluster(up: Callable[[int], T], down: Callable[[], Any]) -> Iterator[T]:
    """A local cluster of an external kind, started by ``up(base_port)`` on a reserved
    port block; ``down()`` stops it at the end whatever happened (reload the state file
    there, so members a test added stop too) and the block is released."""
    base = reserve_base_port()
    try:
        yield up(base)
    finally:
        with contextlib.suppress(Exception):
            down()
        release_base_port(base)


def cli_json(capsys: Any, *argv: str) -> tuple[int, dict]:
    """Run ``raft-manager --json ARGV`` in-process: its exit status and its JSON answer
    (``{}`` when it printed nothing)."""
    # Imported here: the raft_core tests that use testkit need not load the CLI.
    from mcp_server.cli import main

    code = main(["--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def free_port() -> int:
    """One port nothing listens on right now (for a single listener, or a dead peer)."""
    return ephemeral_port()


async def started_single_node(data_dir: Path, **config: Any) -> RaftNode:
    """A one-voter ``RaftNode`` in ``data_dir`` (10 ms ticks, free loopback ports, the
    given config), started and leading; the caller stops it."""
    cfg = NodeConfig(
        id="n1",
        data_dir=data_dir,
        peer_listen=f"127.0.0.1:{free_port()}",
        api_listen=f"127.0.0.1:{free_port()}",
        **{"tick_ms": 10, **config},
    )
    node = RaftNode(cfg)
    await node.start()
    for _ in range(500):
        if node.status().engine.role is NodeRole.LEADER:
            return node
        await asyncio.sleep(0.01)
    await node.stop()
    raise AssertionError("a single voter did not become leader within 5 s")
