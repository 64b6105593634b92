"""One status schema for the node and the manager (docs/design.md, "The node HTTP API").

The node serves ``NodeStatus.to_json()``; the manager's raft-node adapter reads it back
with ``NodeStatus.from_json``. These tests pin that the two are inverse on what a real
node serves, that the parser names the field a foreign document gets wrong, and that
the adapter turns such a document into an unreachable member that says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from testkit import started_single_node

from mcp_server.adapters.raft_node import _to_status
from raft_core.node import status as node_status
from raft_core.node.status import MemberAddress, NodeStatus, StatusFormatError
from raft_core.status import NodeRole, ProgressStatus, RaftStatus


def _served(tmp_path) -> NodeStatus:
    async def main() -> NodeStatus:
        node = await started_single_node(tmp_path)
        try:
            return node.status()
        finally:
            await node.stop()

    return asyncio.run(asyncio.wait_for(main(), 60))


def _synthetic() -> NodeStatus:
    pr = ProgressStatus(
        match=7,
        next=8,
        state="snapshot",
        learner=True,
        recent_active=False,
        ticks_since_heard=None,
        inflight=3,
        snapshot_bytes_acked=4096,
    )
    engine = RaftStatus(
        id="n1",
        role=NodeRole.LEADER,
        term=4,
        vote="n1",
        leader="n1",
        commit_index=9,
        applied_index=9,
        last_index=10,
        last_term=4,
        first_index=3,
        snapshot_index=2,
        voters=("n1", "n2"),
        voters_outgoing=("n1", "n3"),
        learners=("n4",),
        joint=True,
        transferring_to="n2",
        pending_conf_index=10,
        progress={"n1": dataclasses.replace(pr, state="replicate"), "n4": pr},
    )
    return NodeStatus(
        engine=engine,
        leader_api="127.0.0.1:1",
        fsync="always",
        members={"n1": MemberAddress("127.0.0.1:2", "127.0.0.1:1"), "n4": MemberAddress("p", None)},
        uptime_s=12.5,
        faults={"drop": ["n2"]},
        healthy=True,
        peer_auth="tls",
    )


def test_the_parser_knows_every_field_of_the_engine_status():
    engine = {f.name for f in dataclasses.fields(RaftStatus)}
    listed = set(node_status._ENGINE_SCALARS) | set(node_status._ENGINE_LISTS)
    assert listed | {"role", "progress"} == engine
    assert set(node_status._PROGRESS) == {f.name for f in dataclasses.fields(ProgressStatus)}


def test_what_a_real_node_serves_reads_back_as_the_same_status(tmp_path):
    st = _served(tmp_path)
    assert st.engine.progress, "a leader serves its progress"
    doc = json.loads(json.dumps(st.to_json()))  # as it travels
    back = NodeStatus.from_json(doc)
    assert back == st
    assert back.to_json() == doc


def test_every_field_survives_the_trip():
    st = _synthetic()
    assert NodeStatus.from_json(json.loads(json.dumps(st.to_json()))) == st


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("term"), "term is missing"),
        (lambda d: d.update(term=True), "term has the wrong type"),
        (lambda d: d.update(commit_index="9"), "commit_index has the wrong type"),
        (lambda d: d.update(role="boss"), "role 'boss' is not a role"),
        (lambda d: d.update(voters=["n1", 2]), "voters holds a non-string id"),
        (lambda d: d["progress"]["n4"].pop("match"), "progress.n4.match is missing"),
        (lambda d: d["members"].update(n9=[]), "members.n9 is not an object"),
        (lambda d: d.pop("peer_auth"), "peer_auth is missing"),
    ],
)
def test_a_foreign_document_is_refused_naming_the_field(change, message):
    doc = _synthetic().to_json()
    change(doc)
    with pytest.raises(StatusFormatError, match=message):
        NodeStatus.from_json(doc)


def test_the_adapter_reads_the_served_status_into_a_member_status():
    st = _synthetic()
    m = _to_status(st.to_json(), "127.0.0.1:1")
    assert m.reachable and m.error is None
    assert (m.id, m.role, m.term, m.leader, m.joint) == ("n1", "leader", 4, "n1", True)
    assert (m.commit_index, m.last_index, m.pending_conf_index) == (9, 10, 10)
    assert m.voters_outgoing == ["n1", "n3"] and m.learners == ["n4"]
    assert m.progress == st.engine.progress
    assert m.addresses == {"n1": "127.0.0.1:1", "n4": None}
    assert (m.peer_auth, m.faults) == ("tls", {"drop": ["n2"]})


def test_the_adapter_reports_an_unreadable_status_as_a_member_that_says_why():
    doc = _synthetic().to_json()
    del doc["peer_auth"]
    m = _to_status(doc, "127.0.0.1:1")
    assert not m.reachable and m.id == "n1"
    assert m.error is not None and "peer_auth is missing" in m.error and "same" in m.error
