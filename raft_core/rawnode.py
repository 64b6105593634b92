"""The driver's interface to the protocol: inputs in, Ready batches out.

The contract, per Ready batch ``rd`` (the same one etcd's RawNode has):

1. send the messages for which ``sendable_before_persist(m)`` holds: what a leader
   sends (appends, heartbeats, snapshot chunks, TimeoutNow, the read index it
   confirmed for a follower) depends on nothing unpersisted, because a leader's term
   was persisted before it could win, and its own entries count toward commit only
   once persisted [10.2.1] (so a commit index, and a read index, is durable on a
   quorum). The first half is a rule of this module: a candidate's own vote is
   counted only in ``advance()`` of the Ready that carried its new term and vote, so
   no node (a single voter included) leads in a term that is not yet durable. A
   follower's READ_INDEX request promises nothing, so it leaves early too; a refused
   read waits (it may carry a term not yet persisted);
2. persist ``rd.snapshot`` (if any), ``rd.entries`` and ``rd.hard_state`` durably,
   with a single sync for the batch when ``rd.must_sync()``;
   ``rd.entries[0].index`` may be at or below the last persisted index: everything
   from there on is replaced; then send the other messages (votes and
   acknowledgements promise what was just persisted);
3. restore the state machine from ``rd.snapshot``, then apply
   ``rd.committed_entries`` in order (``rd.conf_changes`` holds the configuration
   changes among them, decoded once, for hosts that read their context); serve
   ``rd.read_states`` once the applied index reaches theirs; fail
   ``rd.dropped_reads`` (leadership or the term changed, or the leader refused a
   forwarded read) and ``rd.expired_reads`` (a forwarded read the leader did not
   answer in time);
4. call ``advance(rd)``. Configuration changes take effect there, and messages
   that waited for ``rd`` to be durable (a candidate's vote for itself) are stepped;
   a single voter therefore becomes leader in ``advance()``, and its no-op comes in
   the next Ready.

Inputs (``step``, ``tick``, proposals) may be given between ``ready()`` and
``advance()``; ``ready()`` must not be called again before ``advance()``. Reads a
leader starts between two ``ready()`` calls (its own and those followers forward)
share one heartbeat round, which goes out with the next Ready.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .confchange import ChangeOp, ConfChange, ConfChangeError
from .log import RaftLog
from .progress import ProgressState
from .raft import Raft, RaftConfig
from .status import NodeRole, ProgressStatus, RaftStatus
from .types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    ProposalDropped,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)

# Messages that assert nothing this node has yet to write: a leader's (its term is
# durable before it leads), a forwarded read, and a heartbeat's answer (it only
# echoes the leader's own term, and grants nothing).
_EARLY_MESSAGES = frozenset(
    {
        MessageType.APP,
        MessageType.HEARTBEAT,
        MessageType.HEARTBEAT_RESP,
        MessageType.SNAP,
        MessageType.TIMEOUT_NOW,
        MessageType.READ_INDEX,
    }
)


def sendable_before_persist(m: Message) -> bool:
    # A refused read waits: it may carry a term this node has not persisted yet.
    return m.type in _EARLY_MESSAGES or (m.type is MessageType.READ_INDEX_RESP and not m.reject)


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None
    soft_state: SoftState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    dropped_reads: list[bytes] = field(default_factory=list)
    expired_reads: list[bytes] = field(default_factory=list)
    # (index, change) for each decodable CONF_CHANGE entry among committed_entries:
    # decoded here once for advance() and the host. A tuple unless there are any, so
    # the common batch allocates nothing for it.
    conf_changes: list[tuple[int, ConfChange]] | tuple[()] = ()

    must_sync: bool = False

    def needs_write(self) -> bool:
        """Whether anything must reach the disk before this batch is acted on.

        A hard state that differs only in its commit index need not: a commit index
        lost in a crash is learned again from the leader, and entries are applied
        only after they are durable anyway. Such a batch is applied at once, and the
        new commit index is written with the next batch that writes anything.
        """
        return bool(self.entries) or self.snapshot is not None or self.must_sync


@dataclass(slots=True)
class PersistedState:
    """What a driver recovered from disk (or the bootstrap state of a new node)."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def bootstrap(cls, voters: list[NodeId], learners: list[NodeId] = ()) -> PersistedState:
        """A founding member of a new cluster.

        Its log starts with one committed entry, identical on every founding member,
        that adds all of them (as voters, or as learners). Being a log entry, it
        reaches members that join later like any other entry (or inside a snapshot).
        """
        ops = [(ChangeOp.ADD_VOTER, v) for v in sorted(voters)]
        cc = ConfChange(ops + [(ChangeOp.ADD_LEARNER, n) for n in sorted(learners)])
        founding = Entry(1, 1, EntryType.CONF_CHANGE, cc.encode())
        return cls(hard_state=HardState(1, None, 1), entries=[founding])

    @classmethod
    def joining(cls) -> PersistedState:
        """A node that will be added to an existing cluster: no configuration at all,
        so it never campaigns; it learns everything from the leader's snapshot."""
        return cls()


class RawNode:
    def __init__(
        self, config: RaftConfig, state: PersistedState, rng: random.Random | None = None
    ) -> None:
        raft_log = RaftLog(state.snapshot, state.entries, state.hard_state.commit)
        conf = state.snapshot.meta.conf if state.snapshot is not None else ConfState()
        self._raft = Raft(config, state.hard_state, raft_log, conf, rng or random.Random())
        # Conf changes between the snapshot and the commit index are re-applied as the
        # driver re-applies those entries; until then the snapshot's config holds.
        self._prev_hard = self._raft.hard_state()
        self._durable_hard = self._prev_hard  # what the driver last wrote
        self._prev_soft = SoftState(None, Role.FOLLOWER)
        self._in_flight: Ready | None = None
        # Taken from raft with each Ready, stepped back in by advance(): they depend on
        # that Ready's hard state being durable (a candidate's own vote).
        self._steps_on_advance: list[Message] = []

    # -- inputs --------------------------------------------------------------

    def tick(self) -> None:
        self._raft.tick()

    def step(self, m: Message) -> None:
        self._raft.step(m)

    def propose(self, payload: bytes) -> tuple[int, int]:
        return self._raft.propose([payload])

    def propose_batch(self, payloads: list[bytes]) -> tuple[int, int]:
        """Append several commands as consecutive entries; (first index, term)."""
        return self._raft.propose(payloads)

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        return self._raft.propose_conf_change(cc)

    def read_index(self, context: bytes) -> None:
        """A linearizable read: on the leader, or forwarded by a follower or learner
        to the leader it knows (NOT_LEADER when it knows none). ``context`` must be
        unique across the cluster and across restarts."""
        self._raft.read_index(context)

    def transfer_leadership(self, target: NodeId) -> None:
        self._raft.transfer_leadership(target)

    def campaign(self) -> None:
        self._raft.campaign()

    def report_unreachable(self, node: NodeId) -> None:
        self._raft.report_unreachable(node)

    def report_leader_lost(self, node: NodeId) -> None:
        """``node``'s connection closed: if it leads us, campaign within a few ticks."""
        self._raft.report_leader_lost(node)

    def compact(self, snapshot: Snapshot, keep: int) -> None:
        """The driver took ``snapshot`` of its state machine (at an applied index) and
        persisted it: compact the in-memory log, keeping ``keep`` entries before it."""
        self._raft.log.compact(snapshot, keep)

    # -- outputs -------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self._raft
        lg = r.log
        hs = self._prev_hard
        ss = self._prev_soft
        # Field by field: this runs on every input, so it builds no objects.
        return bool(
            r.msgs
            or r.steps_after_persist
            or r.read_states
            or r.dropped_reads
            or r.expired_reads
            or r.read_round_due
            or lg.pending_snapshot is not None
            or lg.stable < lg.last_index()
            or lg.committed > lg.applying
            or r.term != hs.term
            or r.vote != hs.vote
            or lg.committed != hs.commit
            or r.lead != ss.leader
            or r.role is not ss.role
        )

    def ready(self) -> Ready:
        if self._in_flight is not None:
            raise RuntimeError("ready() called again before advance()")
        r = self._raft
        lg = r.log
        r.flush_read_round()
        rd = Ready()
        rd.snapshot = lg.pending_snapshot
        rd.entries = lg.unstable_entries()
        hs = r.hard_state()
        durable = self._durable_hard
        # A new commit index alone need not be written at once: lost in a crash, it
        # is learned again from the leader. But entries are always written together
        # with the commit index current when they arrived. That keeps a node that
        # holds a configuration change in its log from restarting with a commit
        # index older than the change before it, which would let it campaign under
        # a configuration two steps old (etcd-io/etcd#7625, #11284).
        if hs != self._prev_hard or ((rd.entries or rd.snapshot) and hs != durable):
            rd.hard_state = hs
        rd.must_sync = (
            hs.term != durable.term
            or hs.vote != durable.vote
            or bool(rd.entries)
            or rd.snapshot is not None
        )
        ss = SoftState(r.lead, r.role)
        if ss != self._prev_soft:
            rd.soft_state = ss
        cfg = r.cfg
        rd.committed_entries = lg.next_committed(
            cfg.max_committed_bytes_per_ready, cfg.max_committed_entries_per_ready
        )
        if rd.committed_entries:
            lg.applying = rd.committed_entries[-1].index
            for e in rd.committed_entries:
                if e.type is EntryType.CONF_CHANGE:
                    self._decode_conf_entry(rd, e)
        rd.messages, r.msgs = r.msgs, []
        self._steps_on_advance, r.steps_after_persist = r.steps_after_persist, []
        rd.read_states, r.read_states = r.read_states, []
        rd.dropped_reads, r.dropped_reads = r.dropped_reads, []
        rd.expired_reads, r.expired_reads = r.expired_reads, []
        self._in_flight = rd
        return rd

    def take_early_messages(self) -> list[Message]:
        """The queued messages that may leave before any write, taken out of the next
        Ready: while a slow write holds the Ready in flight, the leader's heartbeats
        and a follower's answers to them must not wait for it, or a disk stall longer
        than an election timeout would cost the cluster its leader."""
        r = self._raft
        if not r.msgs:
            return []
        early = [m for m in r.msgs if sendable_before_persist(m)]
        if early:
            r.msgs = [m for m in r.msgs if not sendable_before_persist(m)]
        return early

    def advance(self, rd: Ready) -> list[ConfState]:
        """Acknowledge ``rd``; returns the configurations that took effect."""
        if rd is not self._in_flight:
            raise RuntimeError("advance() must be given the Ready last returned by ready()")
        self._in_flight = None
        r = self._raft
        lg = r.log
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
            if rd.needs_write():
                self._durable_hard = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.snapshot is not None and lg.pending_snapshot is rd.snapshot:
            lg.pending_snapshot = None
        if rd.entries:
            last = rd.entries[-1]
            lg.stable_to(last.index, last.term)
            r.persisted_to()
        applied_confs: list[ConfState] = []
        if rd.committed_entries:
            last_applied = rd.committed_entries[-1].index
            for index, cc in rd.conf_changes:
                # A snapshot installed while this batch was being applied already
                # holds the configuration as of its index: older changes are moot.
                if index > lg.offset:
                    conf = self._apply_conf_change(index, cc)
                    if conf is not None:
                        applied_confs.append(conf)
            if last_applied > lg.applied:
                lg.applied = last_applied
            if r.role is Role.LEADER:
                r.uncommitted_bytes = max(
                    0, r.uncommitted_bytes - sum(e.size() for e in rd.committed_entries)
                )
            try:
                r.maybe_auto_leave()
            except ProposalDropped as e:
                r.event("auto_leave_deferred", reason=e.reason)
        steps, self._steps_on_advance = self._steps_on_advance, []
        for m in steps:
            r.step(m)
        return applied_confs

    def _decode_conf_entry(self, rd: Ready, e: Entry) -> None:
        try:
            cc = ConfChange.decode(e.data)
        except ConfChangeError as err:
            self._conf_ignored(e.index, err)
            return
        if isinstance(rd.conf_changes, tuple):
            rd.conf_changes = []
        rd.conf_changes.append((e.index, cc))

    def _apply_conf_change(self, index: int, cc: ConfChange) -> ConfState | None:
        try:
            return self._raft.apply_conf_change(cc)
        except ConfChangeError as err:
            self._conf_ignored(index, err)
            return None

    def _conf_ignored(self, index: int, err: ConfChangeError) -> None:
        # Every node reaches the same verdict on the same committed entry, so
        # skipping it keeps replicas identical.
        self._raft.event("conf_change_ignored", index=index, reason=str(err))

    # -- typed queries (the engine itself stays private to RawNode) --------------

    @property
    def id(self) -> NodeId:
        return self._raft.id

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def is_leader(self) -> bool:
        return self._raft.role is Role.LEADER

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def leader(self) -> NodeId | None:
        return self._raft.lead

    @property
    def conf(self) -> ConfState:
        return self._raft.conf

    @property
    def commit_index(self) -> int:
        return self._raft.log.committed

    @property
    def applied_index(self) -> int:
        return self._raft.log.applied

    @property
    def transferring_to(self) -> NodeId | None:
        """The target of the leadership transfer under way, if any."""
        return self._raft.lead_transferee

    @property
    def pending_conf_index(self) -> int:
        return self._raft.pending_conf_index

    def promotable(self) -> bool:
        """Whether this node is a voter (so it may campaign)."""
        return self._raft.promotable()

    def first_index(self) -> int:
        return self._raft.log.first_index()

    def last_index(self) -> int:
        return self._raft.log.last_index()

    def log_term(self, index: int) -> int | None:
        """The term of the entry at ``index``; None if compacted away or not there."""
        return self._raft.log.term(index)

    def entry_at(self, index: int) -> Entry | None:
        lg = self._raft.log
        if index <= lg.offset or index > lg.last_index():
            return None
        return lg.entry(index)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo`` to ``hi - 1``, all within ``first_index()..last_index()``."""
        return self._raft.log.slice(lo, hi)

    def progress(self, node: NodeId) -> ProgressStatus | None:
        """A leader's view of ``node``'s replication; None elsewhere."""
        r = self._raft
        pr = r.prs.get(node)
        if r.role is not Role.LEADER or pr is None:
            return None
        me = node == r.id
        return ProgressStatus(
            match=pr.match,
            next=pr.next,
            state=pr.state.value,
            learner=pr.is_learner,
            recent_active=pr.recent_active or me,
            ticks_since_heard=0
            if me
            else (r.ticks - pr.last_heard_tick if pr.last_heard_tick >= 0 else None),
            inflight=len(pr.inflights),
            snapshot_bytes_acked=pr.transfer.acked
            if pr.state is ProgressState.SNAPSHOT and pr.transfer
            else None,
        )

    def set_event_hook(self, hook: Callable[[str, dict], None] | None) -> None:
        """Receive the engine's notable events (election, became_leader, ...)."""
        self._raft.on_event = hook

    @property
    def event_hook(self) -> Callable[[str, dict], None] | None:
        return self._raft.on_event

    @property
    def raft_for_tests(self) -> Raft:
        """The engine itself, for white-box tests only; drivers use the queries above."""
        return self._raft

    def status(self) -> RaftStatus:
        r = self._raft
        lg = r.log
        role = NodeRole(r.role.label)
        if r.role is Role.FOLLOWER and r.is_learner():
            role = NodeRole.LEARNER
        progress = None
        if r.role is Role.LEADER:
            progress = {n: p for n in sorted(r.prs) if (p := self.progress(n)) is not None}
        return RaftStatus(
            id=r.id,
            role=role,
            term=r.term,
            vote=r.vote,
            leader=r.lead,
            commit_index=lg.committed,
            applied_index=lg.applied,
            last_index=lg.last_index(),
            last_term=lg.last_term(),
            first_index=lg.first_index(),
            snapshot_index=lg.snapshot.meta.index if lg.snapshot else 0,
            voters=tuple(sorted(r.conf.voters)),
            voters_outgoing=tuple(sorted(r.conf.voters_outgoing)),
            learners=tuple(sorted(r.conf.learners)),
            joint=r.conf.joint,
            transferring_to=r.lead_transferee,
            pending_conf_index=r.pending_conf_index,
            progress=progress,
        )
