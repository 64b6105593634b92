"""Throwaway certificate authorities and node certificates, for tests and local clusters.

:func:`make_cluster_pki` writes a fresh CA and, per node, one certificate used both to
serve (the API and the peer port) and as a client certificate when dialing peers. The
node id is the certificate's common name and a DNS subject-alternative name: the peer
transport checks that a peer's certificate names the node id it claims. The CA's key is
written too (mode 0600) so that a launcher can add certificates for new members later.

Needs the ``cryptography`` package (in the ``test`` extra); without it,
:class:`CertificateToolError` says how to install it. Nothing else in the node needs it:
serving TLS uses only the standard library's ``ssl``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CertificateToolError", "ClusterPKI", "NodeCert", "issue_cert", "make_cluster_pki"]


class CertificateToolError(RuntimeError):
    """Certificates cannot be generated here (``cryptography`` missing)."""


def _crypto() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise CertificateToolError(
            "generating TLS certificates needs the 'cryptography' package "
            "(pip install cryptography, or install agent-raft-manager[test])"
        ) from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class NodeCert:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ClusterPKI:
    ca_file: Path
    ca_key_file: Path
    nodes: dict[str, NodeCert]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _name(cn: str) -> Any:
    x509, *_, name_oid = _crypto()
    return x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, cn)])


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def _make_ca(directory: Path, name: str, days: int) -> tuple[Path, Path]:
    x509, hashes, serialization, ec, _eku, _ = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    ca_file, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        ca_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return ca_file, ca_key


def issue_cert(
    ca_file: Path,
    ca_key_file: Path,
    directory: Path,
    name: str,
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
    days: int = 30,
) -> NodeCert:
    """Sign a certificate for ``name`` (common name and DNS name) valid for ``hosts``
    (IP addresses or DNS names), usable as server and client certificate."""
    x509, hashes, serialization, ec, eku, _ = _crypto()
    ca_cert = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(ca_key_file).read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[Any] = [x509.DNSName(name)]
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if h != name:
                alt.append(x509.DNSName(h))
    start, end = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([eku.SERVER_AUTH, eku.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return NodeCert(cert_file, key_file)


def make_cluster_pki(
    directory: Path,
    names: Iterable[str],
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
    *,
    ca_name: str = "raft-cluster-ca",
    days: int = 30,
) -> ClusterPKI:
    """A new CA in ``directory`` and one certificate per name (node ids, ``client``...)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, ca_key = _make_ca(directory, ca_name, days)
    hosts = list(hosts)
    nodes = {n: issue_cert(ca_file, ca_key, directory, n, hosts, days) for n in names}
    return ClusterPKI(ca_file, ca_key, nodes)
