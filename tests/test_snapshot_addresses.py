"""A learner installing a snapshot older than the leader keeps the leader's address.

Found by `raft-manager chaos` (seed 101 and six others): restoring a snapshot replaced
the node's address map with the snapshot's, so a learner forgot a leader that joined
after that snapshot, dropped its messages as coming from an unknown peer, and never
acknowledged the snapshot; the leader kept it in snapshot state at match 0.
"""

from __future__ import annotations

import httpx
import pytest
from proc_helpers import ClusterFactory, find_leader, http_client, url, wait_leader, wait_until

pytestmark = pytest.mark.processes


@pytest.fixture
def factory(tmp_path):
    f = ClusterFactory(tmp_path)
    yield f
    f.close()


def _change(http: httpx.Client, leader: dict, body: dict) -> dict:
    r = http.post(url(leader["leader_api"], "/v1/admin/membership"), json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_learner_catches_up_from_a_snapshot_older_than_the_leader(factory):
    # Snapshots every 200 entries. n4 joins after the first snapshot and becomes the
    # leader; its snapshot (index ~200) therefore lists the members of that time, without
    # n4. A new learner n5 installs that snapshot, restores the address map from it,
    # forgets n4, and then drops n4's messages and connections ("unknown peer"): its
    # acknowledgement never reaches n4, which keeps n5 in snapshot state at match 0.
    c = factory.up(3, allow_fault_injection=True, snapshot_entries=200, keep_entries=20)
    http = http_client(timeout=5.0)
    leader = wait_leader(c)
    for i in range(300):
        r = http.put(url(leader["leader_api"], f"/v1/kv/k{i % 7}"), json={"value": str(i)})
        assert r.status_code == 200, r.text
    n4 = c.add_node("n4", base_port=factory.base_port(c) + 10)
    _change(http, leader, {"action": "add_learner", "id": "n4", "peer_address": n4.peer_address,
                           "api_address": n4.api_address})  # fmt: skip
    wait_until(
        lambda: (
            (find_leader(c) or {}).get("progress", {}).get("n4", {}).get("state") == "replicate"
        ),
        15,
        "n4 replicating",
    )
    _change(http, wait_leader(c), {"action": "promote", "id": "n4"})
    r = http.post(
        url(wait_leader(c)["leader_api"], "/v1/admin/transfer-leadership"), json={"target": "n4"}
    )
    assert r.status_code == 200 and r.json()["leader"] == "n4", r.text
    n5 = c.add_node("n5", base_port=factory.base_port(c) + 11)
    _change(http, wait_leader(c), {"action": "add_learner", "id": "n5",
            "peer_address": n5.peer_address, "api_address": n5.api_address})  # fmt: skip

    def n5_caught_up() -> bool:
        st = find_leader(c) or {}
        p = st.get("progress", {}).get("n5", {})
        return p.get("state") == "replicate" and p.get("match", 0) >= st["commit_index"] - 2

    wait_until(n5_caught_up, 10, "n5 to catch up from n4's snapshot", interval=0.2)
