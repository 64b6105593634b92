"""Protocol bugs that once got past every test but one, ready to plant again.

Each ``plant_*`` puts one bug back through ``setattr`` (``monkeypatch.setattr`` in a
test, so it is undone afterwards). The tests in test_campaign_teeth.py plant each one
and check that the simulation campaign finds it by itself, with the right reason; the
seed ranges measured with ``python tests/planted.py BUG START COUNT`` are in
docs/design.md ("The campaign's targeted actions").
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from raft_core import quorum, rawnode
from raft_core.driver import Driver
from raft_core.log import RaftLog
from raft_core.raft import Raft, Role
from raft_core.rawnode import RawNode
from raft_core.types import MessageType

Setter = Callable[[Any, str, Any], None]


class _ApplyFirst:
    """Storage and state as seen by a driver that applies committed entries in the
    pass that produced them, before the write of that pass (bug 1)."""

    def __init__(self, storage: Any, state: Any, hooks: Any) -> None:
        self.storage, self.state, self.hooks = storage, state, hooks
        self.early: dict[int, Any] = {}  # index -> result of an entry applied early

    # Storage
    def write(self, rd: Any, done: Callable[[BaseException | None], None]) -> None:
        for e in rd.committed_entries:
            if e.index == self.state.applied_index + 1:
                self.early[e.index] = result = self.state.apply(e)
                self.hooks.applied(e, result)
        self.storage.write(rd, done)

    # ReplicatedState: the driver applies the same entries again after the write.
    @property
    def applied_index(self) -> int:
        return self.state.applied_index

    def apply(self, entry: Any) -> Any:
        early = self.early.pop(entry.index, None)
        return early if early is not None else self.state.apply(entry)

    def restore(self, data: bytes) -> Any:
        self.early.clear()
        return self.state.restore(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.state, name)


def plant_apply_before_persist(setattr_: Setter) -> None:
    """Bug 1: committed entries are applied before ``storage.write`` of their Ready."""
    real_init = Driver.__init__

    def init(self: Driver, raw: Any, *, storage: Any, state: Any, hooks: Any, **kw: Any) -> None:
        first = _ApplyFirst(storage, state, hooks)
        real_init(self, raw, storage=first, state=first, hooks=hooks, **kw)

    setattr_(Driver, "__init__", init)


def plant_figure8_commit_by_counting(setattr_: Setter) -> None:
    """Bug 2: a leader commits an entry of an older term by counting its replicas."""

    def maybe_commit(self: RaftLog, index: int, term: int) -> bool:
        if index > self.committed:
            self.committed = index
            return True
        return False

    setattr_(RaftLog, "maybe_commit", maybe_commit)


def plant_joint_incoming_majority_only(setattr_: Setter) -> None:
    """Bug 3: in a joint configuration, commit counts the incoming majority only."""
    setattr_(quorum, "joint_committed", lambda conf, match: quorum.majority_committed(
        conf.voters, match))  # fmt: skip


def plant_forced_election_on_close(setattr_: Setter) -> None:
    """Bug 4: a follower that sees its leader's connection close forces an election
    (no pre-vote, the term raised, the others' leases bypassed)."""

    def report_leader_lost(self: Raft, node: str) -> None:
        if self.role is not Role.LEADER and node == self.lead and self.promotable():
            self._campaign(MessageType.VOTE, transfer=True)

    setattr_(Raft, "report_leader_lost", report_leader_lost)


def plant_heartbeats_wait_for_the_write(setattr_: Setter) -> None:
    """Bug 5: while a write is in progress nothing leaves, heartbeats included (the
    node fell over with a 40 MB state: a leader's slow fsync cost it its term)."""
    setattr_(RawNode, "take_early_messages", lambda self: [])


def plant_heartbeat_answers_wait_for_the_write(setattr_: Setter) -> None:
    """Bug 6: a follower answers heartbeats only after its write: a leader whose
    quorum needs a follower with a slow disk steps down (check-quorum)."""
    early = rawnode._EARLY_MESSAGES - {MessageType.HEARTBEAT_RESP}
    setattr_(rawnode, "_EARLY_MESSAGES", early)


PLANTS: dict[str, Callable[[Setter], None]] = {
    "apply_before_persist": plant_apply_before_persist,
    "figure8": plant_figure8_commit_by_counting,
    "joint_incoming_only": plant_joint_incoming_majority_only,
    "forced_election_on_close": plant_forced_election_on_close,
    "heartbeats_wait": plant_heartbeats_wait_for_the_write,
    "heartbeat_answers_wait": plant_heartbeat_answers_wait_for_the_write,
}


def main(argv: list[str]) -> int:
    """``python tests/planted.py BUG START COUNT [JOBS]``: a campaign with BUG planted;
    prints the summary line, then each failure's seed, kind and reason."""
    import json

    from raft_core.sim.campaign import run_campaign

    bug, start, count = argv[0], int(argv[1]), int(argv[2])
    jobs = int(argv[3]) if len(argv) > 3 else 2
    PLANTS[bug](setattr)
    summary = run_campaign(list(range(start, start + count)), jobs=jobs)
    failures = summary.pop("failures")
    print(json.dumps({"bug": bug, "start": start, "failed": len(failures), **summary}))
    for f in failures:
        print(f"{f['seed']} {f['kind']}: {f['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
