"""Three members on three hosts (network namespaces on a bridge, tests/netns_bed.py),
with certificates from ``raft-manager certs``: mutual TLS between peers, HTTPS for the
API checked against the address dialed, and a certificate of one host refused when
another host presents it."""

from __future__ import annotations

import contextlib
import ssl

import httpx
import pytest
import yaml
from netns_bed import API_PORT, host_ip, netns_bed, require
from testkit import wait_until

from mcp_server.local import ClusterError

pytestmark = [pytest.mark.processes]


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _statuses(lc, client):
    return {n.id: client.get(lc.url(n, "/v1/status")).json() for n in lc.nodes}


def test_three_hosts_with_command_certificates_and_a_wrong_host_certificate_refused(tmp_path):
    require()
    with netns_bed(tmp_path / "bed") as bed:
        lc = bed.start_cluster(3)
        ca = ssl.create_default_context(cafile=lc.settings.ca_file)
        with httpx.Client(verify=ca, timeout=2.0) as client:

            def one_leader():
                sts = _statuses(lc, client)
                leaders = {st["leader"] for st in sts.values()}
                return sts if len(leaders) == 1 and None not in leaders else None

            sts = wait_until(one_leader, timeout=10.0, what="every member to follow one leader")
            assert {st["peer_auth"] for st in sts.values()} == {"tls"}, sts
            # Every member advertises its own host's address, none loopback.
            members = next(iter(sts.values()))["members"]
            assert {m: v["api_address"] for m, v in members.items()} == {
                n: f"{host_ip(n)}:{API_PORT}" for n in ("n1", "n2", "n3")
            }, members

            # n3's host is given n1's certificate and key.
            lc.kill("n3")
            cfg = bed.pki / "n3.yaml"
            good = cfg.read_text()
            doc = yaml.safe_load(good)
            for key in ("cert_file", "peer_cert_file"):
                doc[key] = str(bed.pki / "n1.pem")
            for key in ("key_file", "peer_key_file"):
                doc[key] = str(bed.pki / "n1-key.pem")
            cfg.write_text(yaml.safe_dump(doc))
            # Its API serves n1's certificate: no client that checks names trusts it, so
            # start() gives up waiting at once; a client that checks nothing sees it up.
            with contextlib.suppress(ClusterError):
                lc.start("n3", 0.1)
            blind = httpx.Client(verify=False, timeout=2.0)
            n3_status = f"https://{host_ip('n3')}:{API_PORT}/v1/status"
            wait_until(lambda: _answers(blind, n3_status), timeout=20.0, what="n3's API")
            # The manager's side: the certificate does not name the address it dialed.
            with pytest.raises(httpx.ConnectError, match="IP address mismatch"):
                client.get(f"https://{host_ip('n3')}:{API_PORT}/v1/status")
            # The peers' side: both directions refuse it, saying why.
            refusal = "claims to be 'n3' but its TLS certificate names n1"

            def refused() -> bool:
                logs = [(bed.dir / f"{n}.log").read_text() for n in ("n1", "n2", "n3")]
                return all(refusal in text for text in logs[:2]) and "certs issue n3" in logs[0]

            wait_until(refused, timeout=15.0, what="n1 and n2 to refuse n1's certificate on n3")
            # n3 never joined in: it follows no leader.
            n3 = blind.get(n3_status).json()
            blind.close()
            assert n3["role"] != "leader" and n3["leader"] is None, n3

            # Its own certificate back: n3 rejoins.
            lc.kill("n3")
            cfg.write_text(good)
            lc.start("n3", 20.0)
            wait_until(
                lambda: _statuses(lc, client)["n3"]["leader"] is not None,
                timeout=20.0,
                what="n3 to follow the leader with its own certificate",
            )
