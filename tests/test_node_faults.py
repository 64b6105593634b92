"""The fault set of ``POST /v1/admin/faults`` (raft_core/node/faults.py) and the
slow-disk delay in DiskStorage: pure checks, no processes."""

from __future__ import annotations

import time

import pytest

from raft_core.node.errors import BadRequest
from raft_core.node.faults import (
    FaultRequest,
    FaultSet,
    check_peer_ids,
    merge,
    parse_fault_request,
)
from raft_core.node.storage import DiskStorage
from raft_core.types import Entry, HardState

EMPTY = {"drop": [], "drop_out": [], "drop_in": [], "delay_ms": 0, "disk_delay_ms": 0}


def test_parse_takes_every_key():
    req = parse_fault_request(
        {
            "drop": ["n2"],
            "drop_out": ["n3"],
            "drop_in": ["n2", "n3"],
            "delay_ms": 5,
            "disk_delay_ms": 10_000,
            "clear": False,
        }
    )
    assert req == FaultRequest(
        clear=False,
        peers={
            "drop": frozenset({"n2"}),
            "drop_out": frozenset({"n3"}),
            "drop_in": frozenset({"n2", "n3"}),
        },
        delay_ms=5,
        disk_delay_ms=10_000,
    )
    assert parse_fault_request({}) == FaultRequest()
    assert parse_fault_request({"drop": None, "delay_ms": None}) == FaultRequest()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ([], "JSON object"),
        ({"drops": ["n2"]}, "unknown field(s): drops"),
        ({"drop_out": "n2"}, "drop_out must be a list"),
        ({"drop_in": [2]}, "drop_in must be a list"),
        ({"drop": [""]}, "drop must be a list"),
        ({"drop": ["x" * 65]}, "drop must be a list"),
        ({"delay_ms": -1}, "delay_ms must be an integer in 0..60000"),
        ({"delay_ms": 60_001}, "0..60000"),
        ({"delay_ms": 1.5}, "0..60000"),
        ({"disk_delay_ms": 10_001}, "disk_delay_ms must be an integer in 0..10000"),
        ({"disk_delay_ms": True}, "0..10000"),
        ({"disk_delay_ms": "5"}, "0..10000"),
        ({"clear": 1}, "clear must be true or false"),
        ({"clear": "yes"}, "clear must be true or false"),
    ],
)
def test_parse_refuses_bad_input_with_a_clear_message(body, needle):
    with pytest.raises(BadRequest) as e:
        parse_fault_request(body)
    assert needle in e.value.message


def test_peer_ids_must_be_other_known_members():
    members = {"n1", "n2", "n3"}
    check_peer_ids(parse_fault_request({"drop_out": ["n2", "n3"]}), "n1", members)
    with pytest.raises(BadRequest, match=r"drop_in: unknown node id\(s\) n9; peers: n2, n3"):
        check_peer_ids(parse_fault_request({"drop_in": ["n2", "n9"]}), "n1", members)
    with pytest.raises(BadRequest, match="drop: n1 is this node"):
        check_peer_ids(parse_fault_request({"drop": ["n1"]}), "n1", members)


def test_merge_keeps_what_a_request_leaves_out_and_clear_resets_first():
    current = {**EMPTY, "drop": ["n2"], "delay_ms": 40, "disk_delay_ms": 100}
    got = merge(parse_fault_request({"drop_out": ["n3"]}), current)
    assert got == FaultSet(
        drop=frozenset({"n2"}),
        drop_out=frozenset({"n3"}),
        drop_in=frozenset(),
        delay_ms=40,
        disk_delay_ms=100,
    )
    got = merge(parse_fault_request({"clear": True, "drop_in": ["n3"]}), current)
    assert got == FaultSet(frozenset(), frozenset(), frozenset({"n3"}), 0, 0)
    assert merge(parse_fault_request({"clear": True}), current) == FaultSet(
        frozenset(), frozenset(), frozenset(), 0, 0
    )
    # An empty list is an explicit "none", not "keep".
    assert merge(parse_fault_request({"drop": []}), current).drop == frozenset()


def _entries(first: int, n: int) -> list[Entry]:
    return [Entry(index=i, term=1, data=b"x") for i in range(first, first + n)]


def test_sync_delay_slows_every_synced_save_and_shows_in_the_fsync_metric(tmp_path):
    seen: list[float] = []
    st = DiskStorage.open(tmp_path / "d", on_fsync=seen.append)
    try:
        st.sync_delay_s = 0.05
        t0 = time.perf_counter()
        st.save(HardState(term=1), _entries(1, 2))
        st.save(None, _entries(3, 1))
        assert time.perf_counter() - t0 >= 0.1
        assert len(seen) == 2 and min(seen) >= 0.05
        # An unsynced batch (a commit index alone) is not slowed: there is no sync.
        t1 = time.perf_counter()
        st.save(HardState(term=1, commit=3), [], sync=False)
        assert time.perf_counter() - t1 < 0.05 and len(seen) == 2
        st.sync_delay_s = 0.0
        st.save(None, _entries(4, 1))
        assert seen[-1] < 0.05
    finally:
        st.close()
    with DiskStorage.open(tmp_path / "d") as again:
        assert again.last_index == 4  # slowed, not damaged
