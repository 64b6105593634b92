"""verify_consistency on a real cluster: consistent, divergent (one member's answers
doctored through the adapter), and could-not-verify.

verify compares members at the lowest applied index among them, so the test waits until
every member applied the writes before it asserts that index; and it runs with steady
elections (1-2 s), as a spurious election on a loaded machine is not what it tests."""

from __future__ import annotations

import dataclasses

import pytest
from manager_helpers import STEADY, leader_of, local_cluster, make_manager, wait_all_applied

from mcp_server.core.port import LogSlice

pytestmark = pytest.mark.processes


def test_verify_consistent_divergent_and_unverifiable(tmp_path, state, monkeypatch):
    with (
        local_cluster(tmp_path / "c", election_ticks=STEADY) as lc,
        make_manager(lc.dir, state) as mgr,
    ):
        mgr.replicate({f"k{i}": str(i) for i in range(12)})
        last = max(e.index for e in mgr.replicate({"last": "x"}).result.entries)
        assert wait_all_applied(lc) >= last
        leader = leader_of(lc)
        ok = mgr.verify_consistency()
        assert ok.consistent is True and ok.divergences == []
        assert ok.common_index >= last >= 15 and ok.log_range == [1, ok.common_index]
        assert ok.log_indexes_checked == ok.common_index
        bad = next(n for n in ("n1", "n2", "n3") if n != leader)
        first_bad = 9

        # 1. One member applied something else from index 9 on: its chain differs there
        #    and at every later index.
        real_digest = mgr.adapter.state_digest

        def doctored_digest(node, at=None):
            d = real_digest(node, at)
            if node == bad and d.index >= first_bad:
                return dataclasses.replace(d, chain="f" * 64)
            return d

        monkeypatch.setattr(mgr.adapter, "state_digest", doctored_digest)
        v = mgr.verify_consistency()
        assert v.consistent is False
        states = [d for d in v.divergences if d.kind == "applied_state"]
        assert [(d.member, d.index) for d in states] == [(bad, first_bad)], v.divergences
        assert "first at index 9" in states[0].detail
        monkeypatch.setattr(mgr.adapter, "state_digest", real_digest)

        # 2. Same applied entries, different state machine contents.
        def doctored_hash(node, at=None):
            d = real_digest(node, at)
            if node == bad and at is None:
                return dataclasses.replace(d, state_hash="0" * 64)
            return d

        monkeypatch.setattr(mgr.adapter, "state_digest", doctored_hash)
        v = mgr.verify_consistency()
        assert v.consistent is False
        assert [(d.member, d.kind) for d in v.divergences] == [(bad, "state_hash")]
        monkeypatch.setattr(mgr.adapter, "state_digest", real_digest)

        # 3. A committed log entry that differs on one member.
        real_log = mgr.adapter.log_digests

        def doctored_log(node, start, end):
            s = real_log(node, start, end)
            if node != bad:
                return s
            entries = [
                dataclasses.replace(e, digest="deadbeefdeadbeef") if e.index == 5 else e
                for e in s.entries
            ]
            return LogSlice(s.first_index, s.last_index, entries)

        monkeypatch.setattr(mgr.adapter, "log_digests", doctored_log)
        v = mgr.verify_consistency()
        assert v.consistent is False
        logs = [d for d in v.divergences if d.kind == "log_entry"]
        assert [(d.member, d.index) for d in logs] == [(bad, 5)]
        assert "deadbeef" in logs[0].found
        monkeypatch.setattr(mgr.adapter, "log_digests", real_log)
        assert mgr.verify_consistency().consistent is True

        # 4. Fewer than two members answer: it cannot verify (null), and says why.
        others = [n for n in ("n1", "n2", "n3") if n != leader]
        lc.kill(others[0])
        v = mgr.verify_consistency()
        assert v.consistent is True and v.unchecked == [others[0]]
        assert any("unreachable" in r for r in v.reasons)
        lc.kill(others[1])
        v = mgr.verify_consistency()
        assert v.consistent is None and v.divergences == []
        assert "at least two" in v.reasons[0]
