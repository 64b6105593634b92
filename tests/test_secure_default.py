"""Secure by default: every cluster the launcher starts has peer authentication.

* ``cluster up`` gives every node peer mutual TLS and an HTTPS API from a throwaway CA;
  the manager's status, health, verify, put and get work over it, and health has no
  peer-authentication warning.
* ``--insecure`` gives ``peer_auth: none``, and health warns.
* without ``cryptography`` (simulated) a 32-byte cluster secret in a 0600 file.
* a process that is not a member cannot talk Raft to such a cluster: not in plain TCP,
  not over TLS without a certificate, not with a certificate from another CA.
* the embedded default cluster is started the same way.
* keys and secrets are never printed by the CLI nor written to the audit log.
"""

from __future__ import annotations

import json
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from proc_helpers import frame, peer_host_port, read_frame, register, shared_http, url
from testkit import release_base_port, reserve_base_port

from mcp_server import cli
from mcp_server.core.config import Config, embedded_default
from mcp_server.local import LocalCluster, security
from mcp_server.manager import Manager
from raft_core.node.certs import make_cluster_pki

pytestmark = pytest.mark.processes

FAST = ["--tick-ms", "20", "--election-ticks", "10"]


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.delenv("RAFT_MANAGER_CONFIG", raising=False)
    return state


@pytest.fixture
def base_port() -> Iterator[int]:
    base = reserve_base_port()
    yield base
    release_base_port(base)


def call(capsys, *args: str) -> tuple[int, dict, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out.strip() else {}, out.out + out.err


def up(capsys, d: Path, base: int, *extra: str) -> dict:
    code, doc, _ = call(
        capsys, "cluster", "up", "--dir", str(d), "--base-port", str(base), *FAST, *extra, "--json"
    )
    assert code == 0, doc
    register(LocalCluster.load(d))
    return doc


def down(d: Path) -> None:
    if (d / "cluster.yaml").exists():
        LocalCluster.load(d).down(grace_s=2.0)


def statuses(d: Path) -> dict[str, dict]:
    lc = LocalCluster.load(d)
    return {n.id: shared_http().get(url(n, "/v1/status")).json() for n in lc.nodes}


def private_texts(d: Path) -> list[str]:
    """Every private key and secret of a local cluster, as text."""
    out = [p.read_text().strip() for p in (d / "tls").glob("*-key.pem")]
    secret = d / security.SECRET_FILE
    if secret.exists():
        out.append(secret.read_text().strip())
    return out


def test_cluster_up_is_tls_and_the_manager_works_over_it(tmp_path, env, base_port, capsys):
    d = tmp_path / "c"
    cfg = tmp_path / "clusters.yaml"
    cfg.write_text(f"clusters:\n  c: {{kind: raft_core, dir: {d}}}\n")
    printed = []
    try:
        doc = up(capsys, d, base_port)
        assert doc["peer_auth"] == "tls" and doc["api_scheme"] == "https"
        assert doc["ca_file"] == str(d / "tls" / "ca.pem")
        assert "mutual TLS" in doc["detail"]
        # cluster.yaml keeps HOST:PORT addresses and says how to reach them.
        lc = LocalCluster.load(d)
        assert lc.settings.api_scheme == "https" and lc.settings.ca_file == doc["ca_file"]
        assert all(":" in n.api_address and "//" not in n.api_address for n in lc.nodes)
        for key in (d / "tls").glob("*-key.pem"):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert {st["peer_auth"] for st in statuses(d).values()} == {"tls"}

        c = ["--config", str(cfg), "--json"]
        code, st, out = call(capsys, *c, "status")
        printed.append(out)
        assert code == 0 and st["leader"] and not any("peer auth" in w for w in st["warnings"])
        code, h, out = call(capsys, *c, "health")
        printed.append(out)
        assert code == 0 and h["healthy"] and not any("peer auth" in w for w in h["warnings"])
        code, w, out = call(capsys, *c, "put", "k", "v")
        printed.append(out)
        assert code == 0, w
        code, r, out = call(capsys, *c, "get", "k")
        printed.append(out)
        assert code == 0 and r["value"] == "v"
        code, v, out = call(capsys, *c, "verify")
        printed.append(out)
        assert code == 0 and v["consistent"], v
        # A member added by the manager gets a certificate from the cluster's CA.
        code, m, out = call(capsys, *c, "member", "add-learner", "n4")
        printed.append(out)
        assert code == 0, m
        assert (d / "tls" / "n4.pem").exists()
        assert statuses(d)["n4"]["peer_auth"] == "tls"
        code, _, out = call(capsys, "cluster", "status", "--dir", str(d), "--json")
        printed.append(out)
    finally:
        down(d)
    secrets = private_texts(d)
    assert len(secrets) == 5  # the CA's and four nodes' keys
    audit = (env / "agent-raft-manager" / "audit.jsonl").read_text()
    for text in [*printed, audit]:
        for secret in secrets:
            body = secret.splitlines()[1]  # a line of the key itself
            assert body not in text


def test_insecure_cluster_says_so_and_health_warns(tmp_path, env, base_port, capsys):
    d = tmp_path / "c"
    cfg = tmp_path / "clusters.yaml"
    cfg.write_text(f"clusters:\n  c: {{kind: raft_core, dir: {d}}}\n")
    try:
        doc = up(capsys, d, base_port, "--insecure")
        assert doc["peer_auth"] == "none" and doc["api_scheme"] == "http"
        assert "WARNING: no peer authentication" in doc["detail"]
        assert {st["peer_auth"] for st in statuses(d).values()} == {"none"}
        code, h, _ = call(capsys, "--config", str(cfg), "--json", "health")
        assert code == 0
        warned = [w for w in h["warnings"] if "no peer authentication" in w]
        assert len(warned) == 1 and all(n in warned[0] for n in ("n1", "n2", "n3")), h
    finally:
        down(d)


def test_without_cryptography_the_launcher_uses_a_cluster_secret(
    tmp_path, env, base_port, capsys, monkeypatch
):
    monkeypatch.setattr(security, "default_peer_auth", lambda: "secret")
    d = tmp_path / "c"
    try:
        doc = up(capsys, d, base_port)
        assert doc["peer_auth"] == "secret" and doc["api_scheme"] == "http"
        secret = d / security.SECRET_FILE
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(bytes.fromhex(secret.read_text())) == 32
        assert {st["peer_auth"] for st in statuses(d).values()} == {"secret"}
        out = json.dumps(doc)
    finally:
        down(d)
    assert secret.read_text().strip() not in out
    audit = (env / "agent-raft-manager" / "audit.jsonl").read_text()
    assert secret.read_text().strip() not in audit


def _hello(sender: str, target: str) -> bytes:
    # The peer handshake's first frame (as in test_node_processes): HELLO from `sender`.
    return frame(msgpack.packb([1, 1, None, sender, target, b""]))


def _refused(sock: socket.socket | ssl.SSLSocket, sender: str, target: str) -> bool:
    """True if the node will not talk Raft on this connection."""
    try:
        sock.sendall(_hello(sender, target))
        read_frame(sock, timeout=5.0)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return False


def test_a_process_that_is_not_a_member_cannot_talk_raft(tmp_path, env, base_port, capsys):
    d = tmp_path / "c"
    try:
        up(capsys, d, base_port)
        lc = LocalCluster.load(d)
        target = lc.nodes[0]
        terms = {i: st["term"] for i, st in statuses(d).items()}
        host, port = peer_host_port(target)
        # 1. plain TCP, claiming to be a member
        with socket.create_connection((host, port), timeout=5) as s:
            assert _refused(s, "n2", target.id)
        # 2. TLS without a client certificate
        anon = ssl.create_default_context(cafile=lc.settings.ca_file)
        anon.check_hostname = False
        with socket.create_connection((host, port), timeout=5) as raw:
            try:
                s = anon.wrap_socket(raw, server_hostname=host)
            except (ssl.SSLError, OSError):
                pass  # refused at the handshake
            else:
                with s:
                    assert _refused(s, "n2", target.id)
        # 3. TLS with a certificate naming a member, from another CA
        other = make_cluster_pki(tmp_path / "other", ["n2"])
        forged = ssl.create_default_context()
        forged.check_hostname = False
        forged.verify_mode = ssl.CERT_NONE
        forged.load_cert_chain(other.nodes["n2"].cert_file, other.nodes["n2"].key_file)
        with socket.create_connection((host, port), timeout=5) as raw:
            try:
                s = forged.wrap_socket(raw, server_hostname=host)
            except (ssl.SSLError, OSError):
                pass
            else:
                with s:
                    assert _refused(s, "n2", target.id)
        # Control: the same hello with the member's own certificate gets an answer.
        member = ssl.create_default_context(cafile=lc.settings.ca_file)
        member.check_hostname = False
        member.load_cert_chain(d / "tls" / "n2.pem", d / "tls" / "n2-key.pem")
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            member.wrap_socket(raw, server_hostname=host) as s,
        ):
            assert not _refused(s, "n2", target.id)
        # Nothing changed: same terms, one leader.
        after = statuses(d)
        assert {i: st["term"] for i, st in after.items()} == terms
        assert sum(st["role"] == "leader" for st in after.values()) == 1
    finally:
        down(d)


def test_the_embedded_default_cluster_is_started_with_tls(env):
    c = embedded_default()
    c.base_port = reserve_base_port()
    try:
        with Manager.open(Config(clusters={c.name: c}), start_local=True) as mgr:
            assert mgr.started is not None
            register(LocalCluster.load(c.dir))
            assert {st["peer_auth"] for st in statuses(Path(c.dir)).values()} == {"tls"}
            assert mgr.status().leader
    finally:
        down(Path(c.dir))
        release_base_port(c.base_port)
