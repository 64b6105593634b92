"""``raft-manager certs init|issue``: a CA and node certificates for members on real hosts.

The rules (validity, modes, names) are ``local.pki``; this module parses the flags and
prints what the operator does next: the ``raft-node`` flags, or the path of the
per-host config file written with ``--peers`` (docs/three-machines.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from rich.text import Text

from ..local import ClusterError, pki
from .ui import EXIT_OK, UI


class CertsResult(BaseModel):
    """What ``certs init`` or ``certs issue`` wrote."""

    ca_file: str
    node: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    names: list[str] = []
    not_after: str | None = None
    renew_after: str | None = None
    config_file: str | None = None
    flags: list[str] = []


def add_arguments(sub: Any, cmd: Any) -> None:
    ce = sub.add_parser("certs", help="a CA and node certificates for hosts (mutual TLS, HTTPS)")
    ces = ce.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = cmd(ces, "init", "make a CA (ca.pem, ca-key.pem 0600) in --dir", cmd_certs_init)
    init.add_argument("--dir", required=True, help="where the CA goes (made mode 0700)")
    init.add_argument("--name", help="the CA's common name (default: raft-cluster-ca + random)")
    init.add_argument(
        "--days", type=int, default=pki.CA_DAYS, help=f"validity (at most {pki.CA_DAYS_MAX})"
    )
    iss = cmd(ces, "issue", "sign NODE's certificate for its host's IPs and names", cmd_certs_issue)
    iss.add_argument("node", help="the node id (named in the certificate)")
    iss.add_argument("--dir", required=True, help="the CA's directory (certs init)")
    iss.add_argument(
        "--host",
        action="append",
        default=[],
        help="an IP address or DNS name of NODE's host (repeat for each)",
    )
    iss.add_argument(
        "--days",
        type=int,
        default=pki.NODE_DAYS,
        help=f"validity (default {pki.NODE_DAYS}, at most {pki.NODE_DAYS_MAX})",
    )
    iss.add_argument("--renew", action="store_true", help="replace NODE's existing certificate")
    iss.add_argument(
        "--peers",
        help="every member's host, id=HOST,... (NODE included): also write DIR/NODE.yaml, "
        "the host's raft-node --config file",
    )
    iss.add_argument("--peer-port", type=int, default=pki.PEER_PORT)
    iss.add_argument("--api-port", type=int, default=pki.API_PORT)
    iss.add_argument(
        "--data-dir", help=f"the node's data directory (default {pki.DEFAULT_DATA_DIR}/NODE)"
    )
    iss.add_argument(
        "--install-dir",
        help="where the files will be on NODE's host, for the paths in flags and config "
        "(default: --dir)",
    )
    iss.add_argument("--join", action="store_true", help="a new member (raft-node --join)")


def _view(r: CertsResult) -> Text:
    out = Text()
    if r.node is None:
        out.append(
            f"CA written: {r.ca_file} (its key ca-key.pem is mode 0600: keep it off the nodes)\n"
        )
        out.append("next: raft-manager certs issue NODE --dir ... --host IP [--host NAME]\n")
        return out
    out.append(f"{r.node}: {r.cert_file} and {r.key_file} (0600)\n")
    out.append(f"names: {', '.join(r.names)}\n")
    out.append(f"valid until {r.not_after}; renew after {r.renew_after} (certs issue --renew)\n")
    if r.config_file:
        out.append(f"config: {r.config_file} (raft-node --config {Path(r.config_file).name})\n")
    out.append("raft-node flags:\n  " + " ".join(r.flags) + "\n")
    return out


def cmd_certs_init(args: argparse.Namespace, ui: UI) -> int:
    name = args.name or f"raft-cluster-ca {secrets.token_hex(6)}"
    ca = pki.init_ca(Path(args.dir).expanduser().resolve(), name, args.days)
    ui.emit(CertsResult(ca_file=str(ca)), _view)
    return EXIT_OK


def _peers(text: str) -> dict[str, str]:
    peers: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        node, sep, host = item.partition("=")
        if not sep or not node or not host:
            raise ClusterError(f"--peers item {item!r} is not ID=HOST")
        peers[node] = host
    return peers


def cmd_certs_issue(args: argparse.Namespace, ui: UI) -> int:
    directory = Path(args.dir).expanduser().resolve()
    peers = _peers(args.peers) if args.peers else None
    hosts = list(args.host)
    if peers is not None:
        own = pki.own_host(args.node, peers)
        hosts = hosts or [own]
    issued = pki.issue(directory, args.node, hosts, args.days, renew=args.renew)
    install = Path(args.install_dir) if args.install_dir else None
    config_file = None
    if peers is not None:
        doc = pki.node_config(
            issued,
            peers,
            peer_port=args.peer_port,
            api_port=args.api_port,
            data_dir=args.data_dir,
            install_dir=install,
            join=args.join,
        )
        path = directory / f"{args.node}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        config_file = str(path)
        options = {"config": str((install or directory) / path.name)}
    else:
        options = pki.tls_options(issued, install)
    renew = issued.not_after - dt.timedelta(days=max(1, args.days // 12))
    ui.emit(
        CertsResult(
            ca_file=str(issued.ca_file),
            node=issued.node,
            cert_file=str(issued.cert_file),
            key_file=str(issued.key_file),
            names=[issued.node, *issued.names],
            not_after=issued.not_after.isoformat(timespec="seconds"),
            renew_after=renew.isoformat(timespec="seconds"),
            config_file=config_file,
            flags=pki.flags(options),
        ),
        _view,
    )
    return EXIT_OK
