"""TLS (client certificates) and username/password authentication against real etcd.

The certificates are a throwaway CA and one leaf (127.0.0.1, server and client auth)
made with ``cryptography`` in the test's temporary directory."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from etcd_helpers import BINARIES, etcd_cluster, etcd_manager, require
from manager_helpers import audit_lines

from mcp_server.adapters.raft_node import RaftNodeAdapter
from mcp_server.clients.etcd_gateway import EtcdGateway
from mcp_server.core.config import TLSConfig
from mcp_server.core.errors import InputError, ManagerError

pytestmark = pytest.mark.processes

NEWEST = BINARIES[-1][1] if BINARIES else None


def make_certs(d: Path) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(k) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test-ca"))
        .issuer_name(name("test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca_file": d / "ca.pem", "cert_file": d / "member.pem", "key_file": d / "member.key"}
    files["ca_file"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert_file"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files["key_file"].write_bytes(pem_key(key))
    files["key_file"].chmod(0o600)
    return {k: str(v) for k, v in files.items()}


def test_tls_with_client_certificates(tmp_path, state):
    binary = require(NEWEST)
    certs = make_certs(tmp_path)
    tls = TLSConfig(**certs)
    with etcd_cluster(tmp_path / "c", binary, tls=tls, server_tls=certs) as lc:
        assert all(u.startswith("https://") for u in lc.endpoints())
        with etcd_manager(lc, state, tls=tls) as mgr:
            st = mgr.status()
            assert st.leader and st.reachable_voters == 3, st.warnings
            mgr.replicate({"secure": "yes"})
            assert mgr.read("secure").value == "yes"
            assert mgr.verify_consistency().consistent is True
            snap = mgr.snapshot(st.leader).result  # etcdctl gets the certificates too
            assert snap.snapshots[0].ok, snap.snapshots[0].error
        # Without a client certificate the members refuse the connection.
        bare = EtcdGateway(tls=TLSConfig(ca_file=certs["ca_file"]))
        with pytest.raises(ManagerError):
            bare.call(lc.endpoints()[0], "maintenance/status")
        bare.close()
        # The raft-node adapter builds its client with the same TLS helper: it sends the
        # client certificate too (httpx drops ``cert=`` next to a CA path).
        addr = lc.endpoints()[0].removeprefix("https://")
        node = RaftNodeAdapter(endpoints=[addr], tls=tls)
        try:
            assert "etcdserver" in node._call("GET", addr, "/version")
        finally:
            node.close()


def enable_auth(url: str, user: str, password: str) -> None:
    gw = EtcdGateway()
    try:
        gw.call(url, "auth/user/add", {"name": "root", "password": password + "-root"})
        gw.call(url, "auth/user/grant", {"user": "root", "role": "root"})
        gw.call(url, "auth/user/add", {"name": user, "password": password})
        gw.call(url, "auth/user/grant", {"user": user, "role": "root"})
        gw.call(url, "auth/enable", {})
    finally:
        gw.close()


def test_username_and_password_auth(tmp_path, state, monkeypatch):
    binary = require(NEWEST)
    secret = "pw-" + "5e4d3c2b1a0f"
    with etcd_cluster(tmp_path / "c", binary) as lc:
        enable_auth(lc.endpoints()[0], "ops", secret)
        # Without credentials etcd refuses, and the manager says what to configure.
        with etcd_manager(lc, state, name="anon") as anon, pytest.raises(ManagerError) as e:
            anon.replicate({"k": "v"})
        assert "password" in str(e.value)
        # Credentials from an environment variable.
        monkeypatch.setenv("TEST_ETCD_PASSWORD", secret)
        with etcd_manager(lc, state, username="ops", password_env="TEST_ETCD_PASSWORD") as mgr:
            mgr.replicate({"k": "v"})
            assert mgr.read("k").value == "v"
            st = mgr.status()
            assert st.leader and st.reachable_voters == 3
            snap = mgr.snapshot(st.leader).result  # etcdctl gets the user through its environment
            assert snap.snapshots[0].ok, snap.snapshots[0].error
            # A token that etcd no longer knows is renewed once, transparently.
            mgr.adapter.gw._token = "expired.token"
            assert mgr.read("k").value == "v"
        # ... and from a file.
        (tmp_path / "pw").write_text(secret + "\n")
        with etcd_manager(
            lc, state, name="f", username="ops", password_file=str(tmp_path / "pw")
        ) as mgr:
            assert mgr.read("k").value == "v"
        monkeypatch.delenv("TEST_ETCD_PASSWORD")
        with pytest.raises(InputError) as e:
            etcd_manager(lc, state, name="g", username="ops", password_env="TEST_ETCD_PASSWORD")
        assert "TEST_ETCD_PASSWORD" in e.value.reason
    audit = (state / "audit.jsonl").read_text()
    assert secret not in audit and "5e4d3c2b1a0f" not in audit
    assert any(x["operation"] == "replicate" and x["outcome"] == "ok" for x in audit_lines(state))
