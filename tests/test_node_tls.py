"""TLS at the node: HTTPS API, mutual TLS between peers, refusals (real processes).

* a 3-node cluster with peer mTLS and an HTTPS API takes a write and serves a
  linearizable read over HTTPS (httpx trusting the cluster CA); status says
  ``peer_auth: "tls"``;
* a node whose peer certificate comes from another CA cannot join or send anything:
  its TLS handshakes are refused, nothing it says reaches the cluster, and the
  cluster keeps its leader and term;
* a raw TCP client that does not speak TLS to the peer port gets nothing back;
* a plain-HTTP client to the HTTPS API is refused; with ``--client-cert-auth`` a client
  without a certificate is refused and one with a certificate from the CA is served;
* a node with neither peer TLS nor a cluster secret warns at start and says
  ``peer_auth: "none"``; with a secret it says ``"secret"``.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest
from node_procs import NodeProc, NodeProcs, wait_for_leader
from proc_helpers import kv_path, wait_until

from raft_core.node.certs import ClusterPKI, make_cluster_pki
from raft_core.node.tls import api_client_context

pytestmark = pytest.mark.processes

IDS = ["n1", "n2", "n3"]


@pytest.fixture
def procs(tmp_path: Path):
    p = NodeProcs(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPKI:
    return make_cluster_pki(tmp_path_factory.mktemp("pki"), [*IDS, "n4", "client"])


def tls_flags(pki: ClusterPKI, nid: str, *, client_cert_auth: bool = False) -> list[str]:
    c = pki.nodes[nid]
    flags = [
        "--cert-file", str(c.cert_file),
        "--key-file", str(c.key_file),
        "--trusted-ca-file", str(pki.ca_file),
        "--peer-cert-file", str(c.cert_file),
        "--peer-key-file", str(c.key_file),
        "--peer-trusted-ca-file", str(pki.ca_file),
    ]  # fmt: skip
    return [*flags, "--client-cert-auth"] if client_cert_auth else flags


def https_client(pki: ClusterPKI, *, cert: bool = False) -> httpx.Client:
    c = pki.nodes["client"]
    ctx = (
        api_client_context(pki.ca_file, c.cert_file, c.key_file)
        if cert
        else api_client_context(pki.ca_file)
    )
    return httpx.Client(verify=ctx, timeout=5.0)


def start_all(procs: NodeProcs, ids: list[str]) -> None:
    for nid in ids:
        procs.start(nid)


def test_tls_cluster_end_to_end_and_plain_http_refused(procs: NodeProcs, pki: ClusterPKI):
    nodes = procs.define(IDS, lambda nid: tls_flags(pki, nid))
    start_all(procs, IDS)
    with https_client(pki) as http:
        leader = wait_for_leader(http, "https", list(nodes.values()))
        assert leader["peer_auth"] == "tls"
        api = leader["leader_api"]
        w = http.put(f"https://{api}{kv_path('k')}", json={"value": "over-tls"})
        assert w.status_code == 200, w.text
        r = http.get(f"https://{api}{kv_path('k')}", params={"consistency": "linearizable"})
        assert r.status_code == 200 and r.json()["value"] == "over-tls", r.text

        # Replicated to every node over the mTLS peer links.
        def applied(n: NodeProc) -> bool:
            try:
                st = http.get(f"https://{n.api}/v1/status").json()
            except httpx.HTTPError:  # a node may still be starting on a loaded machine
                return False
            return st["applied_index"] >= w.json()["index"]

        for n in nodes.values():
            wait_until(lambda n=n: applied(n), 20, f"{n.id} to apply the write")
    # A plain-HTTP client gets no HTTP answer from the HTTPS API.
    with httpx.Client(timeout=3.0) as plain, pytest.raises(httpx.HTTPError):
        plain.get(f"http://{api}/v1/status")
    # A client that does not trust the CA refuses the server (and learns nothing).
    with httpx.Client(timeout=3.0) as untrusting, pytest.raises(httpx.ConnectError):
        untrusting.get(f"https://{api}/v1/status")


def test_peer_without_trusted_certificate_cannot_join_or_send(
    procs: NodeProcs, pki: ClusterPKI, tmp_path: Path
):
    rogue_pki = make_cluster_pki(tmp_path / "rogue-pki", ["n3"])
    founders = IDS
    nodes = procs.define(
        IDS,
        lambda nid: tls_flags(rogue_pki if nid == "n3" else pki, nid),
        founders=founders,
    )
    # n3 holds a certificate for the right name, signed by a CA the cluster does not trust.
    procs.start("n1")
    procs.start("n2")
    with https_client(pki) as http:
        leader = wait_for_leader(http, "https", [nodes["n1"], nodes["n2"]])
        procs.start("n3")
        # n3 dials both members; the TLS handshakes fail (n3 cannot verify them, and
        # they would not accept its certificate either: see the raw-client test below).
        wait_until(
            lambda: "certificate verify failed" in nodes["n3"].log_text().lower(),
            20,
            "n3 to fail verifying the members' certificates",
        )
        time.sleep(1.0)  # n3's election timeout (< 0.5 s) passes: it campaigns, in vain
        for nid in ("n1", "n2"):
            st = http.get(f"https://{nodes[nid].api}/v1/status").json()
            assert st["term"] == leader["term"], f"{nid} saw a message from the rogue: {st}"
            assert st["leader"] == leader["id"]
        lead_api = leader["leader_api"]
        st = http.get(f"https://{lead_api}/v1/status").json()
        assert st["progress"]["n3"]["match"] == 0, st["progress"]  # nothing reached n3
        r = http.put(f"https://{lead_api}{kv_path('k')}", json={"value": "v"})
        assert r.status_code == 200, r.text  # the cluster is unaffected
    assert procs.nodes["n3"].proc is not None and procs.nodes["n3"].proc.poll() is None


def test_raw_tcp_to_tls_peer_port_gets_nothing(procs: NodeProcs, pki: ClusterPKI):
    nodes = procs.define(["n1"], lambda nid: tls_flags(pki, nid))
    procs.start("n1")
    with https_client(pki) as http:
        wait_for_leader(http, "https", [nodes["n1"]])
    host, port = nodes["n1"].peer.split(":")
    hello = b"\x00\x00\x00\x10" + b"\x96\x01\x01\xc0\xa2n9\xa2n1\xc4\x00" + b"\x00" * 4
    with socket.create_connection((host, int(port)), timeout=3) as s:
        s.sendall(hello)
        s.settimeout(3)
        try:
            data = s.recv(4096)
        except (ConnectionResetError, TimeoutError):
            data = b""
    # Whatever comes back is a TLS alert at most, never a handshake frame (WELCOME).
    assert not data or data[:1] in (b"\x15", b"\x16"), data[:40]
    # A TLS client without a certificate fails the handshake; the node logs it.
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.check_hostname = False
    with (
        socket.create_connection((host, int(port)), timeout=3) as s,
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
        ctx.wrap_socket(s) as tls,
    ):
        tls.sendall(hello)
        if not tls.recv(4096):
            raise ConnectionResetError("closed")
    wait_until(
        lambda: "TLS handshake failed" in nodes["n1"].log_text(), 10, "the refusal in the log"
    )


def test_client_cert_auth(procs: NodeProcs, pki: ClusterPKI):
    nodes = procs.define(["n1"], lambda nid: tls_flags(pki, nid, client_cert_auth=True))
    procs.start("n1")
    with https_client(pki, cert=True) as http:
        wait_for_leader(http, "https", [nodes["n1"]])
        assert http.put(f"https://{nodes['n1'].api}{kv_path('a')}", json={"value": "1"}).is_success
    with https_client(pki) as anonymous, pytest.raises(httpx.HTTPError):
        anonymous.get(f"https://{nodes['n1'].api}/v1/status")


def test_peer_auth_reported_and_warned(procs: NodeProcs, tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    nodes = procs.define(
        ["n1", "n2"],
        lambda nid: ["--cluster-secret-file", str(secret)] if nid == "n2" else [],
        founders=["n1"],
    )
    # Two single-node clusters (n2 founds its own, with a secret).
    nodes["n2"].argv[nodes["n2"].argv.index("--peers") + 1] = f"n2={nodes['n2'].peer}"
    procs.start("n1")
    procs.start("n2")
    with httpx.Client(timeout=3.0) as http:
        st1 = wait_for_leader(http, "http", [nodes["n1"]])
        st2 = wait_for_leader(http, "http", [nodes["n2"]])
    assert st1["peer_auth"] == "none" and st2["peer_auth"] == "secret"
    assert "PEER AUTHENTICATION IS OFF" in nodes["n1"].log_text()
    assert "PEER AUTHENTICATION IS OFF" not in nodes["n2"].log_text()
