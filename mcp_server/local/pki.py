"""Certificates for a cluster on real hosts: what ``raft-manager certs init|issue`` does.

``security`` makes a throwaway CA for clusters on this machine (every certificate names
127.0.0.1); this module makes one that lasts, for members on separate hosts
(docs/three-machines.md, docs/design.md section "Beyond one machine"):

* ``init``: a CA (``ca.pem``, its key ``ca-key.pem``) in a directory of mode 0700, the
  key 0600. Ten years at most: the CA only signs node certificates, and its key stays on
  the operator's machine, never on a node.
* ``issue``: per node, ``<id>.pem`` and ``<id>-key.pem`` (0600). The certificate names
  the node id (common name and a DNS name: the peer transport checks that a peer's
  certificate names the id it claims, so a certificate copied to another host cannot
  pose as that host's member) and every IP address and DNS name the host is reached at
  (the manager checks the API's certificate against the address it dialed). One year
  by default, at most 825 days; renewing is issuing again with ``renew`` and restarting
  the node.
* ``node_config``: the per-host ``raft-node --config`` file using them.

The signing is :mod:`raft_core.node.certs` (``cryptography``); this module adds the
operator's rules: validity bounds, file modes, no silent overwrite, names checked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cluster import ClusterError

CA_FILE, CA_KEY_FILE = "ca.pem", "ca-key.pem"
CA_DAYS = CA_DAYS_MAX = 3650
NODE_DAYS, NODE_DAYS_MAX = 365, 825
PEER_PORT, API_PORT = 7101, 7201
DEFAULT_DATA_DIR = "/var/lib/raft-node"
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Issued:
    """A node certificate as written: its files, names and expiry."""

    node: str
    cert_file: Path
    key_file: Path
    ca_file: Path
    names: list[str]
    not_after: dt.datetime


def _private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def _check_days(days: int, most: int, what: str) -> None:
    if not 1 <= days <= most:
        raise ClusterError(f"{what} validity must be 1 to {most} days, not {days}")


def check_host(host: str) -> str:
    """An IP address or a DNS name (what a certificate's SAN can hold), else an error."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.rstrip(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.match(p) for p in name.split(".")):
        raise ClusterError(f"{host!r} is neither an IP address nor a DNS name")
    return name.lower()


def init_ca(directory: Path, name: str, days: int = CA_DAYS) -> Path:
    """A new CA in ``directory``; refuses to replace one (its nodes would stop trusting
    each other's new certificates)."""
    from raft_core.node.certs import make_cluster_pki

    _check_days(days, CA_DAYS_MAX, "the CA's")
    if (directory / CA_FILE).exists() or (directory / CA_KEY_FILE).exists():
        raise ClusterError(
            f"{directory} already holds a CA ({CA_FILE}): a new one would not be trusted by "
            "the nodes that have the old one; issue node certificates from it, or pick "
            "another --dir"
        )
    _private_dir(directory)
    return make_cluster_pki(directory, [], ca_name=name, days=days).ca_file


def issue(
    directory: Path, node: str, hosts: list[str], days: int = NODE_DAYS, *, renew: bool = False
) -> Issued:
    """Sign ``node``'s certificate for ``hosts`` with the CA in ``directory``."""
    from cryptography import x509

    from raft_core.node.certs import issue_cert
    from raft_core.node.config import ConfigError, check_node_id

    try:
        check_node_id(node)
    except ConfigError as e:
        raise ClusterError(str(e)) from None
    _check_days(days, NODE_DAYS_MAX, "a node certificate's")
    ca, ca_key = directory / CA_FILE, directory / CA_KEY_FILE
    if not ca.exists() or not ca_key.exists():
        raise ClusterError(
            f"no CA in {directory}: run `raft-manager certs init --dir {directory}` first"
        )
    if not hosts:
        raise ClusterError(
            f"name at least one address of {node}'s host (--host IP or --host DNS-NAME): "
            "the manager checks the API's certificate against the address it dials"
        )
    names = list(dict.fromkeys(check_host(h) for h in hosts))
    if (directory / f"{node}.pem").exists() and not renew:
        raise ClusterError(
            f"{directory / (node + '.pem')} exists; pass --renew to replace it (then restart "
            f"{node} so it reads the new one)"
        )
    _private_dir(directory)
    made = issue_cert(ca, ca_key, directory, node, names, days)
    cert = x509.load_pem_x509_certificate(made.cert_file.read_bytes())
    return Issued(node, made.cert_file, made.key_file, ca, names, cert.not_valid_after_utc)


def tls_options(issued: Issued, install_dir: Path | None = None) -> dict[str, str]:
    """The raft-node TLS options (config keys) for ``issued``: mutual TLS between peers
    and HTTPS for the API, with the files where they will be on the node's host."""
    where = install_dir or issued.cert_file.parent
    cert, key = str(where / issued.cert_file.name), str(where / issued.key_file.name)
    return {
        "cert_file": cert,
        "key_file": key,
        "peer_cert_file": cert,
        "peer_key_file": key,
        "peer_trusted_ca_file": str(where / issued.ca_file.name),
    }


def flags(options: dict[str, str]) -> list[str]:
    """Config keys as ``raft-node`` command-line flags."""
    return [
        part for key, value in options.items() for part in ("--" + key.replace("_", "-"), value)
    ]


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def own_host(node: str, peers: dict[str, str]) -> str:
    """``node``'s host in ``peers`` (every member's, by id), which must name it."""
    if node not in peers:
        raise ClusterError(f"--peers must name {node}'s own host too ({node}=HOST,...)")
    return check_host(peers[node])


def node_config(
    issued: Issued,
    peers: dict[str, str],
    *,
    peer_port: int = PEER_PORT,
    api_port: int = API_PORT,
    data_dir: str | None = None,
    install_dir: Path | None = None,
    join: bool = False,
) -> dict[str, Any]:
    """The ``raft-node --config`` file of ``issued.node``'s host. ``peers``: every
    member's host by id (this node's included). The node binds its own host's address
    when it is an IP (else every address, advertising the name)."""
    node = issued.node
    own = own_host(node, peers)
    hosts = {n: check_host(h) for n, h in peers.items()}
    try:
        ipaddress.ip_address(own)
        bind = own
    except ValueError:
        bind = "0.0.0.0"
    doc: dict[str, Any] = {
        "id": node,
        "data_dir": data_dir or f"{DEFAULT_DATA_DIR}/{node}",
        "peer_listen": _hostport(bind, peer_port),
        "api_listen": _hostport(bind, api_port),
    }
    if bind != own:
        doc["peer_advertise"] = _hostport(own, peer_port)
        doc["api_advertise"] = _hostport(own, api_port)
    doc["peers"] = {n: _hostport(h, peer_port) for n, h in hosts.items()}
    doc["peer_apis"] = {n: _hostport(h, api_port) for n, h in hosts.items()}
    if join:
        doc["join"] = True
    doc.update(tls_options(issued, install_dir))
    return doc
