"""The API token and the cluster secret never appear in a node's log, status or metrics.

Three ``raft-node`` processes (one at DEBUG) run with both secrets; the test writes and
reads, makes requests with a wrong and a missing token, and lets a fourth process with
the wrong cluster secret pose as a member (n3) and dial the others. Then it greps every
log, GET /v1/status and /metrics of every node for both secrets (raw, and in the hex
and base64 forms a careless log line might use).
"""

from __future__ import annotations

import base64
import contextlib
import time
from pathlib import Path

import httpx
import pytest
from node_procs import NodeProcs, wait_for_leader
from proc_helpers import kv_path

pytestmark = pytest.mark.processes

TOKEN = "tok-7Qp2vX9rL4mN8sK1"
SECRET = "sec-Zr5Wq8Ty2Ub6Io0Pa3"


def forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, raw.hex(), base64.b64encode(raw).decode(), secret[4:]]


def test_secrets_absent_from_logs_status_and_metrics(tmp_path: Path) -> None:
    token_file, secret_file, wrong_file = (tmp_path / n for n in ("token", "secret", "wrong"))
    token_file.write_text(TOKEN + "\n")
    secret_file.write_text(SECRET + "\n")
    wrong_file.write_text("wrong-" + SECRET + "\n")
    procs = NodeProcs(tmp_path)
    try:
        nodes = procs.define(
            ["n1", "n2", "n3", "rogue"],
            lambda nid: [
                "--api-token-file", str(token_file),
                "--log-level", "DEBUG" if nid in ("n1", "rogue") else "INFO",
                "--cluster-secret-file", str(wrong_file if nid == "rogue" else secret_file),
            ],
            founders=["n1", "n2", "n3"],
        )  # fmt: skip
        rogue = nodes["rogue"]
        rogue.argv[rogue.argv.index("--id") + 1] = "n3"  # claims to be a member
        for nid in ("n1", "n2", "n3"):
            procs.start(nid)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(timeout=5.0, headers=auth) as http:
            leader = wait_for_leader(http, "http", [nodes[i] for i in ("n1", "n2", "n3")])
            api = leader["leader_api"]
            assert http.put(f"http://{api}{kv_path('k')}", json={"value": "v"}).is_success
            assert http.get(f"http://{api}{kv_path('k')}").json()["value"] == "v"
            for bad in ({"Authorization": "Bearer wrong-" + TOKEN}, {"Authorization": ""}):
                r = httpx.put(f"http://{api}{kv_path('k')}", json={"value": "x"}, headers=bad)
                assert r.status_code == 401
            # A process with the wrong cluster secret dials the members and is refused.
            procs.start("rogue")
            deadline = time.monotonic() + 10
            while "authentication" not in rogue.log_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "authentication" in rogue.log_text()
            exposed = []
            for n in nodes.values():
                for path in ("/v1/status", "/metrics"):
                    with contextlib.suppress(httpx.HTTPError):
                        exposed.append((f"{n.id}{path}", http.get(f"http://{n.api}{path}").text))
        assert len(exposed) >= 6
        for nid in nodes:
            procs.stop(nid)
        exposed += [(f"{n.id} log", n.log_text()) for n in nodes.values()]
        assert any("401" in text or "auth" in text for _, text in exposed)
        for where, text in exposed:
            for secret in (TOKEN, SECRET):
                for form in forms(secret):
                    assert form not in text, f"a form of a secret appears in {where}"
    finally:
        procs.close()
