"""The Raft protocol as a pure, deterministic state machine.

No sockets, clocks, threads or global randomness: time is ``tick()``, the network is
``step(message)`` in and ``msgs`` out, the disk is whatever the driver does with the
Ready batch (see ``rawnode.py``). A seeded ``random.Random`` picks election timeouts,
so a simulation is replayable from its seed.

Rules that bugs hide behind are named where they are enforced; the dissertation
section is given in brackets.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import quorum
from .confchange import ConfChange, ConfChangeError, apply_change
from .log import RaftLog
from .progress import Progress, ProgressState
from .readonly import ForwardedReads, ReadOnlyQueue
from .types import (
    ENTRY_OVERHEAD,
    TRANSFER_CONTEXT,
    ConfState,
    DropCode,
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
    SnapshotChunk,
    SnapshotMeta,
)

MT = MessageType


@dataclass(slots=True)
class RaftConfig:
    """Tunables, with the defaults a 3-5 node cluster on a LAN wants.

    Times are in ticks; the driver decides how long a tick is (the node server
    uses 50 ms, so the default election timeout is 0.5-1 s and heartbeats go out
    every 100 ms).
    """

    id: NodeId
    # Followers wait a random number of ticks in [election_tick, 2 * election_tick)
    # without hearing from a leader before starting an election.
    election_tick: int = 10
    # A leader sends heartbeats every heartbeat_tick ticks; must be << election_tick.
    heartbeat_tick: int = 2
    # Leaders that have not heard from a quorum within an election timeout step
    # down; followers that heard from a leader ignore vote requests (stickiness).
    check_quorum: bool = True
    # Candidates first ask whether they could win, without raising their term.
    pre_vote: bool = True
    # Flow control: bytes per AppendEntries, messages in flight per follower.
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0  # 0: unbounded
    # Proposals beyond this many bytes of uncommitted entries are refused.
    max_uncommitted_bytes: int = 64 << 20
    # At most this many committed entries, and bytes of them, are handed out per
    # Ready: the host applies a Ready's entries in one go on its loop, and a node
    # catching up (a restart, a learner after its snapshot) holds thousands. 1,024
    # entries of 1 KiB take raft-node's store about 25 ms; 16 MiB took 300 ms or more.
    max_committed_entries_per_ready: int = 1024
    max_committed_bytes_per_ready: int = 1 << 20
    # InstallSnapshot: chunk size and how many chunks may be unacknowledged.
    snapshot_chunk_bytes: int = 256 << 10
    snapshot_window: int = 4
    # True: a new commit index goes to followers at once, in an empty append (etcd's
    # way). False: it rides on the next append or heartbeat, and at the latest on
    # the leader's next tick; under light load that saves an empty append and its
    # acknowledgement per follower per write, at the cost of followers applying up
    # to a tick later. Safety does not depend on it: followers never need to know
    # the commit index for the leader to answer clients.
    broadcast_commit: bool = True
    # Where a follower keeps the chunks of a snapshot it receives (memory by default;
    # raft-node writes them to a file, so a large image never sits on the heap).
    snapshot_buffer: Callable[[SnapshotMeta], SnapshotBuffer] = field(
        default=lambda _meta: MemorySnapshotBuffer()
    )

    def validate(self) -> None:
        if not self.id:
            raise ValueError("node id must not be empty")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be positive")
        if self.snapshot_chunk_bytes <= 0 or self.snapshot_window <= 0:
            raise ValueError("snapshot chunk size and window must be positive")


class SnapshotBuffer(Protocol):
    """The bytes of a snapshot being received, appended chunk by chunk in order."""

    def __len__(self) -> int: ...

    def extend(self, data: bytes) -> None: ...

    def finish(self, total: int) -> bytes:
        """The whole image (its first ``total`` bytes): no chunk follows."""


class MemorySnapshotBuffer:
    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def extend(self, data: bytes) -> None:
        self._buf += data

    def finish(self, total: int) -> bytes:
        return bytes(self._buf[:total])


@dataclass(slots=True)
class IncomingSnapshot:
    """Chunks of a snapshot being received, kept aside until the last one arrives."""

    index: int
    term: int
    buffer: SnapshotBuffer


class Raft:
    def __init__(
        self,
        config: RaftConfig,
        hard_state: HardState,
        raft_log: RaftLog,
        conf: ConfState,
        rng: random.Random,
    ) -> None:
        config.validate()
        self.cfg = config
        self.id = config.id
        self.rng = rng
        self.log = raft_log
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.log.commit_to(min(hard_state.commit, self.log.last_index()))
        self.role = Role.FOLLOWER
        self.lead: NodeId | None = None
        self.conf = conf
        self.prs: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee: NodeId | None = None
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        self.read_only = ReadOnlyQueue()
        # Reads (context, origin) that arrived before this leader committed an entry
        # of its term.
        self.reads_waiting_for_commit: list[tuple[bytes, NodeId]] = []
        # A follower's reads sent to its leader, waiting for the answer.
        self.forwarded_reads = ForwardedReads()
        # Reads were queued since the last heartbeat round: one round, sent when the
        # driver takes the next Ready (flush_read_round), confirms all of them.
        self.read_round_due = False
        self.incoming_snapshot: IncomingSnapshot | None = None
        self.ticks = 0
        # Outputs, drained by RawNode.ready().
        self.msgs: list[Message] = []
        # Messages to ourselves that may be stepped only once the Ready that carries
        # the current hard state is durable (RawNode steps them in advance()).
        self.steps_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        # Reads that cannot be served: leadership or the term changed (dropped), or a
        # forwarded read got no answer in time (expired).
        self.dropped_reads: list[bytes] = []
        self.expired_reads: list[bytes] = []
        # The engine's one stream of notable events (elections, leadership,
        # transfers, configuration changes): the engine logs nothing itself; hosts
        # log, count or trace what they receive here.
        self.on_event: Callable[[str, dict], None] | None = None
        self._reset(self.term)

    # -- small helpers -------------------------------------------------------

    def event(self, name: str, **fields: object) -> None:
        """Report a notable event to ``on_event`` (RawNode reports its own here too)."""
        if self.on_event is not None:
            self.on_event(name, fields)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        """Only voters campaign, and not while a received snapshot is unpersisted."""
        return self.id in self.conf.all_voters() and self.log.pending_snapshot is None

    def is_learner(self) -> bool:
        return self.id in self.conf.learners

    def _send(self, m: Message) -> None:
        m.frm = self.id
        if m.type not in (MT.PRE_VOTE, MT.PRE_VOTE_RESP):
            # Pre-vote requests and answers carry the term they are about (ours + 1).
            m.term = self.term
        self.msgs.append(m)

    def _reset_randomized_election_timeout(self) -> None:
        e = self.cfg.election_tick
        self.randomized_election_timeout = e + self.rng.randrange(e)

    def _committed_in_current_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _quorum_has(self, nodes: set[NodeId]) -> bool:
        return quorum.joint_active(self.conf, nodes)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
            # A forwarded read may be answered only by the leader of the term it was
            # sent in; within that term it stays valid whatever our role becomes.
            self.dropped_reads.extend(self.forwarded_reads.drain())
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = None
        self.votes = {}
        last = self.log.last_index()
        self.prs = {}
        for node in sorted(self.conf.members()):
            self.prs[node] = self._new_progress(node, last)
        self.pending_conf_index = 0
        self.uncommitted_bytes = 0
        # Our own pending reads fail; a follower's are forgotten (its read expires, or
        # is dropped when it learns the new term).
        own = [r.context for r in self.read_only.drain() if r.origin == self.id]
        own += [ctx for ctx, origin in self.reads_waiting_for_commit if origin == self.id]
        self.reads_waiting_for_commit = []
        self.read_round_due = False
        self.dropped_reads.extend(own)

    def _new_progress(self, node: NodeId, last: int) -> Progress:
        pr = Progress(match=0, next=last + 1, is_learner=node in self.conf.learners)
        pr.inflights.max_count = self.cfg.max_inflight_msgs
        pr.inflights.max_bytes = self.cfg.max_inflight_bytes
        if node == self.id:
            pr.match = self.log.stable  # only what is durable counts toward commit
        return pr

    # -- role transitions ----------------------------------------------------

    def become_follower(self, term: int, lead: NodeId | None) -> None:
        was_leader = self.role is Role.LEADER
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead
        if was_leader:
            self.event("stepped_down", term=term)

    def _become_pre_candidate(self) -> None:
        # Pre-vote changes nothing durable: no term bump, no vote [9.6].
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.lead = None

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        me = self.prs[self.id]
        me.become_replicate()
        me.recent_active = True
        # The no-op: commits the entries of earlier terms (Figure 8), and gates
        # configuration changes and ReadIndex until it has committed.
        noop = Entry(self.log.last_index() + 1, self.term, EntryType.NORMAL, b"")
        self._append([noop])
        self.pending_conf_index = noop.index
        self.event("became_leader", term=self.term)

    # -- time ----------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        if self.forwarded_reads:
            self.expired_reads.extend(self.forwarded_reads.expire(self.ticks))
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, self.id, self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, self.id, self.id))
            if self.role is Role.LEADER and self.lead_transferee is not None:
                self._abort_transfer("the target did not take over within an election timeout")
                if self.id not in self.conf.all_voters():
                    self.become_follower(self.term, None)  # removed: stop leading anyway
        if self.role is not Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, self.id, self.id))
            if self.conf.auto_leave and self.role is Role.LEADER:
                # Leaving the joint configuration can be deferred (e.g. by a transfer
                # in progress when it was applied); retry until it is proposed.
                try:
                    self.maybe_auto_leave()
                except ProposalDropped as e:
                    self.event("auto_leave_deferred", reason=e.reason)
        elif not self.cfg.broadcast_commit:
            self._send_pending_commits()

    def _send_pending_commits(self) -> None:
        """Without broadcast_commit: an empty append to each follower that holds
        entries we committed since we last told it, so that it applies them within
        a tick even when no other message goes its way."""
        committed = self.log.committed
        for node, pr in self.prs.items():
            if node != self.id and pr.sent_commit < min(committed, pr.match):
                self._send_append(node)

    # -- elections -----------------------------------------------------------

    def _hup(self, transfer: bool) -> None:
        if self.role is Role.LEADER or not self.promotable():
            return
        # A configuration change that is committed but not applied may remove us or
        # change the quorum: campaigning under the old one would be unsafe.
        for e in self.log.slice(self.log.applying + 1, self.log.committed + 1):
            if e.type is EntryType.CONF_CHANGE:
                return
        if transfer or not self.cfg.pre_vote:
            self._campaign(MT.VOTE, transfer)
        else:
            self._campaign(MT.PRE_VOTE, False)

    def _campaign(self, kind: MessageType, transfer: bool) -> None:
        if kind is MT.PRE_VOTE:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
            self.event("election", term=term)
        if kind is MT.PRE_VOTE:
            # A pre-vote promises nothing durable, so our own counts at once.
            if self._poll(self.id, granted=True) is quorum.VoteResult.WON:
                self._campaign(MT.VOTE, False)
                return
        else:
            # Our own vote counts only once the new term and vote are on disk: it is
            # handed back by RawNode.advance. Counted now, a single voter would lead
            # (and send appends, which are sendable before persist) in a term that a
            # crash could take back, then win the same term again with other entries
            # at the same indexes.
            own = Message(MT.VOTE_RESP, self.id, self.id, term=self.term)
            self.steps_after_persist.append(own)
        ctx = TRANSFER_CONTEXT if transfer else b""
        for node in sorted(self.conf.all_voters()):
            if node == self.id:
                continue
            self._send(
                Message(
                    kind,
                    node,
                    self.id,
                    term=term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    context=ctx,
                )
            )

    def _poll(self, node: NodeId, granted: bool) -> quorum.VoteResult:
        if node in self.conf.all_voters():
            self.votes.setdefault(node, granted)
        return quorum.joint_vote(self.conf, self.votes)

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MT.PRE_VOTE
        resp = MT.PRE_VOTE_RESP if pre else MT.VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote is None and self.lead is None)
            or (pre and m.term > self.term)
        )
        # The election restriction [3.6.1]: only for a log at least as up to date.
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A pre-vote answer carries the term it was asked for, not ours.
            self._send(Message(resp, m.frm, self.id, term=m.term))
            if not pre:
                self.election_elapsed = 0  # only a granted vote resets the timer
                self.vote = m.frm
        else:
            self._send(self._vote_refusal(resp, m.frm))

    def _vote_refusal(self, kind: MessageType, to: NodeId) -> Message:
        commit = self.log.committed
        return Message(
            kind,
            to,
            self.id,
            term=self.term,
            reject=True,
            index=commit,
            log_term=self.log.term(commit) or 0,
        )

    # -- the step function ---------------------------------------------------

    def step(self, m: Message) -> None:
        if (
            m.reject
            and m.type in (MT.VOTE_RESP, MT.PRE_VOTE_RESP)
            and m.index > self.log.committed
            and self.log.match_term(m.index, m.log_term)
        ):
            # A refusal carries the voter's commit index. Committed is a fact about
            # (index, term), not about who says it: holding that entry, we may
            # commit through it. This frees a voter stuck in an old configuration
            # that never heard its successor commit, e.g. after the leader that
            # removed itself stepped down (the removed node refuses our longer-log
            # test, but tells us the configuration change committed).
            self.log.commit_to(m.index)
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                forced = m.context == TRANSFER_CONTEXT
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead is not None
                    and self.election_elapsed < self.cfg.election_tick
                )
                if in_lease and not forced:
                    # Stickiness [4.2.3]: we heard from a live leader recently; a
                    # vote request must neither raise our term nor win our vote.
                    return
            if m.type is MT.PRE_VOTE:
                pass  # a pre-vote never changes the voter's term
            elif m.type is MT.PRE_VOTE_RESP and not m.reject:
                pass  # the term is raised when the real election starts
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            elif m.type is MT.VOTE:
                # Only a granted vote resets the election timer (Figure 2; the vote
                # handler below does it). A refused candidate with a shorter log that
                # keeps asking in ever higher terms must not keep the one node that
                # could win from ever timing out (campaign seed 41807420, no pre-vote).
                elapsed, timeout = self.election_elapsed, self.randomized_election_timeout
                self.become_follower(m.term, None)
                self.election_elapsed, self.randomized_election_timeout = elapsed, timeout
            else:
                self.become_follower(m.term, None)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (
                MT.APP,
                MT.HEARTBEAT,
            ):
                # A deposed leader (e.g. after a partition healed) would otherwise
                # never learn the new term when pre-vote keeps us from disturbing it.
                self._send(Message(MT.APP_RESP, m.frm, self.id))
            elif m.type is MT.PRE_VOTE:
                self._send(self._vote_refusal(MT.PRE_VOTE_RESP, m.frm))
            elif m.type is MT.READ_INDEX:
                # A follower asking a leader of an older term: refuse at our term, so
                # it fails the read now and learns the term.
                self._refuse_read(m)
            return  # stale: ignore (an old term's read answer above all)

        t = m.type
        if t is MT.HUP:
            self._hup(transfer=False)
        elif t in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif t is MT.READ_INDEX_RESP:
            self._handle_read_index_response(m)
        elif t is MT.READ_INDEX and self.role is not Role.LEADER:
            self._refuse_read(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t is MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t is MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t is MT.TIMEOUT_NOW:
            # Leadership transfer [3.10]: campaign now, bypassing pre-vote and the
            # voters' stickiness.
            self.event("timeout_now", term=self.term)
            self._hup(transfer=True)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MT.VOTE_RESP
        if t is MT.APP:
            self.become_follower(m.term, m.frm)
            self._handle_append(m)
        elif t is MT.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t is MT.SNAP:
            self.become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t is my_resp:
            result = self._poll(m.frm, not m.reject)
            if result is quorum.VoteResult.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(MT.VOTE, False)
                else:
                    self._become_leader()
                    self._broadcast_append()
            elif result is quorum.VoteResult.LOST:
                self.become_follower(self.term, None)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MT.BEAT:
            self._broadcast_heartbeat()
            self._resume_stalled_snapshots()
            return
        if t is MT.CHECK_QUORUM:
            active = {n for n, pr in self.prs.items() if pr.recent_active or n == self.id}
            if not self._quorum_has(active):
                self.event("check_quorum_step_down", term=self.term)
                self.become_follower(self.term, None)
                return
            for n, pr in self.prs.items():
                pr.recent_active = n == self.id
            return
        if t is MT.READ_INDEX:
            self._handle_forwarded_read(m)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.last_heard_tick = self.ticks
        if t is MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t is MT.HEARTBEAT_RESP:
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                # A lost append would otherwise stall a full window forever.
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index() or pr.state is ProgressState.PROBE:
                # A probing follower that lacks nothing still needs one (empty)
                # append: its acknowledgement is what moves it back to replicate.
                self._send_append(m.frm)
            if m.context:
                self._handle_read_ack(m.frm, m.context)
            self._nudge_transferee(m.frm, pr)
        elif t is MT.SNAP_RESP:
            self._handle_snapshot_response(m, pr)

    # -- log replication: leader side ---------------------------------------

    def _append(self, entries: list[Entry]) -> None:
        # Our own copy counts toward commit only once it is on disk (persisted_to):
        # that is what lets the driver send these entries to followers before its
        # own write finishes [10.2.1].
        self.log.append(entries)

    def persisted_to(self) -> None:
        """The driver made the log durable up to ``log.stable`` (RawNode.advance)."""
        me = self.prs.get(self.id)
        if (
            self.role is Role.LEADER
            and me is not None
            and me.maybe_update(self.log.stable)
            and self._maybe_commit()
        ):
            self._broadcast_append(send_if_empty=self.cfg.broadcast_commit)

    def _maybe_commit(self) -> bool:
        def match(n: NodeId) -> int:
            pr = self.prs.get(n)
            return pr.match if pr is not None else 0

        index = quorum.joint_committed(self.conf, match)
        # Figure 8: only an entry of the current term commits by counting replicas.
        if self.log.maybe_commit(index, self.term):
            self._on_commit_advanced()
            return True
        return False

    def _on_commit_advanced(self) -> None:
        if self.reads_waiting_for_commit and self._committed_in_current_term():
            waiting, self.reads_waiting_for_commit = self.reads_waiting_for_commit, []
            for ctx, origin in waiting:
                self._start_read(ctx, origin)

    def _broadcast_append(self, send_if_empty: bool = True) -> None:
        """Send every follower what it lacks; with ``send_if_empty`` also an empty
        append to those that lack nothing (it carries the new commit index)."""
        for node in self.prs:
            if node != self.id:
                self._send_append(node, send_if_empty)

    def _send_append(self, to: NodeId, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        if prev_term is None or prev_index < self.log.offset:
            return self._start_snapshot(to, pr)
        entries: list[Entry] = []
        size = 0
        if pr.next <= self.log.last_index():
            entries = self.log.slice(pr.next, self.log.last_index() + 1, self.cfg.max_size_per_msg)
            size = sum(e.size() for e in entries)
        if not entries and not send_if_empty:
            return False
        committed = self.log.committed
        self._send(
            Message(
                MT.APP,
                to,
                self.id,
                index=prev_index,
                log_term=prev_term,
                entries=entries,
                commit=committed,
            )
        )
        last = entries[-1].index if entries else prev_index
        # The follower commits at most up to what this message shows it matches.
        pr.sent_commit = max(pr.sent_commit, min(committed, last))
        pr.sent_entries(last, size, bool(entries))
        return True

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            # Fast backtracking: jump over a whole conflicting term at a time.
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease_to(m.index, next_probe + 1):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.is_paused()
        updated = pr.maybe_update(m.index)
        # A probe answered at exactly the known match (a caught-up follower) carries
        # no news about the log, but it does prove where the logs match.
        confirms_probe = pr.state is ProgressState.PROBE and m.index == pr.match
        if not updated and not confirms_probe:
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            # Appends can continue as soon as the follower's log reaches our first
            # index; waiting for the snapshot's index would send it all again. A
            # transfer that completed below our first index (we compacted past it
            # meanwhile) ends too: the next append starts a newer snapshot.
            assert pr.transfer is not None
            pending = pr.transfer.snapshot.meta.index
            if pr.match + 1 >= self.log.first_index() or pr.match >= pending:
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            # Entries for those that lack them; with broadcast_commit, an empty
            # append to the others too, to carry the new commit index.
            self._broadcast_append(send_if_empty=self.cfg.broadcast_commit)
        elif was_paused:
            self._send_append(m.frm)
        while self._send_append(m.frm, send_if_empty=False):
            pass
        self._nudge_transferee(m.frm, pr)

    def _nudge_transferee(self, node: NodeId, pr: Progress) -> None:
        """Tell a caught-up transfer target to campaign now.

        Sent again on each of its acknowledgements until it takes over or the
        transfer times out: a target may ignore the first one (it has not yet
        applied the change that made it a voter) or the network may lose it, and a
        repeat is harmless (a stale one is from an older term by the time it lands).
        """
        if node == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, node, self.id))

    def _broadcast_heartbeat(self) -> None:
        # The newest pending read rides along: an acknowledgement confirms it and
        # every read queued before it.
        ctx = self.read_only.last_context()
        for node, pr in self.prs.items():
            if node == self.id:
                continue
            commit = min(pr.match, self.log.committed)
            pr.sent_commit = max(pr.sent_commit, commit)
            self._send(Message(MT.HEARTBEAT, node, self.id, commit=commit, context=ctx))

    # -- log replication: follower side -------------------------------------

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MT.APP_RESP, m.frm, self.id, index=self.log.committed))
            return
        last = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self._send(Message(MT.APP_RESP, m.frm, self.id, index=last))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self._send(
            Message(
                MT.APP_RESP,
                m.frm,
                self.id,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        # The leader never sends a commit index beyond what it knows we hold.
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(Message(MT.HEARTBEAT_RESP, m.frm, self.id, context=m.context))

    # -- snapshots -----------------------------------------------------------

    def _start_snapshot(self, to: NodeId, pr: Progress) -> bool:
        snap = self.log.snapshot
        if not pr.recent_active or snap is None:
            return False
        if not len(snap.data):
            # A checkpoint has no image to send: the host makes one (a newer snapshot,
            # compacted in like any other); the next probe of this follower sends it.
            self.event("snapshot_wanted", to=to, index=snap.meta.index)
            return False
        pr.become_snapshot(snap)
        self.event("snapshot_send", to=to, index=snap.meta.index)
        self._send_snapshot_chunks(to, pr)
        return True

    def _send_snapshot_chunks(self, to: NodeId, pr: Progress) -> None:
        tr = pr.transfer
        assert tr is not None
        data = tr.snapshot.data
        total = len(data)
        cs = self.cfg.snapshot_chunk_bytes
        window = self.cfg.snapshot_window * cs
        while tr.sent - tr.acked < window and tr.sent < total:
            end = min(tr.sent + cs, total)
            chunk = SnapshotChunk(
                meta=tr.snapshot.meta,
                offset=tr.sent,
                total=total,
                data=data[tr.sent : end],
                done=end >= total,
            )
            self._send(Message(MT.SNAP, to, self.id, chunk=chunk))
            tr.sent = end

    def _handle_snapshot_response(self, m: Message, pr: Progress) -> None:
        tr = pr.transfer
        if pr.state is not ProgressState.SNAPSHOT or tr is None:
            return
        if m.index != tr.snapshot.meta.index:
            return
        tr.stalled_rounds = 0
        if m.reject:
            # The follower is missing bytes from this offset on: resend from there.
            tr.acked = tr.sent = m.reject_hint
        else:
            tr.acked = max(tr.acked, m.reject_hint)
            tr.sent = max(tr.sent, tr.acked)
        self._send_snapshot_chunks(m.frm, pr)

    def _resume_stalled_snapshots(self) -> None:
        for node, pr in self.prs.items():
            tr = pr.transfer
            if pr.state is not ProgressState.SNAPSHOT or tr is None:
                continue
            tr.stalled_rounds += 1
            if tr.stalled_rounds >= 2:
                # No acknowledgement for two heartbeat rounds: a chunk was lost.
                tr.stalled_rounds = 0
                tr.sent = tr.acked
                self._send_snapshot_chunks(node, pr)

    def _handle_snapshot(self, m: Message) -> None:
        chunk = m.chunk
        if chunk is None:
            return
        meta = chunk.meta
        if meta.index <= self.log.committed or self.log.match_term(meta.index, meta.term):
            # We already hold the snapshot's last entry, so our log up to it equals the
            # leader's: commit up to it and keep the entries that follow (Figure 13,
            # step 6) instead of replacing the log. Only the committed prefix is known
            # to match, so that is what we acknowledge.
            inc = self.incoming_snapshot
            if inc is not None and inc.index <= meta.index:
                # A late duplicate of an older snapshot must not wipe a newer transfer.
                self.incoming_snapshot = None
            if self.log.match_term(meta.index, meta.term):
                self.log.commit_to(meta.index)
            self._send(Message(MT.APP_RESP, m.frm, self.id, index=self.log.committed))
            return
        inc = self.incoming_snapshot
        if chunk.offset == 0 and (inc is None or (inc.index, inc.term) != (meta.index, meta.term)):
            buffer = self.cfg.snapshot_buffer(meta)
            inc = self.incoming_snapshot = IncomingSnapshot(meta.index, meta.term, buffer)
        if inc is None or (inc.index, inc.term) != (meta.index, meta.term):
            # We hold nothing of this snapshot: ask for it from the start.
            self._send(Message(MT.SNAP_RESP, m.frm, self.id, index=meta.index, reject=True))
            return
        have = len(inc.buffer)
        if chunk.offset > have:
            # A chunk was lost: ask for the bytes from where we are.
            self._send(
                Message(
                    MT.SNAP_RESP, m.frm, self.id, index=meta.index, reject=True, reject_hint=have
                )
            )
            return
        if chunk.offset == have:
            inc.buffer.extend(chunk.data)
            have = len(inc.buffer)
        if not chunk.done or have < chunk.total:
            self._send(Message(MT.SNAP_RESP, m.frm, self.id, index=meta.index, reject_hint=have))
            return
        snapshot = Snapshot(meta, inc.buffer.finish(chunk.total))
        self.incoming_snapshot = None
        self._restore(snapshot)
        self._send(Message(MT.APP_RESP, m.frm, self.id, index=self.log.last_index()))

    def _restore(self, snapshot: Snapshot) -> None:
        self.log.restore(snapshot)
        self._switch_to_config(snapshot.meta.conf)
        self.event("snapshot_installed", index=snapshot.meta.index)

    # -- configuration -------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed change entry (called by RawNode.advance)."""
        new_conf = apply_change(self.conf, cc)
        self._switch_to_config(new_conf)
        return new_conf

    def _switch_to_config(self, conf: ConfState) -> None:
        old = self.conf
        self.conf = conf
        last = self.log.last_index()
        for node in sorted(conf.members() - self.prs.keys()):
            self.prs[node] = self._new_progress(node, last)
        for node in set(self.prs) - conf.members():
            del self.prs[node]
        for node, pr in self.prs.items():
            pr.is_learner = node in conf.learners
        self.event("conf_applied", conf=conf.to_dict(), old=old.to_dict())
        if self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            # Votes gathered under the old configuration mean nothing under the new
            # one (and we may no longer be a voter at all): give up this election.
            # A candidate applies a change when a vote refusal taught it a commit.
            self.become_follower(self.term, None)
            return
        if self.role is not Role.LEADER:
            return
        if self.id not in conf.all_voters():
            self._hand_over_after_removal(conf)
            return
        if self.lead_transferee is not None and self.lead_transferee not in conf.all_voters():
            self._abort_transfer("the target is no longer a voter")
        # A changed quorum may commit at once; new members need their first append.
        self._broadcast_append(send_if_empty=self._maybe_commit())

    def _hand_over_after_removal(self, conf: ConfState) -> None:
        """C_new, which no longer holds us, is committed: step down, but hand over first.

        Stepping down at once would leave the remaining voters without the commit
        index of C_new; one that restarts still in the joint configuration would
        then need our vote, which our longer log can make us refuse forever. So we
        transfer leadership to the most caught-up voter (catching it up, with the
        commit index) and step down when it takes over, or after an election
        timeout if it cannot.
        """
        successor = max(
            (n for n in sorted(conf.voters) if n in self.prs),
            key=lambda n: self.prs[n].match,
            default=None,
        )
        if successor is None:
            self.become_follower(self.term, None)
            return
        self.lead_transferee = None
        self._start_transfer(successor)
        self._broadcast_append()

    # -- client-facing operations -------------------------------------------

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise ProposalDropped(DropCode.NOT_LEADER, "not the leader", leader=self.lead)
        if self.id not in self.prs:
            raise ProposalDropped(
                DropCode.REMOVED,
                "this node was removed from the configuration and is handing over leadership",
                leader=self.lead_transferee,
            )
        if self.lead_transferee is not None:
            raise ProposalDropped(
                DropCode.TRANSFERRING,
                f"leadership is being transferred to {self.lead_transferee}; retry shortly",
                leader=self.id,
            )

    def propose(self, payloads: list[bytes]) -> tuple[int, int]:
        """Append client commands; returns (index of the first, term)."""
        self._check_can_propose()
        size = sum(len(p) + ENTRY_OVERHEAD for p in payloads)
        if (
            self.uncommitted_bytes > 0
            and self.uncommitted_bytes + size > self.cfg.max_uncommitted_bytes
        ):
            raise ProposalDropped(
                DropCode.OVERLOADED,
                "too many uncommitted bytes in flight; retry after earlier writes commit",
                leader=self.id,
            )
        first = self.log.last_index() + 1
        entries = [Entry(first + i, self.term, EntryType.NORMAL, p) for i, p in enumerate(payloads)]
        self.uncommitted_bytes += size
        self._append(entries)
        self._broadcast_append(send_if_empty=False)
        return first, self.term

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Propose a membership change; refused while another one is in flight."""
        self._check_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped(
                DropCode.CONF_CHANGE_IN_FLIGHT,
                "a configuration change is already in flight (entry "
                f"{self.pending_conf_index} is not applied yet); retry when it is",
                leader=self.id,
            )
        try:
            apply_change(self.conf, cc)
        except ConfChangeError as e:
            # While joint, any change but leaving waits: the same "busy" as above.
            busy = self.conf.joint and not cc.is_leave_joint
            code = DropCode.CONF_CHANGE_IN_FLIGHT if busy else DropCode.INVALID_CONF_CHANGE
            raise ProposalDropped(code, str(e), leader=self.id) from e
        index = self.log.last_index() + 1
        self._append([Entry(index, self.term, EntryType.CONF_CHANGE, cc.encode())])
        self.pending_conf_index = index
        self._broadcast_append(send_if_empty=False)
        return index, self.term

    def maybe_auto_leave(self) -> None:
        """Propose leaving a joint configuration once it is applied (auto-leave)."""
        if (
            self.role is Role.LEADER
            and self.conf.auto_leave
            and self.log.applied >= self.pending_conf_index
            and self.lead_transferee is None
        ):
            self.propose_conf_change(ConfChange())

    def read_index(self, context: bytes) -> None:
        """Start a linearizable read; its ReadState (or its failure, in
        ``dropped_reads`` or ``expired_reads``) appears in a later Ready.

        ``context`` must be unique in the cluster, across restarts too: a follower
        sends it to its leader and matches the answer by it.
        """
        if not context:
            raise ValueError("a read needs a non-empty context")
        if self.role is Role.LEADER:
            self._read_as_leader(context, self.id)
            return
        if self.lead is None or self.lead == self.id:
            raise ProposalDropped(DropCode.NOT_LEADER, "no leader is known", leader=None)
        # A follower or learner asks its leader for the read index [6.4]. Expiry is
        # for liveness only (a dead or unreachable leader); safety never depends on
        # a clock: only the leader of this term may answer, after its quorum round.
        deadline = self.ticks + 2 * self.cfg.election_tick
        self.forwarded_reads.add(context, self.lead, self.term, deadline)
        self._send(Message(MT.READ_INDEX, self.lead, self.id, context=context))

    def _read_as_leader(self, context: bytes, origin: NodeId) -> None:
        if not self._committed_in_current_term():
            # Step 1 of ReadIndex: until the no-op commits we do not know the
            # commit index of earlier terms.
            self.reads_waiting_for_commit.append((context, origin))
            return
        self._start_read(context, origin)

    def _handle_forwarded_read(self, m: Message) -> None:
        if not m.context:
            return
        if m.frm not in self.prs:
            # Not a member: we do not replicate to it, so it could never apply up
            # to the index; refuse instead of leaving it to expire.
            self._refuse_read(m)
            return
        self._read_as_leader(m.context, m.frm)

    def _refuse_read(self, m: Message) -> None:
        if m.context:
            self._send(Message(MT.READ_INDEX_RESP, m.frm, self.id, reject=True, context=m.context))

    def _start_read(self, context: bytes, origin: NodeId) -> None:
        index = self.log.committed
        if self._quorum_has({self.id}):
            self._answer_read(index, context, origin)
            return
        if self.read_only.add(index, context, self.id, origin):
            self.read_round_due = True

    def flush_read_round(self) -> None:
        """One heartbeat round for every read queued since the last one: it carries the
        newest read's context, and a quorum's acknowledgement of it releases that read
        and all queued before it (each was queued before the round left)."""
        if self.read_round_due and self.role is Role.LEADER and self.read_only:
            self._broadcast_heartbeat()
        self.read_round_due = False

    def _answer_read(self, index: int, context: bytes, origin: NodeId) -> None:
        if origin == self.id:
            self.read_states.append(ReadState(index, context))
        else:
            self._send(Message(MT.READ_INDEX_RESP, origin, self.id, index=index, context=context))

    def _handle_read_ack(self, frm: NodeId, context: bytes) -> None:
        acks = self.read_only.ack(frm, context)
        if acks is None or not self._quorum_has(acks):
            return
        for read in self.read_only.release_through(context):
            self._answer_read(read.index, read.context, read.origin)

    def _handle_read_index_response(self, m: Message) -> None:
        """The leader's answer to a read we forwarded (any role: within the term it
        was sent in, the answer is valid even if we started a pre-vote meanwhile)."""
        if not self.forwarded_reads.take(m.context, m.frm, m.term):
            return  # not ours, already answered or expired, or from another leader
        if m.reject:
            self.dropped_reads.append(m.context)
        else:
            self.read_states.append(ReadState(m.index, m.context))

    def transfer_leadership(self, target: NodeId) -> None:
        if self.role is not Role.LEADER:
            raise ProposalDropped(DropCode.NOT_LEADER, "not the leader", leader=self.lead)
        if self.id not in self.conf.all_voters():
            raise ProposalDropped(
                DropCode.REMOVED,
                f"this node was removed and is already handing over to {self.lead_transferee}",
                leader=self.lead_transferee,
            )
        self._start_transfer(target)

    def _start_transfer(self, target: NodeId) -> None:
        if target == self.id:
            if self.lead_transferee is not None:
                self._abort_transfer("transfer to the current leader requested")
            return
        if target not in self.conf.all_voters():
            raise ProposalDropped(
                DropCode.NOT_A_VOTER, f"{target} is not a voter; only a voter can lead"
            )
        if self.lead_transferee == target:
            return
        if self.lead_transferee is not None:
            self._abort_transfer(f"superseded by a transfer to {target}")
        self.election_elapsed = 0  # the transfer must finish within one timeout
        self.lead_transferee = target
        self.event("transfer_started", target=target, term=self.term)
        pr = self.prs[target]
        if pr.match == self.log.last_index():
            self._nudge_transferee(target, pr)
        else:
            self._send_append(target)

    def _abort_transfer(self, reason: str) -> None:
        self.event("transfer_aborted", target=self.lead_transferee, reason=reason)
        self.lead_transferee = None

    def campaign(self) -> None:
        """Start an election now (operator request), as if the timer had fired."""
        self.step(Message(MT.HUP, self.id, self.id))

    def report_leader_lost(self, node: NodeId) -> None:
        """The host saw ``node``'s connection close (its process died or restarted).

        If it is our leader, give up our lease on it and let the election timer run
        out within a random few ticks instead of a whole timeout. Only liveness
        depends on this: a leader that is in fact alive keeps leading, because a
        voter that still hears from it refuses our (pre-)vote, and its next
        heartbeat resets our timer. The draw spreads followers that all saw the same
        close over different ticks, so that one of them usually wins at once.
        """
        if self.role is Role.LEADER or node != self.lead or not self.promotable():
            return
        window = max(1, self.cfg.election_tick // 2)
        soon = self.randomized_election_timeout - self.rng.randint(1, window)
        self.election_elapsed = max(self.election_elapsed, self.cfg.election_tick, soon)
        self.event("leader_lost", leader=node, term=self.term)

    def report_unreachable(self, node: NodeId) -> None:
        pr = self.prs.get(node)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()
