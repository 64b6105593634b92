"""The Ready loop, written once: what ``raft-node`` runs is what the simulator runs.

A ``Driver`` turns ``RawNode`` Ready batches into effects through narrow interfaces,
and keeps the bookkeeping every host needs (proposals waiting for their entry, reads
waiting for their ReadIndex round) so that no host re-implements it:

* ``Storage``: persists a Ready batch and reports completion, at once or later (the
  node server fsyncs on the loop or a disk thread; the simulator after a seeded
  latency, or never if the node crashes meanwhile);
* ``Transport``: sends messages;
* ``ReplicatedState``: applies committed entries and restores snapshots (``Replica``);
* ``call_soon``: runs the next pass of the loop "soon" (asyncio's ``call_soon``);
  None runs it at once (the simulator, whose virtual clock only moves between
  events);
* ``DriverHooks``: what the host does around the loop (metrics, invariant checks,
  member addresses, answering clients, taking snapshots).

Per batch, in this order (``rawnode.py`` states the contract):

1. proposals queued since the last pass are proposed as one batch (group commit),
   and queued reads start one ReadIndex round together;
2. a leader's appends, heartbeats and snapshot chunks are sent before its own write
   completes [10.2.1]; everything else waits for the write;
3. the batch is persisted (not at all when only the commit index moved);
4. the other messages are sent (votes and acknowledgements promise what was just
   persisted), a snapshot is restored (and the proposals it covers get an unknown
   outcome), committed entries are applied and their proposals answered (a proposal
   whose entry was replaced by another term's answers as lost), read states queue
   until the applied index reaches them, dropped and expired reads fail;
5. ``advance``, then reads whose index is applied are served, configuration changes
   and leadership transfers that finished are answered, and the next pass runs.

Configuration changes (``submit_conf_change``) get the answers writes get (REFUSED,
REPLACED, UNKNOWN, SHUTDOWN) and succeed once their configuration is in force: for a
voter change, once the joint configuration it entered has been left too (the
cluster is then in its new steady state). A leadership transfer
(``transfer_leadership``) succeeds once another node leads, and fails as ABORTED when
the engine gives up on it (the target did not take over within an election
timeout). Hosts call these instead of the engine's ``propose_conf_change`` and
``transfer_leadership``, so no host re-implements the commit check.

A failed write is fatal: the driver stops and the host is told (the on-disk state is
unknown; recovery on restart decides).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from .confchange import ConfChange
from .rawnode import RawNode, Ready, sendable_before_persist
from .statemachine import ApplyResult
from .types import ConfState, DropCode, Entry, Message, NodeId, ProposalDropped, Snapshot

Token = TypeVar("Token")

# Without a scheduler, passes run in a loop until nothing is ready; an engine that
# never stops producing Ready batches is a livelock, reported rather than spun.
MAX_PASSES_PER_KICK = 10_000


class Livelock(RuntimeError):
    """The engine kept producing Ready batches without any new input."""


class Storage(Protocol):
    def write(self, rd: Ready, done: Callable[[BaseException | None], None]) -> None:
        """Persist ``rd.snapshot``, ``rd.entries`` and ``rd.hard_state`` (synced when
        ``rd.must_sync``); then call ``done`` once, now or later, with the error if
        the write failed. A crashed process never calls it."""


class Transport(Protocol):
    def send(self, messages: list[Message]) -> None: ...


class ReplicatedState(Protocol):
    @property
    def applied_index(self) -> int: ...

    def apply(self, entry: Entry) -> ApplyResult: ...

    def restore(self, data: bytes) -> Any: ...


class FailureCode(Enum):
    """Why a proposal or read the driver accepted did not succeed."""

    REFUSED = "refused"  # the engine refused it: see ``Failure.drop``; not executed
    REPLACED = "replaced"  # its entry was overwritten by a new leader: not executed
    UNKNOWN = "unknown"  # a snapshot skipped its entry: it may or may not have committed
    LEADERSHIP_LOST = "leadership_lost"  # a read whose leader stepped down
    TIMED_OUT = "timed_out"  # a follower's read the leader did not answer in time
    SHUTDOWN = "shutdown"  # the node stopped (storage failure or shutdown)
    ABORTED = "aborted"  # a leadership transfer the engine gave up on


@dataclass(frozen=True, slots=True)
class Failure:
    code: FailureCode
    reason: str
    drop: DropCode | None = None  # set when code is REFUSED
    leader: NodeId | None = None  # who to ask instead, when known

    @property
    def not_leader(self) -> bool:
        return self.code is FailureCode.LEADERSHIP_LOST or self.drop is DropCode.NOT_LEADER

    @property
    def indeterminate(self) -> bool:
        """Whether the request may still take effect."""
        return self.code in (FailureCode.UNKNOWN, FailureCode.SHUTDOWN)


class DriverHooks(Generic[Token]):
    """What the host does around the loop; every method may be left as is."""

    def sent_early(self, rd: Ready) -> None:
        """What may leave before the write has left; the write has not started."""

    def persisted(self, rd: Ready) -> None:
        """``rd`` was written; its messages have not left yet."""

    def snapshot_restored(self, snapshot: Snapshot, extra: Any) -> None:
        """The state machine was replaced by ``snapshot`` (``extra``: what the
        snapshot carried beside the state machine)."""

    def applied(self, entry: Entry, result: ApplyResult) -> None:
        """``entry`` was applied (before its proposal, if any, is answered)."""

    def advanced(self, rd: Ready, confs: list[ConfState]) -> None:
        """``rd`` was acknowledged; ``confs`` took effect. The host's chance to react
        to a new leader, take a snapshot, wake waiters."""

    def storage_failed(self, error: BaseException) -> None:
        """A write failed: the driver has stopped."""

    def write_done(self, token: Token, index: int, term: int, result: ApplyResult) -> None: ...

    def write_failed(self, token: Token, failure: Failure) -> None: ...

    def read_ready(self, token: Token, applied_index: int) -> None:
        """A linearizable read may be served now, from the state as of now."""

    def read_failed(self, token: Token, failure: Failure) -> None: ...

    def conf_change_done(self, token: Token, index: int, conf: ConfState) -> None:
        """The change at ``index`` is in force, and ``conf`` is not joint."""

    def conf_change_failed(self, token: Token, failure: Failure) -> None: ...

    def transfer_done(self, token: Token, leader: NodeId, term: int) -> None:
        """Another node, ``leader``, leads now (usually the target)."""

    def transfer_failed(self, token: Token, failure: Failure) -> None: ...


@dataclass(slots=True)
class _Pending(Generic[Token]):
    term: int
    token: Token
    conf_change: bool = False


class Driver(Generic[Token]):
    def __init__(
        self,
        raw: RawNode,
        *,
        storage: Storage,
        transport: Transport,
        state: ReplicatedState,
        call_soon: Callable[[Callable[[], None]], object] | None,
        hooks: DriverHooks[Token],
        incarnation: str | None = None,
    ) -> None:
        """``incarnation`` tells this process's read contexts from those of earlier
        runs of the same node (a late answer to a read of a previous process must not
        serve a new one); random unless given (the simulator gives its own, to stay
        deterministic)."""
        self.raw = raw
        self._storage = storage
        self._transport = transport
        self._state = state
        self._call_soon = call_soon
        self._hooks = hooks
        self._scheduled = False
        self._looping = False  # without a scheduler: a loop of passes is running
        self._again = False
        # From ready() until the batch is advanced: no other pass may start.
        self._busy = False
        self._stopped = False
        self._queue: list[tuple[bytes, Token]] = []
        self._pending: dict[int, _Pending[Token]] = {}
        self._read_queue: list[Token] = []
        self._read_batches: dict[bytes, list[Token]] = {}
        self._ready_reads: list[tuple[int, list[Token]]] = []
        # Configuration changes applied while the configuration is joint: answered
        # once it is left.
        self._joint_waiters: list[tuple[int, Token]] = []
        self._transfers: list[tuple[NodeId, Token]] = []
        self._read_ids = 0
        self._read_prefix = f"{raw.id}:{incarnation or secrets.token_hex(8)}:"

    # -- inputs -------------------------------------------------------------------

    def kick(self) -> None:
        """Something may have changed: run a pass soon."""
        if self._scheduled or self._stopped:
            return
        if self._call_soon is not None:
            self._scheduled = True
            self._call_soon(self._pass)
        elif self._looping:
            self._again = True  # the loop below runs another pass
        else:
            self._run_passes()

    def _run_passes(self) -> None:
        self._looping = True
        try:
            for _ in range(MAX_PASSES_PER_KICK):
                self._again = False
                self._pass()
                if not self._again or self._stopped:
                    return
            raise Livelock(
                f"{self.raw.id}: {MAX_PASSES_PER_KICK} Ready batches in a row without new input"
            )
        finally:
            self._looping = False

    def submit(self, data: bytes, token: Token) -> None:
        """Propose ``data`` at the next pass; ``token`` is answered through the hooks."""
        self._queue.append((data, token))
        self.kick()

    def read(self, token: Token) -> None:
        """A linearizable read (ReadIndex, through the leader when this node is a
        follower or learner); reads queued together share one round."""
        self._read_queue.append(token)
        self.kick()

    def submit_conf_change(self, cc: ConfChange, token: Token) -> None:
        """Propose ``cc`` now; ``token`` is answered through ``conf_change_done`` or
        ``conf_change_failed``. The engine takes one change at a time: a second one
        while the first is unapplied (or joint) is REFUSED at once."""
        try:
            index, term = self.raw.propose_conf_change(cc)
        except ProposalDropped as e:
            self._hooks.conf_change_failed(token, _refused(e))
            return
        self._pending[index] = _Pending(term, token, conf_change=True)
        self.kick()

    def transfer_leadership(self, target: NodeId, token: Token) -> None:
        """Hand leadership to ``target`` (a voter); ``token`` is answered through
        ``transfer_done`` or ``transfer_failed``."""
        raw = self.raw
        if target == raw.id and raw.is_leader:
            self._hooks.transfer_done(token, raw.id, raw.term)
            return
        try:
            raw.transfer_leadership(target)
        except ProposalDropped as e:
            self._hooks.transfer_failed(token, _refused(e))
            return
        self._transfers.append((target, token))
        self.kick()

    def pending_count(self) -> int:
        return len(self._queue) + len(self._pending)

    def stop(self, failure: Failure | None = None) -> None:
        """No more passes. With ``failure``, every waiting request gets it; without,
        they are forgotten (a crashed process answers nobody)."""
        self._stopped = True
        if failure is None:
            return
        queued, self._queue = self._queue, []
        pending, self._pending = self._pending, {}
        for _, token in queued:
            self._hooks.write_failed(token, failure)
        for p in pending.values():
            self._fail_pending(p, failure)
        joint, self._joint_waiters = self._joint_waiters, []
        for _, token in joint:
            self._hooks.conf_change_failed(token, failure)
        transfers, self._transfers = self._transfers, []
        for _, token in transfers:
            self._hooks.transfer_failed(token, failure)
        reads = [*self._read_queue, *(t for b in self._read_batches.values() for t in b)]
        reads += [t for _, b in self._ready_reads for t in b]
        self._read_queue, self._read_batches, self._ready_reads = [], {}, []
        for token in reads:
            self._hooks.read_failed(token, failure)

    # -- the loop -------------------------------------------------------------------

    def _pass(self) -> None:
        self._scheduled = False
        if self._stopped:
            return
        if self._busy:
            # The batch in progress kicks again when it is done; what needs no write
            # leaves now (heartbeats and their answers: see take_early_messages).
            early = self.raw.take_early_messages()
            if early:
                self._transport.send(early)
            return
        raw = self.raw
        if self._queue:
            self._propose_queued()
        if self._read_queue:
            self._start_reads()
        if self._transfers:
            # Before has_ready: an aborted transfer changes nothing a Ready carries.
            self._check_transfers()
        if not raw.has_ready():
            return
        self._busy = True
        rd = raw.ready()
        if rd.messages:
            early, later = [], []
            for m in rd.messages:
                (early if sendable_before_persist(m) else later).append(m)
            if early:
                self._transport.send(early)
                rd.messages = later
                self._hooks.sent_early(rd)
        if rd.needs_write():
            self._storage.write(rd, lambda error: self._persisted(rd, error))
        else:
            # Only the commit index moved: it is written with the next batch.
            self._persisted(rd, None)

    def _persisted(self, rd: Ready, error: BaseException | None) -> None:
        if self._stopped:
            return
        if error is not None:
            self._stopped = True
            self._hooks.storage_failed(error)
            return
        hooks = self._hooks
        if rd.needs_write():
            hooks.persisted(rd)
        if rd.messages:
            self._transport.send(rd.messages)
        if rd.snapshot is not None:
            snap = rd.snapshot
            extra = self._state.restore(snap.data) if snap.data else None
            hooks.snapshot_restored(snap, extra)
            self._fail_pending_through(snap.meta.index)
        for e in rd.committed_entries:
            result = self._state.apply(e)
            hooks.applied(e, result)
            waiting = self._pending.pop(e.index, None) if self._pending else None
            if waiting is None:
                continue
            if waiting.term != e.term:
                self._fail_pending(waiting, _REPLACED)
            elif waiting.conf_change:
                # In force only after advance(); answered there.
                self._joint_waiters.append((e.index, waiting.token))
            else:
                hooks.write_done(waiting.token, e.index, e.term, result)
        for rs in rd.read_states:
            self._ready_reads.append((rs.index, self._read_batches.pop(rs.context, [])))
        if rd.dropped_reads:
            lost = Failure(
                FailureCode.LEADERSHIP_LOST,
                "leadership changed during the read",
                leader=self.raw.leader,
            )
            self._fail_reads(rd.dropped_reads, lost)
        if rd.expired_reads:
            late = Failure(
                FailureCode.TIMED_OUT,
                "the leader did not confirm the read in time; retry",
                leader=self.raw.leader,
            )
            self._fail_reads(rd.expired_reads, late)
        confs = self.raw.advance(rd)
        self._busy = False
        if self._ready_reads:
            self._serve_reads()
        hooks.advanced(rd, confs)
        if self._joint_waiters and not self.raw.conf.joint:
            self._finish_conf_changes()
        self.kick()

    # -- proposals and reads ----------------------------------------------------------

    def _propose_queued(self) -> None:
        batch, self._queue = self._queue, []
        try:
            first, term = self.raw.propose_batch([data for data, _ in batch])
        except ProposalDropped as e:
            failure = _refused(e)
            for _, token in batch:
                self._hooks.write_failed(token, failure)
            return
        for i, (_, token) in enumerate(batch):
            self._pending[first + i] = _Pending(term, token)

    def _start_reads(self) -> None:
        batch, self._read_queue = self._read_queue, []
        self._read_ids += 1
        ctx = f"{self._read_prefix}{self._read_ids}".encode()
        try:
            self.raw.read_index(ctx)
        except ProposalDropped as e:
            failure = _refused(e)
            for token in batch:
                self._hooks.read_failed(token, failure)
            return
        self._read_batches[ctx] = batch

    def _fail_reads(self, contexts: list[bytes], failure: Failure) -> None:
        for ctx in contexts:
            for token in self._read_batches.pop(ctx, []):
                self._hooks.read_failed(token, failure)

    def _serve_reads(self) -> None:
        applied = self._state.applied_index
        still = []
        for index, tokens in self._ready_reads:
            if index <= applied:
                for token in tokens:
                    self._hooks.read_ready(token, applied)
            else:
                still.append((index, tokens))
        self._ready_reads = still

    def _fail_pending_through(self, index: int) -> None:
        """A snapshot install skipped these entries: their fate is unknown here."""
        unknown = Failure(FailureCode.UNKNOWN, "outcome unknown: this node installed a snapshot")
        for i in sorted(i for i in self._pending if i <= index):
            self._fail_pending(self._pending.pop(i), unknown)

    def _fail_pending(self, p: _Pending[Token], failure: Failure) -> None:
        if p.conf_change:
            self._hooks.conf_change_failed(p.token, failure)
        else:
            self._hooks.write_failed(p.token, failure)

    def _finish_conf_changes(self) -> None:
        conf = self.raw.conf
        done, self._joint_waiters = self._joint_waiters, []
        for index, token in done:
            self._hooks.conf_change_done(token, index, conf)

    def _check_transfers(self) -> None:
        raw = self.raw
        lead = raw.leader
        if lead is not None and lead != raw.id:
            transfers, self._transfers = self._transfers, []
            for _, token in transfers:
                self._hooks.transfer_done(token, lead, raw.term)
        elif raw.is_leader and raw.transferring_to is None:
            transfers, self._transfers = self._transfers, []
            for target, token in transfers:
                aborted = Failure(
                    FailureCode.ABORTED,
                    f"leadership did not move to {target}: the engine aborted the transfer "
                    f"after an election timeout (is {target} reachable and caught up?)",
                )
                self._hooks.transfer_failed(token, aborted)
        # Otherwise an election is under way (or the transfer is): wait for it.


_REPLACED = Failure(
    FailureCode.REPLACED, "the entry was replaced by a new leader's log; it did not commit"
)


def _refused(e: ProposalDropped) -> Failure:
    return Failure(FailureCode.REFUSED, e.reason, e.code, e.leader)


__all__ = [
    "Driver",
    "DriverHooks",
    "Failure",
    "FailureCode",
    "Livelock",
    "ReplicatedState",
    "Storage",
    "Transport",
]
