"""kill -9 of a real raft-node at each crash point of its on-disk store.

One node of three is started with ``RAFT_NODE_CRASH_AT`` (armed by
--allow-fault-injection) and dies by SIGKILL at that point: in the middle of applying
a batch, with a checkpoint's store synced but not recorded, right after a snapshot is
saved, while writing an image (an operator's: the store's own snapshots are
checkpoints), and at each step of installing a snapshot received from the leader
(saved, staged beside the store, swapped in). It is restarted without the crash
point; once writes stop and every node has applied the same index, the three digests
(applied index, chain, state hash) are equal, and every write acknowledged to the
client is readable on the restarted node.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import httpx
import pytest
from node_procs import NodeProc, NodeProcs, wait_for_leader
from testkit import wait_until

from raft_core.diskstate import CRASH_ENV

pytestmark = pytest.mark.processes

FLAGS = ["--allow-fault-injection", "--snapshot-entries", "60", "--keep-entries", "5"]


@pytest.fixture
def procs(tmp_path: Path):
    p = NodeProcs(tmp_path)
    yield p
    p.close()


def _start(procs: NodeProcs, nid: str, crash_at: str | None) -> NodeProc:
    env_before = os.environ.get(CRASH_ENV)
    if crash_at:
        os.environ[CRASH_ENV] = crash_at
    else:
        os.environ.pop(CRASH_ENV, None)
    try:
        return procs.start(nid)
    finally:
        if env_before is None:
            os.environ.pop(CRASH_ENV, None)
        else:
            os.environ[CRASH_ENV] = env_before


def _put_many(http: httpx.Client, leader: NodeProc, tag: str, n: int, acked: dict) -> None:
    for i in range(n):
        key = f"{tag}-{i}"
        r = http.put(f"http://{leader.api}/v1/kv/{key}", json={"value": f"v{i}"})
        if r.status_code == 200:
            acked[key] = f"v{i}"


def _status(http: httpx.Client, n: NodeProc) -> dict | None:
    try:
        r = http.get(f"http://{n.api}/v1/status")
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


@pytest.mark.parametrize(
    ("crash_at", "late"),
    [
        ("store-commit:40", False),  # during apply: a batch half written to the store
        ("checkpoint-synced", False),  # the store synced, the checkpoint not yet saved
        ("snapshot-saved", False),  # the snapshot saved, the log not yet compacted
        ("snapshot-image", False),  # while an image is being written
        ("install-saved", True),  # a received snapshot saved, not yet staged
        ("install-staged", True),  # staged beside the store, not yet swapped in
        ("install-swapped", True),  # swapped in, the directory not yet synced
    ],
)
def test_a_node_killed_at_a_store_crash_point_recovers_and_agrees(
    procs: NodeProcs, crash_at: str, late: bool
) -> None:
    nodes = procs.define(["n1", "n2", "n3"], lambda _nid: FLAGS)
    victim = nodes["n3"]
    with httpx.Client(timeout=5.0) as http:
        procs.start("n1")
        procs.start("n2")
        # n3 starts once n1 or n2 leads: the victim must be a follower, whose death
        # the cluster rides out.
        lead = wait_for_leader(http, "http", [nodes["n1"], nodes["n2"]])
        leader = nodes[lead["id"]]
        acked: dict[str, str] = {}
        if late:
            # Enough for the leader to snapshot and compact past n3's empty log: n3
            # then catches up from a snapshot, and dies installing it.
            _put_many(http, leader, "before", 150, acked)
            wait_until(
                lambda: (_status(http, leader) or {}).get("first_index", 0) > 2,
                20,
                "the leader to compact its log",
            )
        _start(procs, "n3", crash_at)
        assert victim.proc is not None
        wait_until(
            lambda: victim.proc.poll() is not None or _status(http, victim), 30, "n3 to serve"
        )
        # Write until n3 reaches its crash point (a loaded machine may take a while).
        rounds = 0
        while victim.proc.poll() is None:
            assert rounds < 200, f"n3 never reached {crash_at}"
            _put_many(http, leader, f"round{rounds}", 10, acked)
            if crash_at == "snapshot-image" and rounds % 3 == 2:
                with contextlib.suppress(httpx.HTTPError):  # it dies answering
                    http.post(f"http://{victim.api}/v1/admin/snapshot")
            rounds += 1
        victim.proc.wait(10)
        assert victim.proc.returncode == -signal.SIGKILL, victim.log_text()[-2000:]
        _put_many(http, leader, "while-down", 30, acked)
        _start(procs, "n3", None)
        _put_many(http, leader, "after", 30, acked)

        def converged() -> list[dict] | None:
            sts = [_status(http, n) for n in nodes.values()]
            if any(s is None for s in sts):
                return None
            if len({s["applied_index"] for s in sts}) != 1:  # type: ignore[index]
                return None
            return [http.get(f"http://{n.api}/v1/admin/digest").json() for n in nodes.values()]

        digests = wait_until(converged, 30, "every node to apply the same index")
        assert digests[0] == digests[1] == digests[2], digests
        for key, value in acked.items():
            r = http.get(f"http://{victim.api}/v1/kv/{key}", params={"consistency": "stale"})
            assert r.json()["value"] == value, key
        assert len(acked) >= 60
