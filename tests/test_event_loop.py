"""The node's event loop: uvloop where installed, asyncio on request, a clear error
when uvloop is asked for by name and missing. A mixed cluster (one node on each
loop) replicates, so an operator can switch loops one node at a time."""

from __future__ import annotations

import builtins
from pathlib import Path

import httpx
import pytest
from node_procs import NodeProcs, wait_for_leader
from testkit import wait_until

from raft_core.node.config import ConfigError, NodeConfig
from raft_core.node.eventloop import EventLoopUnavailable, loop_runner


def test_auto_prefers_uvloop_when_installed() -> None:
    import uvloop  # noqa: F401  (a dependency on this platform: missing is a broken install)

    assert loop_runner("auto")[0] == "uvloop"
    assert loop_runner("asyncio")[0] == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_by_name_is_an_error(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_uvloop(name, *args, **kwargs):
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert loop_runner("auto")[0] == "asyncio"
    with pytest.raises(EventLoopUnavailable, match="--event-loop asyncio"):
        loop_runner("uvloop")


def test_peer_tls_runs_on_asyncio_and_refuses_uvloop_by_name(tmp_path: Path) -> None:
    assert loop_runner("auto", peer_tls=True)[0] == "asyncio"
    with pytest.raises(EventLoopUnavailable, match="peer TLS"):
        loop_runner("uvloop", peer_tls=True)
    pem = tmp_path / "x.pem"
    pem.write_text("")
    cfg = NodeConfig(
        id="n1",
        data_dir=tmp_path,
        event_loop="uvloop",
        peer_cert_file=pem,
        peer_key_file=pem,
        peer_trusted_ca_file=pem,
    )
    with pytest.raises(ConfigError, match="peer TLS"):
        cfg.validate()


def test_an_unknown_loop_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        loop_runner("trio")
    cfg = NodeConfig(id="n1", data_dir=tmp_path, event_loop="trio")
    with pytest.raises(ConfigError, match="--event-loop"):
        cfg.validate()


@pytest.fixture
def procs(tmp_path: Path):
    p = NodeProcs(tmp_path)
    yield p
    p.close()


@pytest.mark.processes
def test_a_cluster_on_both_loops_replicates(procs: NodeProcs) -> None:
    loops = {"n1": "uvloop", "n2": "asyncio", "n3": "uvloop"}
    nodes = procs.define(list(loops), lambda nid: ["--event-loop", loops[nid]])
    for nid in loops:
        procs.start(nid)
    with httpx.Client(timeout=5.0) as http:
        lead = wait_for_leader(http, "http", list(nodes.values()))
        api = nodes[lead["id"]].api
        for i in range(20):
            r = http.put(f"http://{api}/v1/kv/k{i}", json={"value": str(i)})
            assert r.status_code == 200, r.text

        def all_applied() -> bool:
            return all(
                http.get(f"http://{n.api}/v1/kv/k19?consistency=stale").json()["value"] == "19"
                for n in nodes.values()
            )

        wait_until(all_applied, 10, "every node to apply the writes")
    for nid, name in loops.items():
        assert f"{nid}: event loop {name}" in nodes[nid].log_text()
