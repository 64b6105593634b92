"""raft-node configuration: every option, its default, and why.

Options come from the command line or a YAML file (``--config FILE``; command-line
flags win). Secrets never appear here: only the *paths* of files that hold them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..types import NodeId
from .address import parse_address
from .eventloop import CHOICES as LOOP_CHOICES
from .eventloop import UVLOOP_WITH_PEER_TLS


class ConfigError(ValueError):
    """A configuration problem, phrased for the operator who has to fix it."""


def check_address(text: str, what: str, *, listen: bool = False) -> tuple[str, int]:
    """``parse_address``, with its complaint phrased as a configuration error."""
    try:
        return parse_address(text, what, listen=listen)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_node_id(node_id: str) -> None:
    """A node id is 1-64 letters, digits, '-' or '_': it names files, certificates and
    hosts' config entries, so nothing else is allowed in it."""
    if not node_id or len(node_id) > 64 or not node_id.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"node id {node_id!r} must be 1-64 letters, digits, '-' or '_'")


def parse_peers(text: str) -> dict[NodeId, str]:
    """``n1=127.0.0.1:7101,n2=...`` -> {"n1": "127.0.0.1:7101", ...}."""
    peers: dict[NodeId, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        node, sep, addr = item.partition("=")
        if not sep or not node:
            raise ConfigError(f"peer {item!r} is not ID=HOST:PORT")
        check_address(addr, f"address of peer {node}")
        peers[node] = addr
    return peers


STATE_STORES = ("lmdb", "memory")


@dataclass
class NodeConfig:
    id: NodeId
    data_dir: Path
    # Where peers reach us (Raft messages) and where clients reach us (HTTP API).
    # Loopback by default: listening more widely is a deliberate choice.
    peer_listen: str = "127.0.0.1:7101"
    api_listen: str = "127.0.0.1:7201"
    # Addresses others should use if they differ from the listen addresses (NAT,
    # 0.0.0.0 binds). Default: the listen addresses.
    peer_advertise: str | None = None
    api_advertise: str | None = None
    # Founding members as id=peer_address (including ourselves). Ignored once the
    # node has state on disk: from then on membership comes from the log.
    peers: dict[NodeId, str] = field(default_factory=dict)
    # API addresses of the founding members, so followers can name the leader's.
    peer_apis: dict[NodeId, str] = field(default_factory=dict)
    # Start with no configuration and wait to be added by the cluster (a new member).
    join: bool = False
    # One tick; elections and heartbeats are counted in ticks.
    tick_ms: int = 50
    # Election timeout is randomized in [election_ticks, 2 * election_ticks) ticks:
    # 0.5-1 s by default. Heartbeats every heartbeat_ticks ticks (100 ms).
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    # Tell followers about each new commit index at once (an empty append per
    # follower per commit). Off by default: the index rides on the next append or
    # heartbeat, and at the latest on the next tick (see RaftConfig.broadcast_commit).
    broadcast_commit: bool = False
    # "always": fsync every batch before acknowledging (durable). "never": trust the
    # page cache (benchmarks only; a machine crash can lose acknowledged writes).
    fsync: str = "always"
    # Take a snapshot after this many entries were applied since the last one, and
    # keep this many entries before it for slow followers. With the on-disk store a
    # snapshot is a checkpoint (a sync of the store, no image). With the state in
    # memory it is an image, and while the state is larger than the log since the last
    # one it waits (up to 4x this many entries) until it is not: an image costs the
    # whole state, so its cost per entry stays bounded.
    snapshot_entries: int = 10_000
    keep_entries: int = 1_000
    # Where the KV state lives: "lmdb" (default) on disk in <data_dir>/state.mdb,
    # "memory" in Python dicts, rebuilt from the snapshot and the log at each start
    # (docs/design.md, "The on-disk state machine").
    state_store: str = "lmdb"
    # Requests waiting in the proposal pipeline before new ones get 503.
    max_pending_proposals: int = 10_000
    # How long a client request may wait for its entry to apply.
    request_timeout_ms: int = 5_000
    max_key_bytes: int = 1_024
    max_value_bytes: int = 1 << 20
    # Paths of files holding the secrets (never the secrets themselves).
    api_token_file: Path | None = None
    cluster_secret_file: Path | None = None
    allow_fault_injection: bool = False
    log_level: str = "INFO"
    # "auto": uvloop when installed (it is a dependency where it has wheels), else
    # asyncio; see raft_core/node/eventloop.py.
    event_loop: str = "auto"
    # -- TLS (paths of PEM files). API: HTTPS when cert_file/key_file are set; with
    # client_cert_auth a client certificate from trusted_ca_file is required too.
    cert_file: Path | None = None
    key_file: Path | None = None
    trusted_ca_file: Path | None = None
    client_cert_auth: bool = False
    # Peers: mutual TLS when all three are set (see raft_core/node/tls.py).
    peer_cert_file: Path | None = None
    peer_key_file: Path | None = None
    peer_trusted_ca_file: Path | None = None
    # -- Limits on what API clients can make the node hold (see http_server/).
    max_api_connections: int = 1000
    request_head_timeout_ms: int = 10_000
    request_body_timeout_ms: int = 30_000
    api_idle_timeout_ms: int = 60_000

    @property
    def api_tls(self) -> bool:
        return self.cert_file is not None

    @property
    def peer_tls(self) -> bool:
        return self.peer_cert_file is not None

    def validate_tls_and_limits(self) -> None:
        """The checks for the TLS and limit options (called by :meth:`validate`)."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("--cert-file and --key-file go together")
        if self.client_cert_auth and (self.trusted_ca_file is None or not self.api_tls):
            raise ConfigError(
                "--client-cert-auth needs --cert-file, --key-file and --trusted-ca-file"
            )
        if self.trusted_ca_file is not None and not self.api_tls:
            raise ConfigError("--trusted-ca-file needs --cert-file and --key-file")
        peer = (self.peer_cert_file, self.peer_key_file, self.peer_trusted_ca_file)
        if any(p is not None for p in peer) and any(p is None for p in peer):
            raise ConfigError(
                "peer TLS is mutual: give all of --peer-cert-file, --peer-key-file and "
                "--peer-trusted-ca-file"
            )
        for name in _TLS_FILES:
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"--{name.replace('_', '-')} {path}: no such file")
        if self.max_api_connections < 1:
            raise ConfigError("--max-api-connections must be at least 1")
        for name in ("request_head_timeout_ms", "request_body_timeout_ms", "api_idle_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")

    def validate(self) -> None:
        check_node_id(self.id)
        check_address(self.peer_listen, "--peer-listen", listen=True)
        check_address(self.api_listen, "--api-listen", listen=True)
        if self.fsync not in ("always", "never"):
            raise ConfigError(f"--fsync must be 'always' or 'never', not {self.fsync!r}")
        if self.state_store not in STATE_STORES:
            raise ConfigError(f"--state-store must be one of {', '.join(STATE_STORES)}")
        if self.event_loop not in LOOP_CHOICES:
            raise ConfigError(f"--event-loop must be one of {', '.join(LOOP_CHOICES)}")
        if self.event_loop == "uvloop" and self.peer_tls:
            raise ConfigError(UVLOOP_WITH_PEER_TLS)
        if self.tick_ms <= 0 or self.heartbeat_ticks <= 0:
            raise ConfigError("--tick-ms and --heartbeat-ticks must be positive")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("--election-ticks must be larger than --heartbeat-ticks")
        if not self.join and self.peers and self.id not in self.peers:
            raise ConfigError(
                f"--peers must include this node ({self.id}) when founding a cluster; "
                "use --join to start a node that will be added later"
            )
        for name in ("api_token_file", "cluster_secret_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"--{name.replace('_', '-')} {path}: no such file")
        self.validate_tls_and_limits()

    @property
    def advertised_peer(self) -> str:
        return self.peer_advertise or self.peer_listen

    @property
    def advertised_api(self) -> str:
        return self.api_advertise or self.api_listen

    def read_secret(self, name: str) -> bytes | None:
        path = getattr(self, name)
        if path is None:
            return None
        secret = Path(path).read_bytes().strip()
        if not secret:
            raise ConfigError(f"{path} is empty: a secret file must hold the secret")
        return secret


_TLS_FILES = (
    "cert_file",
    "key_file",
    "trusted_ca_file",
    "peer_cert_file",
    "peer_key_file",
    "peer_trusted_ca_file",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raft-node",
        description="Run one member of a raft_core cluster (durable log, TCP peers, HTTP API).",
    )
    p.add_argument("--config", type=Path, help="YAML file with any of the options below")
    p.add_argument("--id", help="this node's id (e.g. n1)")
    p.add_argument("--data-dir", type=Path, help="directory for the WAL and snapshots")
    p.add_argument("--peer-listen", help="HOST:PORT for Raft traffic (default 127.0.0.1:7101)")
    p.add_argument("--api-listen", help="HOST:PORT for the HTTP API (default 127.0.0.1:7201)")
    p.add_argument("--peer-advertise", help="peer address others should dial, if different")
    p.add_argument("--api-advertise", help="API address clients should use, if different")
    p.add_argument("--peers", help="founding members: id=host:port,... (including this node)")
    p.add_argument("--peer-apis", help="API addresses of the founding members: id=host:port,...")
    p.add_argument(
        "--join",
        action="store_true",
        default=None,
        help="start empty and wait to be added to an existing cluster",
    )
    p.add_argument("--tick-ms", type=int)
    p.add_argument("--election-ticks", type=int)
    p.add_argument("--heartbeat-ticks", type=int)
    p.add_argument(
        "--broadcast-commit",
        action="store_true",
        default=None,
        help="send followers each new commit index at once, not with the next message "
        "or tick (followers apply sooner; two more messages per follower per write)",
    )
    p.add_argument(
        "--fsync",
        choices=["always", "never"],
        help="'never' trades durability for speed (benchmarks only)",
    )
    p.add_argument(
        "--snapshot-entries",
        type=int,
        help="entries applied before a snapshot is taken (default 10000): a checkpoint "
        "with the on-disk store; with --state-store memory an image, deferred up to 4x "
        "that while the log since the last one is smaller than the state",
    )
    p.add_argument("--keep-entries", type=int)
    p.add_argument(
        "--state-store",
        choices=list(STATE_STORES),
        help="lmdb (default): the KV state on disk, restarts resume from it; memory: "
        "in memory, rebuilt from the latest snapshot at each start",
    )
    p.add_argument("--max-pending-proposals", type=int)
    p.add_argument("--request-timeout-ms", type=int)
    p.add_argument("--api-token-file", type=Path, help="file holding the API bearer token")
    p.add_argument(
        "--cluster-secret-file",
        type=Path,
        help="file holding the secret peers authenticate each other with",
    )
    p.add_argument(
        "--allow-fault-injection",
        action="store_true",
        default=None,
        help="enable POST /v1/admin/faults (test clusters only)",
    )
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--event-loop",
        choices=list(LOOP_CHOICES),
        help="auto (default): uvloop when installed, else asyncio",
    )
    tls = p.add_argument_group("TLS (PEM files)")
    tls.add_argument("--cert-file", type=Path, help="API server certificate: serve HTTPS")
    tls.add_argument("--key-file", type=Path, help="private key of --cert-file")
    tls.add_argument("--trusted-ca-file", type=Path, help="CA for API client certificates")
    tls.add_argument(
        "--client-cert-auth",
        action="store_true",
        default=None,
        help="require API clients to present a certificate from --trusted-ca-file",
    )
    tls.add_argument("--peer-cert-file", type=Path, help="peer certificate (mutual TLS)")
    tls.add_argument("--peer-key-file", type=Path, help="private key of --peer-cert-file")
    tls.add_argument(
        "--peer-trusted-ca-file", type=Path, help="CA peers' certificates must chain to"
    )
    lim = p.add_argument_group("API limits")
    lim.add_argument(
        "--max-api-connections",
        type=int,
        help="open API connections; at the cap the oldest idle one is closed (default 1000)",
    )
    lim.add_argument(
        "--request-head-timeout-ms",
        type=int,
        help="a request head must arrive within this (default 10000)",
    )
    lim.add_argument(
        "--request-body-timeout-ms",
        type=int,
        help="a request body must arrive within this after its head (default 30000)",
    )
    lim.add_argument(
        "--api-idle-timeout-ms",
        type=int,
        help="close keep-alive connections idle this long (default 60000)",
    )
    return p


def load_config(argv: list[str] | None = None) -> NodeConfig:
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read {args.config}: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config} must hold a mapping of options")
        known = {f.name for f in fields(NodeConfig)}
        unknown = sorted(set(k.replace("-", "_") for k in loaded) - known)
        if unknown:
            raise ConfigError(f"{args.config}: unknown options {', '.join(unknown)}")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    for f in fields(NodeConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    for key in ("peers", "peer_apis"):
        if isinstance(values.get(key), str):
            values[key] = parse_peers(values[key])
    if not values.get("id") or not values.get("data_dir"):
        raise ConfigError("--id and --data-dir are required")
    for key in ("data_dir", "api_token_file", "cluster_secret_file", *_TLS_FILES):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    cfg = NodeConfig(**values)
    cfg.validate()
    return cfg
