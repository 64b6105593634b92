"""The nftables nemesis on three hosts (tests/netns_bed.py): partitions are rules in the
members' network namespaces, and the nodes do not even allow the fault API.

First the rules are shown to bite (an isolated leader is replaced, a one-way cut leaves
the deaf follower campaigning while the leader still hears it), then a short chaos run
(seed 729: every partition variant in 40 s, ``flap`` first) must end with a clean
verdict and no table left behind."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from netns_bed import netns_bed, require
from testkit import wait_until

from mcp_server import cli
from mcp_server.chaos.nft import NftTarget
from mcp_server.local import nft

pytestmark = [pytest.mark.processes, pytest.mark.slow]


def _tables(netns: str) -> str:
    argv = ["ip", "netns", "exec", netns, "nft", "list", "tables"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout


def test_nft_rules_cut_real_links_and_a_chaos_run_is_clean(tmp_path, capsys):
    require(need_nft=True)
    with netns_bed(tmp_path / "bed") as bed:
        lc = bed.start_cluster(3)
        target = NftTarget(lc.dir)
        nodes = [n.id for n in lc.nodes]

        async def statuses() -> dict:
            async with httpx.AsyncClient(verify=target.verify()) as http:
                return await target.statuses(http)

        async def set_faults(faults: dict) -> None:
            async with httpx.AsyncClient(verify=target.verify()) as http:
                await target.set_faults(http, faults)

        def leader_other_than(old: str | None) -> str | None:
            sts = asyncio.run(statuses())
            lead = [n for n, st in sts.items() if st["role"] == "leader" and n != old]
            return lead[0] if lead else None

        old = wait_until(lambda: leader_other_than(None), timeout=10.0, what="a leader")
        rest = [n for n in nodes if n != old]
        asyncio.run(set_faults({old: {"drop": rest}, **{n: {"drop": [old]} for n in rest}}))
        assert "raft_chaos" in _tables(bed.netns(old))
        new = wait_until(lambda: leader_other_than(old), timeout=15.0, what="a new leader")
        assert new in rest
        asyncio.run(set_faults({n: {} for n in nodes}))
        assert all("raft_chaos" not in _tables(bed.netns(n)) for n in nodes)

        # One way: the follower hears nothing from the leader, the leader still hears it
        # (the follower's votes and the leader's acknowledgements of them do get through).
        lead = wait_until(lambda: leader_other_than(None), timeout=15.0, what="a leader")
        deaf = next(n for n in nodes if n != lead)
        script = nft.ruleset(target.hosts()[deaf], {"drop_in": [lead]}, target.hosts())
        assert f"saddr {target.hosts()[lead].address} tcp dport" in script
        asyncio.run(set_faults({deaf: {"drop_in": [lead]}}))

        def deaf_campaigned() -> bool:
            st = asyncio.run(statuses()).get(deaf)
            return bool(st) and st["leader"] != lead

        wait_until(deaf_campaigned, timeout=15.0, what=f"{deaf} to stop hearing {lead}")
        asyncio.run(set_faults({n: {} for n in nodes}))

        cfg = tmp_path / "clusters.yaml"
        cfg.write_text(json.dumps({"clusters": {"hosts": {"dir": str(lc.dir), "mode": "sandbox"}}}))
        out = tmp_path / "out"
        argv = ["--config", str(cfg), "--cluster", "hosts", "chaos", "--network", "nft"]
        argv += ["--nemesis", "partition", "--duration", "40", "--seed", "729"]
        capsys.readouterr()  # what the certificate commands printed
        code = cli.main([*argv, "--json", "--out", str(out)])
        captured = capsys.readouterr()
        v = json.loads(captured.out)
        print(captured.err[-3000:], file=sys.stderr)
        assert code == 0, (v["anomalies"], v["fault_events"])
        assert v["ok"] and v["linearizable"] and v["consistent"] is True and v["network"] == "nft"
        events = v["fault_events"]
        # The nodes refuse the fault API: a partition made through it would be refused.
        assert v["faults_refused"] == 0 and all(e["applied"] for e in events), events
        applied = {e["variant"] for e in events}
        # The first step is never skipped; the later ones are unless the machine is slow.
        assert events[0]["variant"] == "flap" and "flapping" in events[0]["detail"], events
        assert len(applied) >= 4, events
        assert v["counts"]["ok"] > 100, v["counts"]
        assert all("raft_chaos" not in _tables(bed.netns(n)) for n in nodes)
