"""TLS for the node: ``ssl.SSLContext`` objects built from certificate files.

Two independent uses, as in etcd:

* **client API** (``--cert-file``/``--key-file``, optional ``--trusted-ca-file`` and
  ``--client-cert-auth``): the HTTP API speaks HTTPS only. With client-cert-auth a
  client must present a certificate signed by the trusted CA (the bearer token, if
  configured, is still required on top).
* **peers** (``--peer-cert-file``/``--peer-key-file``/``--peer-trusted-ca-file``, all
  three): mutual TLS on the Raft port. Both sides present certificates from the
  trusted CA; a dialer without one fails the TLS handshake before it can send a byte of
  Raft. Beyond the chain, the transport checks that each side's certificate names the
  node id it claims (common name or DNS name; see :func:`cert_names`), so one member's
  certificate cannot be used to pose as another. Host names are not checked: members
  are identified by id, and their addresses may be IPs, NAT'd or rebound.

The HMAC cluster-secret handshake still runs inside the TLS connection when a secret
is configured too; either one alone is peer authentication.

TLS 1.2 is the minimum; certificates and keys are read once at start (restart the node
to rotate them).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import NodeConfig

__all__ = [
    "PeerTLS",
    "api_client_context",
    "api_server_context",
    "api_tls_of",
    "cert_names",
    "peer_tls",
    "peer_tls_of",
]


def _base(purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def api_server_context(
    cert_file: Path,
    key_file: Path,
    trusted_ca_file: Path | None = None,
    *,
    client_cert_auth: bool = False,
) -> ssl.SSLContext:
    """Server side of the HTTP API. ``client_cert_auth`` requires ``trusted_ca_file``."""
    ctx = _base(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    if trusted_ca_file is not None:
        ctx.load_verify_locations(cafile=trusted_ca_file)
    if client_cert_auth:
        if trusted_ca_file is None:
            raise ValueError("client certificate auth needs a trusted CA file")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def api_client_context(
    trusted_ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """Client side of the HTTP API (for the manager and tests): verify the node's
    certificate against the CA, host name included; optionally present a certificate."""
    ctx = _base(ssl.Purpose.SERVER_AUTH)
    ctx.load_verify_locations(cafile=trusted_ca_file)
    if cert_file is not None:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


@dataclass(frozen=True)
class PeerTLS:
    """Contexts for the peer port: ``server`` for accepted connections, ``client`` for
    dialing. Both require and verify the other side's certificate."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def peer_tls(cert_file: Path, key_file: Path, trusted_ca_file: Path) -> PeerTLS:
    server = _base(ssl.Purpose.CLIENT_AUTH)
    client = _base(ssl.Purpose.SERVER_AUTH)
    for ctx in (server, client):
        ctx.load_cert_chain(cert_file, key_file)
        ctx.load_verify_locations(cafile=trusted_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    # Identity is the node id in the certificate (checked by the transport), not the
    # host name the peer was dialed at.
    client.check_hostname = False
    return PeerTLS(server, client)


def api_tls_of(cfg: NodeConfig) -> ssl.SSLContext | None:
    """The API server context a node configuration asks for, or None (plain HTTP)."""
    if cfg.cert_file is None or cfg.key_file is None:
        return None
    return api_server_context(
        cfg.cert_file, cfg.key_file, cfg.trusted_ca_file, client_cert_auth=cfg.client_cert_auth
    )


def peer_tls_of(cfg: NodeConfig) -> PeerTLS | None:
    """The peer TLS contexts a node configuration asks for, or None."""
    if cfg.peer_cert_file is None or cfg.peer_key_file is None or cfg.peer_trusted_ca_file is None:
        return None
    return peer_tls(cfg.peer_cert_file, cfg.peer_key_file, cfg.peer_trusted_ca_file)


def cert_names(peercert: dict[str, Any] | None) -> set[str]:
    """Common names and DNS names of a verified peer certificate (``getpeercert()``)."""
    if not peercert:
        return set()
    names = {
        value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"
    }
    names.update(value for kind, value in peercert.get("subjectAltName", ()) if kind == "DNS")
    return names
