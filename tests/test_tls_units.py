"""TLS pieces without processes: certificate generation, config checks, contexts."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest

from raft_core.node.certs import CertificateToolError, make_cluster_pki
from raft_core.node.config import ConfigError, load_config
from raft_core.node.tls import api_server_context, cert_names, peer_tls, peer_tls_of


def test_generated_certificates_name_the_node_and_load(tmp_path: Path) -> None:
    pki = make_cluster_pki(tmp_path, ["n1"])
    c = pki.nodes["n1"]
    assert oct(c.key_file.stat().st_mode & 0o777) == "0o600"
    assert oct(pki.ca_key_file.stat().st_mode & 0o777) == "0o600"
    tls = peer_tls(c.cert_file, c.key_file, pki.ca_file)
    assert tls.server.verify_mode == ssl.CERT_REQUIRED == tls.client.verify_mode
    decoded = ssl._ssl._test_decode_cert(str(c.cert_file))  # type: ignore[attr-defined]
    assert cert_names(decoded) == {"n1", "localhost"}
    api_server_context(c.cert_file, c.key_file, pki.ca_file, client_cert_auth=True)


def test_missing_cryptography_gives_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(CertificateToolError, match="pip install cryptography"):
        make_cluster_pki(tmp_path, ["n1"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cert-file", "{f}"], "go together"),
        (["--cert-file", "{f}", "--key-file", "{f}", "--client-cert-auth"], "client-cert-auth"),
        (["--peer-cert-file", "{f}", "--peer-key-file", "{f}"], "mutual"),
        (["--cert-file", "{f}", "--key-file", "{missing}"], "no such file"),
        (["--max-api-connections", "0"], "at least 1"),
        (["--request-head-timeout-ms", "0"], "positive"),
    ],
)
def test_config_refuses_incomplete_tls_and_bad_limits(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    f = tmp_path / "x.pem"
    f.write_text("x")
    argv = ["--id", "n1", "--data-dir", str(tmp_path)]
    argv += [a.format(f=f, missing=tmp_path / "nope.pem") for a in flags]
    with pytest.raises(ConfigError, match=message):
        load_config(argv)


def test_config_defaults_and_tls_flags(tmp_path: Path) -> None:
    pki = make_cluster_pki(tmp_path / "pki", ["n1"])
    c = pki.nodes["n1"]
    cfg = load_config(["--id", "n1", "--data-dir", str(tmp_path)])
    assert (cfg.max_api_connections, cfg.request_head_timeout_ms) == (1000, 10_000)
    assert (cfg.request_body_timeout_ms, cfg.api_idle_timeout_ms) == (30_000, 60_000)
    assert not cfg.api_tls and peer_tls_of(cfg) is None
    peer_flags = ["--peer-cert-file", str(c.cert_file), "--peer-key-file", str(c.key_file)]
    peer_flags += ["--peer-trusted-ca-file", str(pki.ca_file)]
    cfg = load_config(["--id", "n1", "--data-dir", str(tmp_path), *peer_flags])
    assert isinstance(cfg.peer_cert_file, Path) and peer_tls_of(cfg) is not None
