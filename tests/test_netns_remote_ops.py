"""Operating a cluster on other hosts from the manager's host (tests/netns_bed.py).

The manager knows the cluster only by ``endpoints`` in clusters.yaml (HTTPS checked
with the CA of ``raft-manager certs``): it cannot signal the members' processes. Each
operation goes through the CLI as an operator would type it: status, health, reads, a
transfer, a new member on a fourth host (started with its config file, added as a
learner, promoted), a removal, verify, a partition as nftables rules (``nft_command``)
and its heal, and recover through ``recover_command`` (here ``ip netns exec``; ``ssh
HOST systemctl restart raft-node@ID`` on real hosts). Without a recover command,
recover prints the steps instead."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import yaml
from netns_bed import API_PORT, PEER_PORT, PREFIX, host_ip, netns_bed, require
from testkit import wait_until

from mcp_server import cli
from mcp_server.operations.remote import node_command

pytestmark = [pytest.mark.processes, pytest.mark.slow]


def _pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10)
    return [int(p) for p in out.stdout.split()]


def test_remote_operations_through_endpoints_and_configured_commands(tmp_path, capsys):
    require(need_nft=True)
    with netns_bed(tmp_path / "bed") as bed:
        bed.start_cluster(3)
        capsys.readouterr()
        entry = {
            "kind": "raft_core",
            "endpoints": [f"{host_ip(n)}:{API_PORT}" for n in ("n1", "n2", "n3")],
            "mode": "sandbox",
            "tls": {"ca_file": str(bed.pki / "ca.pem")},
            "recover_command": bed.start_command(),
            "nft_command": f"ip netns exec {PREFIX}-{{id}} nft -f -",
        }
        bare = {k: v for k, v in entry.items() if k not in ("recover_command", "nft_command")}
        cfg = tmp_path / "clusters.yaml"
        audit = tmp_path / "audit.jsonl"
        doc = {"default": "hosts", "audit_log": str(audit)}
        cfg.write_text(yaml.safe_dump({**doc, "clusters": {"hosts": entry, "bare": bare}}))

        def run(*argv: str, expect: int = 0) -> dict:
            code = cli.main(["--config", str(cfg), *argv, "--json"])
            captured = capsys.readouterr()
            assert code == expect, (argv, captured.out[-2000:], captured.err[-2000:])
            return json.loads(captured.out)

        def status() -> dict:
            return run("status")

        def settled() -> dict | None:
            s = status()
            return s if s["leader"] and s["reachable_voters"] == 3 else None

        st = wait_until(settled, what="a leader and every voter answering")
        assert st["voters"] == ["n1", "n2", "n3"], st
        first = st["leader"]

        target = next(n for n in ("n1", "n2", "n3") if n != first)
        moved = run("elect", "--to", target)
        assert moved["leader"] == target and moved["method"] == "transfer", moved

        # A fourth host: its certificate and config file, its process, then the cluster
        # takes it in (learner, then voter) from the manager's host.
        bed.add_host("n4")
        bed.issue("n4", ["n1", "n2", "n3", "n4"], join=True)
        capsys.readouterr()
        subprocess.run(
            node_command(bed.start_command(), "n4", host_ip("n4")), check=True, timeout=30
        )
        run("put", "before-n4", "1")
        run(
            "member",
            "add-learner",
            "n4",
            "--peer-address",
            f"{host_ip('n4')}:{PEER_PORT}",
            "--api-address",
            f"{host_ip('n4')}:{API_PORT}",
        )
        assert "n4" in status()["learners"]
        run("member", "promote", "n4")
        assert "n4" in status()["voters"]
        run("member", "remove", "n3")
        st = status()
        assert sorted(st["voters"]) == ["n1", "n2", "n4"] and not st["learners"], st

        verified = run("verify")
        assert verified["consistent"] is True and "n4" in verified["checked"], verified
        assert run("get", "before-n4")["value"] == "1"
        assert run("get", "before-n4", "--stale")["value"] == "1"

        # A partition as nftables rules: n4 is cut off, the others go on committing.
        cut = run("fault", "partition", "n4")
        assert "nftables" in cut["detail"] and {"n1", "n2"} <= set(cut["faults"]["n4"]["drop"])
        rules = subprocess.run(
            ["ip", "netns", "exec", bed.netns("n4"), "nft", "list", "table", "inet", "raft_chaos"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        assert f"ip saddr {host_ip('n1')} drop" in rules, rules
        run("put", "during-cut", "1")
        healed = run("fault", "heal")
        assert "nftables rules removed" in healed["detail"]

        def healthy() -> bool:
            code = cli.main(["--config", str(cfg), "health", "--json"])
            capsys.readouterr()
            return code == 0

        wait_until(healthy, timeout=20.0, what="n4 to be back with the others after the heal")

        # n2's host loses its process; recover runs the configured command and waits.
        victim = "n2" if status()["leader"] != "n2" else "n1"
        for pid in _pids(bed.netns(victim)):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _pids(bed.netns(victim)), what=f"{victim} to die")
        run("put", "while-down", "1")
        wait_until(
            lambda: not next(m for m in status()["members"] if m["id"] == victim)["reachable"],
            what=f"the manager to see {victim} down",
        )
        manual = run("--cluster", "bare", "recover", victim, expect=1)
        steps = "\n".join(manual["instructions"])
        assert manual["action"] == "manual" and "recover_command" in steps, manual
        assert f"raft-manager recover {victim}" in steps, manual
        assert f"systemctl restart raft-node@{victim}" in steps, manual
        back = run("recover", victim)
        assert back["action"] == "restarted" and back["caught_up"] is True, back
        assert _pids(bed.netns(victim))
        final = run("verify")
        assert final["consistent"] is True and victim in final["checked"], final
        assert "recover_node" in audit.read_text()
