"""Peer authentication for the clusters the launcher starts: on unless told otherwise.

A ``raft-node`` without peer authentication accepts any process that names itself a
member on its peer port, so anything on the machine could speak Raft to it. Every
cluster ``LocalCluster.up`` starts is therefore protected by default:

* ``tls`` (the default; needs ``cryptography``, a runtime dependency): a throwaway CA in
  ``DIR/tls/`` (``ca.pem``, its key ``ca-key.pem`` mode 0600) and per node ``<id>.pem``
  / ``<id>-key.pem`` naming the node id. Each node uses its certificate for mutual TLS
  on the peer port and to serve its HTTP API over TLS. Members added later get a
  certificate from the same CA (:func:`issue_member`).
* ``secret`` (only if ``cryptography`` cannot be imported): 32 random bytes in
  ``DIR/cluster-secret`` (mode 0600) for the HMAC peer handshake; the API stays HTTP.
* ``none``: ``--insecure``; the nodes say so in their log and status, and the
  manager's health check warns.

The API's clients are not asked for certificates: who may use the API is the bearer
token's job (``--api-token-file``). Keys and the secret are only ever named by path.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path
from typing import Literal, Protocol

PeerAuth = Literal["tls", "secret", "none"]


class LocalSettings(Protocol):
    """What this module reads and sets of ``cluster.LocalSettings`` (no import: the
    cluster module imports this one)."""

    peer_auth: PeerAuth
    api_scheme: str
    ca_file: str | None
    cluster_secret_file: str | None


TLS_DIR = "tls"
SECRET_FILE = "cluster-secret"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def default_peer_auth() -> PeerAuth:
    """``tls`` when certificates can be generated here, else ``secret``."""
    return "tls" if importlib.util.find_spec("cryptography") is not None else "secret"


def provision(
    directory: Path, node_ids: list[str], auth: PeerAuth, settings: LocalSettings
) -> None:
    """Create the CA and certificates, or the secret, for a new cluster in ``directory``
    and record them in ``settings`` (what ``cluster.yaml`` keeps)."""
    settings.peer_auth = auth
    if auth == "tls":
        from raft_core.node.certs import make_cluster_pki

        # A distinct CA name per cluster: a client that trusts several clusters' CAs
        # finds each issuer by name.
        name = f"raft-cluster-ca {secrets.token_hex(6)}"
        pki = make_cluster_pki(directory / TLS_DIR, node_ids, LOOPBACK_HOSTS, ca_name=name)
        settings.ca_file = str(pki.ca_file)
        settings.api_scheme = "https"
    elif auth == "secret":
        path = directory / SECRET_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        settings.cluster_secret_file = str(path)


def issue_member(settings: LocalSettings, node_id: str) -> None:
    """A certificate for a member added later, from the cluster's CA (TLS clusters only)."""
    if settings.peer_auth != "tls" or settings.ca_file is None:
        return
    from raft_core.node.certs import issue_cert

    ca = Path(settings.ca_file)
    if not (ca.parent / f"{node_id}.pem").exists():
        issue_cert(ca, ca.parent / "ca-key.pem", ca.parent, node_id, LOOPBACK_HOSTS)


def node_args(settings: LocalSettings, node_id: str) -> list[str]:
    """The ``raft-node`` flags that turn a member's TLS on (none for other modes)."""
    if settings.peer_auth != "tls" or settings.ca_file is None:
        return []
    ca = Path(settings.ca_file)
    cert, key = str(ca.parent / f"{node_id}.pem"), str(ca.parent / f"{node_id}-key.pem")
    return [
        "--cert-file", cert,
        "--key-file", key,
        "--peer-cert-file", cert,
        "--peer-key-file", key,
        "--peer-trusted-ca-file", str(ca),
    ]  # fmt: skip
