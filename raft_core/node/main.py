"""``raft-node``: run one cluster member until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from .address import parse_address
from .api import build_router
from .config import ConfigError, NodeConfig, load_config
from .http_server import start_server
from .server import RaftNode
from .storage import StorageCorruption, StorageError

log = logging.getLogger("raft_core.node")


async def serve(cfg: NodeConfig) -> None:
    node = RaftNode(cfg)
    await node.start()
    token = cfg.read_secret("api_token_file")
    host, port = parse_address(cfg.api_listen, "--api-listen", listen=True)
    http = await start_server(
        build_router(node, token.decode() if token else None),
        host,
        port,
        max_body=cfg.max_value_bytes + 64 * 1024,
    )
    log.info(
        "%s: serving peers on %s and the API on %s (fsync=%s%s%s)",
        cfg.id,
        cfg.peer_listen,
        cfg.api_listen,
        cfg.fsync,
        ", API token required" if token else "",
        ", fault injection ENABLED" if cfg.allow_fault_injection else "",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("%s: shutting down", cfg.id)
    http.close()
    await http.wait_closed(grace=2.0)
    await node.stop()


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
    run = asyncio.run
    if os.environ.get("RAFT_NODE_UVLOOP") == "1":  # opt-in, measured: README "Performance"
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            log.warning("RAFT_NODE_UVLOOP=1 but uvloop is not installed: using asyncio")
    try:
        run(serve(cfg))
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
