"""``raft-node``: run one cluster member until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import sys

from .address import parse_address
from .api import build_router
from .config import ConfigError, NodeConfig, load_config
from .eventloop import EventLoopUnavailable, loop_runner
from .http_server import start_server
from .server import RaftNode
from .storage import StorageCorruption, StorageError
from .tls import api_tls_of

log = logging.getLogger("raft_core.node")

# File descriptors a node needs besides API connections: WAL, snapshots, peers, slack.
_FDS_BESIDES_API = 128
# After a full disk: how often to look, and how much room means "space is back".
DISK_POLL_S = 1.0
RESUME_FREE_BYTES = 16 << 20
# Young objects (net of those already freed) before the cyclic collector runs; Python's
# default is 700. See _tune_gc.
GC_YOUNG_THRESHOLD = 10_000


def _tune_gc() -> None:
    """Run the cyclic garbage collector about a hundred times less often.

    A node under load keeps thousands of young objects alive at once (each request in
    flight holds its task, futures and log entry), so with the default threshold of 700
    the collector ran ~150 times a second on the leader at 64 clients, walking the same
    in-flight objects again and again: 1.5 s of its 13.9 s of CPU in one measurement
    (docs/design.md, section 2). Nearly all of the node's garbage is freed by
    reference counting; the collector only has to find the rare cycle, which a higher
    threshold still does. What exists at startup (modules, classes, configuration) is
    moved out of the collector's way with ``gc.freeze()``.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, gen1, gen2)


def _ensure_fd_limit(needed: int) -> None:
    """Raise the soft open-files limit so the API connection cap, not EMFILE, is what
    refuses clients (many systems default to 1024); warn if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        log.warning(
            "open-files limit is %d, below the %d that --max-api-connections needs; "
            "raise it (ulimit -n) or lower --max-api-connections",
            soft,
            needed,
        )


async def serve(cfg: NodeConfig) -> bool:
    """Run the node until told to stop; True if it should restart (see _watch_disk)."""
    node = RaftNode(cfg)
    await node.start()
    token = cfg.read_secret("api_token_file")
    host, port = parse_address(cfg.api_listen, "--api-listen", listen=True)
    ssl_context = api_tls_of(cfg)
    _ensure_fd_limit(cfg.max_api_connections + _FDS_BESIDES_API)
    http = await start_server(
        build_router(node, token.decode() if token else None),
        host,
        port,
        max_body=cfg.max_value_bytes + 64 * 1024,
        head_timeout=cfg.request_head_timeout_ms / 1000,
        body_timeout=cfg.request_body_timeout_ms / 1000,
        idle_timeout=cfg.api_idle_timeout_ms / 1000,
        max_connections=cfg.max_api_connections,
        ssl_context=ssl_context,
    )
    node.metrics.gauge(
        "raft_api_connections", "Open client API connections", lambda: http.active_connections
    )
    node.metrics.gauge(
        "raft_api_connections_limited_total",
        "API connections closed by a limit: evicted at the cap, refused at the cap, or "
        "timed out sending a request",
        lambda: {"evicted": http.evicted, "refused": http.refused, "timed_out": http.timed_out},
        label="reason",
    )
    log.info(
        "%s: serving peers on %s (peer auth: %s) and the API on %s (%s, fsync=%s%s%s)",
        cfg.id,
        cfg.peer_listen,
        node.transport.peer_auth,
        cfg.api_listen,
        "HTTPS" + (" with client certificates" if cfg.client_cert_auth else "")
        if ssl_context
        else "plain HTTP",
        cfg.fsync,
        ", API token required" if token else "",
        ", fault injection ENABLED" if cfg.allow_fault_injection else "",
    )
    if node.transport.peer_auth == "none":
        log.warning(
            "%s: PEER AUTHENTICATION IS OFF: any process that can reach %s can speak Raft "
            "to this node; set --cluster-secret-file or the --peer-*-file TLS options",
            cfg.id,
            cfg.peer_listen,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_disk(node, stop))
    await stop.wait()
    watcher.cancel()
    restart = watcher.done() and not watcher.cancelled() and watcher.result()
    log.info("%s: %s", cfg.id, "restarting to recover" if restart else "shutting down")
    http.close()
    await http.wait_closed(grace=2.0)
    await node.stop()
    return restart


async def _watch_disk(node: RaftNode, stop: asyncio.Event) -> bool:
    """After a full disk stopped the node, wait until its disk has room again, then ask
    for a restart: recovery on start is the one tested path back from a failed write
    (it drops the torn tail; everything acknowledged was written before it)."""
    while True:
        await asyncio.sleep(DISK_POLL_S)
        where = node.disk_full
        if where is None:
            continue
        with contextlib.suppress(OSError):
            st = os.statvfs(where)
            if st.f_bavail * st.f_frsize >= RESUME_FREE_BYTES:
                log.warning("%s: %s has room again; restarting to recover", node.id, where)
                stop.set()
                return True


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(argv)
    except ConfigError as e:
        print(f"raft-node: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, cfg.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        loop_name, run = loop_runner(cfg.event_loop, peer_tls=cfg.peer_tls)
    except EventLoopUnavailable as e:
        print(f"raft-node: {e}", file=sys.stderr)
        return 2
    log.info("%s: event loop %s", cfg.id, loop_name)
    _tune_gc()
    try:
        if run(serve(cfg)):
            # Same process, same arguments: a fresh start that recovers from disk.
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except StorageCorruption as e:
        log.critical("%s", e)
        return 3
    except StorageError as e:
        log.critical("%s: %s", cfg.id, e)
        return 3
    except OSError as e:
        log.critical("%s: cannot start: %s", cfg.id, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
