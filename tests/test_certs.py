"""``raft-manager certs init|issue``: modes, validity bounds, names, refusals, and a
per-host config file that ``raft-node`` itself accepts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
from pathlib import Path

from cryptography import x509

from mcp_server import cli
from raft_core.node.config import load_config


def _run(capsys, *argv: str, expect: int = 0) -> dict | str:
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr()
    assert code == expect, (argv, out.out, out.err)
    return json.loads(out.out) if code == 0 else out.out + out.err


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_and_issue_make_private_files_with_bounded_validity_and_every_name(tmp_path, capsys):
    d = tmp_path / "pki"
    _run(capsys, "certs", "init", "--dir", str(d))
    assert _mode(d) == 0o700 and _mode(d / "ca-key.pem") == 0o600
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    life = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=3649) < life <= dt.timedelta(days=3651)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    r = _run(capsys, "certs", "issue", "n1", "--dir", str(d), "--host", "10.0.0.1")
    r = _run(
        capsys, "certs", "issue", "n2", "--dir", str(d),
        "--host", "10.0.0.2", "--host", "N2.Example.com", "--host", "fd00::2",
    )  # fmt: skip
    assert _mode(d / "n2-key.pem") == 0o600
    cert = x509.load_pem_x509_certificate((d / "n2.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n2", "n2.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.2"),
        ipaddress.ip_address("fd00::2"),
    ]
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) < life <= dt.timedelta(days=366)
    assert r["renew_after"] < r["not_after"]
    assert "--peer-trusted-ca-file" in r["flags"] and str(d / "n2.pem") in r["flags"]

    # Refusals: each says what to do, and nothing on disk changes.
    before = (d / "n2.pem").read_bytes()
    err = _run(capsys, "certs", "issue", "n2", "--dir", str(d), "--host", "10.0.0.2", expect=1)
    assert "--renew" in err
    assert (d / "n2.pem").read_bytes() == before
    err = _run(capsys, "certs", "init", "--dir", str(d), expect=1)
    assert "already holds a CA" in err
    for argv, says in (
        (["issue", "n3", "--host", "10.0.0.3", "--days", "2000"], "1 to 825 days"),
        (["issue", "n3", "--host", "bad host!"], "neither an IP address nor a DNS name"),
        (["issue", "n3"], "name at least one address"),
        (["issue", "n/3", "--host", "10.0.0.3"], "must be 1-64 letters"),
    ):
        assert says in _run(capsys, "certs", *argv, "--dir", str(d), expect=1)
    assert not (d / "n3.pem").exists()
    assert "certs init" in _run(
        capsys, "certs", "issue", "n1", "--dir", str(tmp_path / "none"), "--host", "10.0.0.1",
        expect=1,
    )  # fmt: skip
    assert "3650" in _run(
        capsys, "certs", "init", "--dir", str(tmp_path / "x"), "--days", "4000", expect=1
    )

    renewed = _run(capsys, "certs", "issue", "n2", "--dir", str(d), "--host", "10.0.0.2", "--renew")
    assert (d / "n2.pem").read_bytes() != before and renewed["names"] == ["n2", "10.0.0.2"]


def test_issue_with_peers_writes_a_config_file_raft_node_accepts(tmp_path, capsys):
    d = tmp_path / "pki"
    _run(capsys, "certs", "init", "--dir", str(d))
    peers = "n1=10.0.0.1,n2=10.0.0.2,n3=n3.example.com"
    r = _run(
        capsys, "certs", "issue", "n3", "--dir", str(d), "--peers", peers,
        "--data-dir", str(tmp_path / "data"), "--api-port", "9201",
    )  # fmt: skip
    assert r["flags"] == ["--config", r["config_file"]]
    cfg = load_config(["--config", r["config_file"]])
    assert cfg.id == "n3" and cfg.peer_tls and cfg.api_tls
    # A host known by name binds every address and advertises the name.
    assert cfg.peer_listen == "0.0.0.0:7101" and cfg.advertised_peer == "n3.example.com:7101"
    assert cfg.peers == {"n1": "10.0.0.1:7101", "n2": "10.0.0.2:7101", "n3": "n3.example.com:7101"}
    assert cfg.peer_apis["n1"] == "10.0.0.1:9201"

    r = _run(capsys, "certs", "issue", "n1", "--dir", str(d), "--peers", peers, "--join")
    cfg = load_config(["--config", r["config_file"], "--data-dir", str(tmp_path / "d1")])
    assert cfg.join and cfg.peer_listen == "10.0.0.1:7101" and cfg.advertised_api == "10.0.0.1:7201"
    err = _run(capsys, "certs", "issue", "n4", "--dir", str(d), "--peers", peers, expect=1)
    assert "must name n4's own host" in err


def test_install_dir_names_where_the_files_will_be_on_the_host(tmp_path, capsys):
    install = "/etc/raft-node"
    d = tmp_path / "pki"
    _run(capsys, "certs", "init", "--dir", str(d))
    r = _run(
        capsys,
        "certs",
        "issue",
        "n1",
        "--dir",
        str(d),
        "--host",
        "10.0.0.1",
        "--install-dir",
        install,
    )
    assert f"{install}/n1-key.pem" in r["flags"] and f"{install}/ca.pem" in r["flags"]
