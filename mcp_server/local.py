"""Glue between the manager and the local launcher (``local_cluster.py``).

Free ports, starting the embedded default cluster on first use, and the
``LocalClusterState`` answer of the ``cluster up|down|kill|start|status`` commands.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from .local_cluster import CLUSTER_FILE, ClusterError, LocalCluster, LocalSettings
from .models import LocalClusterState, LocalNodeInfo


def ports_free(base: int, count: int = 9) -> bool:
    for port in [*range(base + 1, base + count + 1), *range(base + 101, base + count + 101)]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As the servers bind: ports in TIME_WAIT are reusable, listening ones are not.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_base_port(preferred: int = 7100, step: int = 300, tries: int = 60) -> int:
    """``preferred`` if its ports (base+1.., base+101..) are free, else the next free block.

    Stays below 32000: the kernel hands out ephemeral ports from 32768 up.
    """
    base = preferred
    for _ in range(tries):
        if base + 200 >= 32000:
            base = 10000
        if ports_free(base):
            return base
        base += step
    raise ClusterError(f"no free block of ports found from {preferred}; pass --base-port")


def is_running(directory: Path | str) -> bool:
    d = Path(directory)
    if not (d / CLUSTER_FILE).exists():
        return False
    lc = LocalCluster.load(d)
    return any(lc.alive(n) for n in lc.nodes)


def ensure_running(
    directory: Path | str,
    *,
    nodes: int = 3,
    base_port: int | None = None,
    settings: LocalSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """Start the local cluster in ``directory`` unless some of it runs; True if started."""
    d = Path(directory)
    if (d / CLUSTER_FILE).exists():
        lc = LocalCluster.load(d)
        if any(lc.alive(n) for n in lc.nodes):
            return False
        if progress:
            progress(f"starting the local cluster in {d}")
        for n in lc.nodes:
            lc.start(n.id)
        lc.wait_for_leader()
        return True
    if progress:
        progress(f"creating a local {nodes}-node cluster in {d}")
    LocalCluster.up(
        d,
        nodes=nodes,
        base_port=base_port if base_port is not None else free_base_port(),
        settings=settings or LocalSettings(allow_fault_injection=True),
        progress=progress,
    )
    return True


def describe(lc: LocalCluster, action: str, seconds: float, detail: str) -> LocalClusterState:
    nodes: list[LocalNodeInfo] = []
    leader = None
    with httpx.Client(timeout=httpx.Timeout(1.0, connect=0.5)) as client:
        for n in lc.nodes:
            alive = lc.alive(n)
            role = term = None
            if alive:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    st = client.get(f"http://{n.api_address}/v1/status").json()
                    role, term = st.get("role"), st.get("term")
                    if role == "leader":
                        leader = n.id
            nodes.append(
                LocalNodeInfo(
                    id=n.id,
                    peer_address=n.peer_address,
                    api_address=n.api_address,
                    data_dir=n.data_dir,
                    pid=n.pid if alive else None,
                    running=alive,
                    role=role,
                    term=term,
                    log=str(lc.dir / f"{n.id}.log"),
                )
            )
    return LocalClusterState(
        dir=str(lc.dir),
        action=action,  # type: ignore[arg-type]
        nodes=nodes,
        leader=leader,
        seconds=round(seconds, 3),
        detail=detail,
    )


def wait_leader(lc: LocalCluster, wait_s: float = 20.0) -> tuple[str, float]:
    t0 = time.monotonic()
    leader = lc.wait_for_leader(wait_s)
    return leader, time.monotonic() - t0
