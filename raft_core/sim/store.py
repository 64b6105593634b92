"""raft-node's on-disk store, simulated with the same atomicity rules.

``DiskReplica`` (raft_core/diskstate.py; docs/design.md, "The on-disk state machine")
commits each applied batch in one transaction without syncing it, syncs before every
snapshot, and on restart resumes from whatever it holds, replaying the log over it
without applying an entry twice. What a crash may leave is therefore: the state as of
the latest sync, plus any prefix of the batches committed since (the page cache may
have written some of them). ``SimStore`` keeps exactly that, as ``Replica`` images,
and a crash keeps a seeded prefix; the campaign runs a share of its runs with it, so
its checkers see whether a store that lost unsynced batches ever loses an
acknowledged write or diverges.
"""

from __future__ import annotations

import random
from typing import Any

from ..kv import KVStore
from ..statemachine import ApplyResult, Replica
from ..types import Entry


class SimStore:
    """What survives on the simulated disk: the synced image and the committed
    batches after it (oldest first)."""

    def __init__(self, rng: random.Random) -> None:
        # A stream of its own: what a crash keeps draws nothing from the node's
        # stream, so runs keep the trajectory their seed gave them.
        self.rng = rng
        self.synced: bytes | None = None
        self.unsynced: list[bytes] = []
        self.batches_lost = 0

    def open(self) -> StoredReplica:
        """The store as a restarted process finds it."""
        r = StoredReplica(self)
        image = self.unsynced[-1] if self.unsynced else self.synced
        if image is not None:
            Replica.restore(r, image)
            r._committed = r.applied_index
        return r

    def crash(self) -> None:
        """Unsynced batches survive only as a prefix, of a seeded length."""
        keep = self.rng.randint(0, len(self.unsynced))
        self.batches_lost += len(self.unsynced) - keep
        del self.unsynced[keep:]


class StoredReplica(Replica):
    """A ``Replica`` whose state lives in a ``SimStore``: DiskReplica's contract."""

    def __init__(self, store: SimStore) -> None:
        super().__init__(KVStore())
        self.store = store
        self._committed = 0

    def apply(self, entry: Entry) -> ApplyResult:
        if entry.index <= self.applied_index:
            return ApplyResult(entry.index, entry.term)  # already in the store
        return super().apply(entry)

    def commit(self) -> None:
        if self.applied_index != self._committed:
            self.store.unsynced.append(self.snapshot())
            self._committed = self.applied_index

    def sync(self) -> None:
        """Everything committed is durable (before a snapshot lets the log go)."""
        self.store.synced = self.snapshot()
        self.store.unsynced.clear()

    def restore(self, data: bytes) -> Any:
        extra = super().restore(data)
        self._committed = self.applied_index
        self.sync()  # the store file is swapped and its directory synced
        return extra
