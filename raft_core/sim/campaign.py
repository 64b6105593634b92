"""The randomized simulation campaign: many seeded runs, each full of faults.

One run: a 3- or 5-node cluster on a lossy, reordering network, clients doing
put/get/delete/cas with sessions, and a fault schedule drawn from the seed (crashes
and restarts that lose unsynced writes, symmetric and one-way partitions, leadership
transfers, operator-forced elections, membership changes including the leader, log
compaction with chunked snapshot transfer). Safety invariants are checked at every
step; at the end the faults stop, the cluster must converge, and every client
history must be linearizable.

Some actions aim at the protocol's hardest rules, each in a share of runs (see
docs/design.md, "The campaign's targeted actions"): a leader crashed at the
acknowledgement that puts an entry of an older term on a majority, while a node
holding a conflicting entry of a higher term campaigns (Figure 8); the outgoing
majority cut off from the leader right after a joint configuration is appended or
applied; and fault-free windows in which a leader that a quorum hears from must keep
its term, even while a minority's links to it are cut and report their connections
closed.
"""

from __future__ import annotations

import contextlib
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .. import quorum
from ..checker.linearizability import check_history
from ..confchange import ChangeOp, ConfChange, ConfChangeError, apply_change
from ..driver import Failure, FailureCode, Livelock
from ..progress import ProgressState
from ..statemachine import encode_command
from ..types import ConfState, Entry, EntryType, MessageType, NodeId, ProposalDropped
from .clients import SimClient
from .cluster import LivenessFailure, SimCluster, SimConfig
from .invariants import InvariantViolation
from .network import LinkProfile
from .node import SimNode

COUNTERS = (
    "elections",
    "commits",
    "leadership_transfers",
    "membership_changes",
    "snapshots_installed",
    "crashes",
    "partitions",
    "corruptions_refused",
    "torn_tails_dropped",
    "pauses",
    "follower_reads",
    "reads_failed",
    "store_batches_lost",
    "close_notices",
    "figure8_crashes",
    "joint_splits",
    "liveness_windows",
    "disk_stalls",
    "images_made",
)


@dataclass
class RunResult:
    seed: int
    ok: bool = True
    reason: str = ""
    kind: str = ""  # "invariant", "linearizability", "liveness", "exception"
    stats: dict = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)
    operations: int = 0


@dataclass
class RunPlan:
    """Everything a run does, drawn from its seed before it starts."""

    seed: int
    nodes: int
    clients: int
    keys: int
    fault_ms: float
    settle_ms: float
    membership: bool
    # Leader churn: frequent leader crashes and isolations with quick recovery, the
    # conditions under which a leader inherits uncommitted entries of older terms
    # (the paper's Figure 8).
    churn: bool
    # Stale tails: one entry per append, late duplicates and frequent leader changes.
    # Followers then hold entries of old terms past what a leader's append vouches
    # for, and a late duplicate of an old append makes the leader resend from the
    # follower's commit index, one entry at a time: the window where a follower that
    # commits min(leader commit, its last index) commits a stale entry.
    stale_tails: bool
    # Shrink the voters towards one through membership changes.
    shrink: bool
    config: SimConfig
    # Pause processes (SIGSTOP) now and then: a node that wakes up still believes in
    # an old leader and term, with messages for it queued meanwhile.
    pauses: bool = False
    # Crash a leader at the acknowledgement that puts an entry of an older term on a
    # majority and let a node holding a conflicting entry of a higher term campaign
    # (Figure 8).
    figure8: bool = False
    # Cut the outgoing majority off from the leader right after a joint configuration
    # is appended or applied.
    joint: bool = False
    # Fault-free windows: a leader that a quorum hears from keeps its term.
    liveness: bool = False


def plan_run(seed: int) -> RunPlan:
    rng = random.Random(seed * 7919 + 1)
    nodes = rng.choice([3, 3, 3, 5, 5])
    link = LinkProfile(
        min_delay_ms=rng.uniform(0.2, 2.0),
        max_delay_ms=rng.uniform(2.0, 12.0),
        drop_rate=rng.choice([0.0, 0.01, 0.03, 0.08]),
        duplicate_rate=rng.choice([0.0, 0.01, 0.05]),
        spike_rate=rng.choice([0.0, 0.02, 0.05]),
        spike_ms=rng.uniform(20, 120),
    )
    config = SimConfig(
        nodes=nodes,
        tick_ms=10.0,
        # Short timeouts against slow links give split votes and competing terms;
        # every supported engine configuration is exercised, not only the default.
        election_tick=rng.choice([5, 10, 10, 20]),
        heartbeat_tick=2,
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        link=link,
        disk_latency_ms=rng.choice([(0.0, 0.0), (0.1, 1.0), (0.5, 4.0)]),
        snapshot_every=rng.choice([8, 20, 50, 120]),
        keep_entries=rng.choice([0, 2, 5, 20]),
        # 1 byte: one entry per append, so a new leader's old-term entries and its
        # no-op travel (and get lost) separately, as in Figure 8.
        max_size_per_msg=rng.choice([1, 200, 1 << 12, 1 << 20]),
        max_inflight_msgs=rng.choice([1, 4, 64]),
        snapshot_chunk_bytes=rng.choice([64, 256, 1024, 1 << 16]),
    )
    clients = rng.randint(2, 5)
    keys = rng.randint(1, 4)
    fault_ms = rng.uniform(1500, 3500)
    membership = rng.random() < 0.6
    churn = rng.random() < 0.25
    # Drawn last, so that the plans of runs without it stay as they were.
    stale_tails = rng.random() < 0.1
    if stale_tails:
        churn = True
        config.max_size_per_msg = 1
        config.max_inflight_msgs = rng.choice([4, 64])
        link.duplicate_rate = rng.choice([0.05, 0.1])
        link.spike_rate = rng.choice([0.05, 0.1])
        link.spike_ms = rng.uniform(20, 80)
    plan = RunPlan(
        seed=seed,
        nodes=nodes,
        clients=clients,
        keys=keys,
        fault_ms=fault_ms,
        settle_ms=3000,
        membership=membership,
        churn=churn,
        stale_tails=stale_tails,
        shrink=False,
        config=config,
    )
    # Drawn from a second stream, so that every other run keeps the plan it had (and
    # the seeds kept as regression tests keep replaying what they found).
    more = random.Random(seed * 104729 + 3)
    shape = more.random()
    if shape < 0.12:
        # A single voter with up to two learners: its own vote is a majority, so it
        # wins an election without hearing from anyone; that must wait for its disk.
        plan.nodes = config.nodes = 1
        config.learners = more.randint(0, 2)
        config.disk_latency_ms = (0.1, more.choice([1.0, 4.0]))
        plan.membership = more.random() < 0.7
    elif shape < 0.22:
        plan.membership = plan.shrink = True
    plan.pauses = more.random() < 0.3
    # A stream of its own again: how the commit index reaches followers (raft-node
    # defaults to riding it on later messages; etcd broadcasts it).
    extra = random.Random(seed * 7919 + 11)
    config.broadcast_commit = extra.random() < 0.5
    config.close_notices = extra.random() < 0.5
    # Its own stream: a third of the runs keep the state machine in raft-node's
    # on-disk store, simulated (raft_core/sim/store.py), whose crashes lose batches.
    config.stored_state = random.Random(seed * 7919 + 17).random() < 0.35
    # The targeted actions, from a stream of their own again.
    teeth = random.Random(seed * 2654435761 + 17)
    if plan.nodes > 1:
        plan.figure8 = teeth.random() < 0.3
        plan.joint = teeth.random() < 0.25
        # Only with both pre-vote and check-quorum does the protocol promise that a
        # node cut off from a live leader cannot raise the term of those who hear it.
        plan.liveness = config.pre_vote and config.check_quorum and teeth.random() < 0.4
    if plan.figure8:
        # Leader churn builds logs with entries of several terms; one entry per
        # append lets an old-term entry reach a majority before the new leader's no-op.
        plan.churn = True
        config.max_size_per_msg = 1
        # Mostly one append in flight: the no-op leaves only after the entry before it
        # was acknowledged, so a crash at that acknowledgement keeps it from everyone.
        config.max_inflight_msgs = teeth.choice([1, 1, 4])
    if plan.joint:
        plan.membership = True
    if plan.liveness:
        config.close_notices = True
    return plan


class Chaos:
    """Schedules faults and membership changes for one run."""

    def __init__(self, cluster: SimCluster, rng: random.Random, plan: RunPlan) -> None:
        self.c = cluster
        self.rng = rng
        self.plan = plan
        self.active = True
        self._next_node = plan.nodes + plan.config.learners + 1
        self._writes = 0  # chaos's own writes (key "chaos", outside client histories)
        # The targeted actions draw from a stream of their own, so that a run without
        # them keeps its schedule.
        self._teeth = random.Random(plan.seed * 179424673 + 9)
        self._stalls = random.Random(plan.seed * 32452843 + 11)  # slow disks in windows
        # While a liveness window is open no fault starts (see _open_window).
        self.quiet = False
        self._watched: tuple[NodeId, int, frozenset[NodeId]] | None = None
        self._figure8_seen: set[tuple[NodeId, int]] = set()
        # A targeted action plays out undisturbed until then (virtual ms).
        self._busy_until = 0.0

    @property
    def acting(self) -> bool:
        return self.active and not self.quiet and self.c.now >= self._busy_until

    def start(self) -> None:
        self.c.schedule(self.rng.uniform(100, 300), self._act)
        if self.plan.pauses:
            # A stream of its own, so that the other faults stay as they were.
            self._pause_rng = random.Random(self.plan.seed * 15485863 + 5)
            self.c.schedule(self._pause_rng.uniform(100, 400), self._pause)
        if self.plan.churn:
            self.c.persist_hooks.append(self._crash_at_the_worst_moment)
        if self.plan.churn or self.plan.nodes == 1 or self.plan.shrink:
            self.c.early_send_hooks.append(self._crash_before_the_write)
        if self.plan.figure8:
            self.c.elected_hooks.append(self._figure8_setup)
            self.c.receive_hooks.append(self._figure8)
        if self.plan.joint:
            self.c.apply_hooks.append(self._joint_applied)
        if self.plan.liveness:
            self.c.schedule(self._teeth.uniform(0.1, 0.5) * self.plan.fault_ms, self._open_window)

    def _crash_before_the_write(self, node, rd) -> None:
        """Crash a leader after its early sends left and before its write is done.

        A leader's appends may leave before its own write because its term is
        already durable; a leader that skipped that wait would lose its term here
        and could win it again with other entries at the same indexes.
        """
        if not self.acting or not rd.entries or self.rng.random() > 0.25:
            return
        self.c.schedule(0, lambda: self.c.crash(node.id))
        self.c.schedule(self.rng.uniform(1, 40), lambda: self._restart_and_campaign(node.id))

    def _restart_and_campaign(self, nid: str) -> None:
        """Restart, and often campaign at once with a write arriving in the same batch:
        the input pattern that lets a leader's first Ready carry client entries."""
        self.c.restart(nid)
        if self.rng.random() < 0.5 and self.acting:
            self._campaign(self.c.nodes[nid], with_write=True)

    def _crash_at_the_worst_moment(self, node, rd) -> None:
        """Crash a node just after it sent a vote or a leader sent fresh entries.

        Those are the windows where forgetting a vote gives two leaders one term, and
        where an entry of an old term sits on a majority without being committed
        (Figure 8). Random crash times almost never hit them.
        """
        if not self.acting or self.rng.random() > 0.15:
            return
        hs = rd.hard_state
        voted = hs is not None and hs.vote is not None and hs.vote != node.id
        leader_wrote = bool(rd.entries) and node.raw.is_leader
        if voted or leader_wrote:
            self.c.schedule(0, lambda: self.c.crash(node.id))
            self.c.schedule(self.rng.uniform(1, 40), lambda: self.c.restart(node.id))

    def _act(self) -> None:
        if not self.active:
            return
        if not self.acting:
            self.c.schedule(self.rng.uniform(60, 350), self._act)
            return
        if self.plan.churn and self.rng.random() < 0.6:
            self._churn()
            self.c.schedule(self.rng.uniform(15, 80), self._act)
            return
        roll = self.rng.random()
        try:
            if self.plan.joint and roll > 0.5:
                self._membership()  # joint runs change membership half the time
            elif roll < 0.22:
                self._crash()
            elif roll < 0.42:
                self._partition()
            elif roll < 0.50:
                self._one_way()
            elif roll < 0.60:
                self._transfer()
            elif roll < 0.64:
                self._force_campaign()
            elif roll < 0.70 and not self.plan.joint:
                self._compact_now()
            elif self.plan.membership:
                self._membership()
        except ProposalDropped as e:
            self.c.note(f"chaos: refused: {e.reason}")
        self.c.schedule(self.rng.uniform(60, 350), self._act)

    def _members(self) -> list[str]:
        return sorted(n for n in self.c.nodes if n not in self.c.removed)

    def _churn(self) -> None:
        """Knock out the current leader, right after it may have appended entries."""
        leader = self.c.leader()
        if leader is None:
            return
        if self.rng.random() < 0.5:
            self.c.crash(leader.id)
            self.c.schedule(self.rng.uniform(20, 200), lambda nid=leader.id: self.c.restart(nid))
        else:
            self.c.isolate(leader.id)
            self.c.schedule(self.rng.uniform(20, 200), self.c.heal)

    def _crash(self) -> None:
        up = [n for n in self._members() if self.c.nodes[n].up]
        if not up:
            return
        victim = self.rng.choice(up)
        # Sometimes crash the leader on purpose: that is where it hurts.
        leader = self.c.leader()
        if leader is not None and self.rng.random() < 0.4:
            victim = leader.id
        self.c.crash(victim)
        if self.rng.random() < 0.2:
            # Bit rot while it is down: it must refuse to start, not serve without
            # what it acknowledged.
            self.c.nodes[victim].disk.corrupt(self.rng)
        self.c.schedule(self.rng.uniform(30, 900), lambda: self.c.restart(victim))

    def _partition(self) -> None:
        ids = list(self.c.nodes)
        self.rng.shuffle(ids)
        leader = self.c.leader()
        if leader is not None and self.rng.random() < 0.4:
            # Cut the leader off into a minority.
            others = [n for n in ids if n != leader.id]
            self.c.partition([leader.id], others)
        else:
            cut = self.rng.randint(1, max(1, len(ids) - 1))
            self.c.partition(ids[:cut], ids[cut:])
        self.c.schedule(self.rng.uniform(80, 900), self.c.heal)

    def _partition_if_acting(self) -> None:
        if self.acting:
            self._partition()

    # -- Figure 8 ---------------------------------------------------------------------

    def _figure8_setup(self, node: SimNode) -> None:
        """A new leader whose no-op goes where another node holds an older entry:
        keep the no-op on its own disk only (cut it off, crash it once written).

        That is Figure 8 (b): a node now holds, durably, an entry of a higher term
        than an uncommitted entry at the same index elsewhere; the holder of the older
        entry may lead next and replicate it (see _figure8).
        """
        raw = node.raw
        j = raw.last_index()  # the no-op
        if not self.acting or self._teeth.random() < 0.2:
            return
        for other in self.c.nodes.values():
            if other is node or other.id not in raw.conf.all_voters():
                continue
            theirs = other.raw.log_term(j) if other.up else other.disk.term_at(j)
            if theirs is not None and theirs < raw.term:
                break
        else:
            return
        rng = self._teeth
        self.c.note(f"chaos: figure 8 setup: {node.id}'s no-op {j}/{raw.term} stays with it")
        self.c.isolate(node.id)
        crash_at = self.plan.config.disk_latency_ms[1] + rng.uniform(0.1, 2)
        self.c.schedule(crash_at, lambda: self.c.crash(node.id))
        self.c.schedule(crash_at + 0.01, self.c.heal)
        self.c.schedule(crash_at + rng.uniform(300, 900), lambda: self.c.restart(node.id))

    def _figure8(self, node: SimNode, m: Any) -> None:
        """An acknowledgement puts an entry of an older term on a majority: crash the
        leader before its own no-op gets there.

        A leader that committed the entry by counting replicas has applied it by now.
        A node holding a conflicting entry of a higher term then campaigns: if its log
        is at least as up to date as a majority's, it can win and overwrite the old
        entry everywhere, which is safe only if nobody committed it.
        """
        raw = node.raw
        if not self.acting or m.type is not MessageType.APP_RESP or m.reject:
            return
        if not raw.is_leader or m.term != raw.term or (node.id, raw.term) in self._figure8_seen:
            return
        acked_term = raw.log_term(m.index)
        if acked_term is None or acked_term >= raw.term:
            return

        def match(v: NodeId) -> int:
            pr = raw.progress(v)
            return pr.match if pr is not None else 0

        if quorum.joint_committed(raw.conf, match) < m.index:
            return  # not on a majority yet
        rival = self._figure8_rival(node, m.index)
        if rival is None:
            return
        self._figure8_seen.add((node.id, raw.term))
        rng = self._teeth
        cfg = self.plan.config
        self.c.stats["figure8_crashes"] += 1
        self.c.note(f"chaos: figure 8: {node.id} acked {m.index}/{acked_term}; {rival} campaigns")
        # What it has in flight (its no-op among it) dies with it. Cut off, it crashes
        # once the write of its current batch has landed; no other fault starts until
        # the rival has had its chance.
        self.c.isolate(node.id)
        self.c.net.lose_in_flight(node.id)
        crash_at = cfg.disk_latency_ms[1] + rng.uniform(0.1, 1)
        until = crash_at + (cfg.election_tick + 2) * cfg.tick_ms
        self._busy_until = self.c.now + until
        self.c.schedule(crash_at, lambda: self.c.crash(node.id))
        self.c.schedule(crash_at + 0.01, self.c.heal)
        self.c.schedule(crash_at, lambda: self._rival_campaigns(rival, self.c.now + until))
        self.c.schedule(crash_at + rng.uniform(300, 900), lambda: self.c.restart(node.id))

    def _figure8_rival(self, leader: SimNode, index: int) -> NodeId | None:
        """A voter whose log conflicts with the leader's at or below ``index`` with an
        entry of a higher term, and is as up to date as a majority of the others'
        (the leader being gone), so that it can win; up or down (then by its disk)."""
        raw = leader.raw
        tails: dict[NodeId, tuple[int, int]] = {}
        conflicting = []
        for v in sorted(raw.conf.all_voters() - {leader.id}):
            other = self.c.nodes[v]
            term_at = other.raw.log_term if other.up else other.disk.term_at
            last = other.raw.last_index() if other.up else other.disk.last_index()
            tails[v] = (term_at(last) or 0, last)
            lo = max(raw.first_index(), index - 64)
            if any((term_at(i) or 0) > (raw.log_term(i) or 0) for i in range(lo, index + 1)):
                conflicting.append(v)
        self._teeth.shuffle(conflicting)
        for v in conflicting:
            votes = {u for u, tail in tails.items() if tail <= tails[v]}
            if quorum.joint_vote(raw.conf, dict.fromkeys(votes, True)) is quorum.VoteResult.WON:
                return v
        return None

    def _rival_campaigns(self, nid: NodeId, until: float) -> None:
        """Campaign now and every millisecond until it leads, someone else does, or
        the voters' leases on the crashed leader have surely run out (a restarted
        rival learns the current term from its first refusals)."""
        if not self.active or self.quiet:
            return
        self.c.resume(nid)
        self.c.restart(nid)
        node = self.c.nodes[nid]
        leader = self.c.leader()
        if leader is not None or self.c.now > until:
            return
        self._campaign(node, with_write=False)
        self.c.schedule(1.0, lambda: self._rival_campaigns(nid, until))

    # -- joint configurations --------------------------------------------------------

    def _joint_applied(self, nid: NodeId, e: Entry, result: Any) -> None:
        """A leader applied a joint configuration: cut its outgoing majority off."""
        node = self.c.nodes[nid]
        if not self.acting or e.type is not EntryType.CONF_CHANGE or not node.raw.is_leader:
            return
        if ConfChange.decode(e.data).is_leave_joint or self._teeth.random() < 0.3:
            return
        # The configuration takes effect when the driver advances, just after this.
        self.c.schedule(0, lambda: self._split_joint(nid))

    def _split_joint(self, nid: NodeId) -> None:
        node = self.c.nodes[nid]
        if self.acting and node.up and node.raw.is_leader and node.conf.joint:
            self._split_outgoing(nid, node.conf)

    def _split_outgoing(self, leader: NodeId, conf: ConfState) -> None:
        """Partition so that the leader keeps an incoming majority and the rest hold
        an outgoing one: the leader must then commit nothing, since the outgoing
        majority may elect a leader of its own under the old configuration."""
        incoming, outgoing = conf.voters, conf.voters_outgoing
        rng = self._teeth
        # The incoming majority with the fewest outgoing voters in it, leader first.
        fresh = sorted(incoming - outgoing - {leader})
        shared = sorted(incoming & outgoing - {leader})
        rng.shuffle(fresh)
        rng.shuffle(shared)
        side = {leader}
        for n in [*fresh, *shared]:
            if len(side & incoming) > len(incoming) // 2:
                break
            side.add(n)
        rest = set(self.c.nodes) - side
        if len(rest & outgoing) <= len(outgoing) // 2:
            return  # no such split exists for this change
        self.c.stats["joint_splits"] += 1
        self.c.partition(sorted(side), sorted(rest))
        self.c.schedule(rng.uniform(300, 1000), self.c.heal)

    # -- liveness windows ------------------------------------------------------------

    def _open_window(self) -> None:
        """Stop the faults and let the cluster settle, then watch its leader.

        No fault starts while the window is open; what was down comes back, the
        links lose, duplicate and delay nothing beyond their normal latency. After
        two of the longest election timeouts a leader should lead every member in
        its term; from then on it must keep leading and no member's term may grow,
        although a minority may be cut off from it (and hear its connection close).
        """
        if not self.active:
            return
        self.quiet = True
        c = self.c
        c.heal()
        for nid, node in c.nodes.items():
            c.resume(nid)
            if not node.up:
                c.restart(nid)
        lossy = c.net.profile
        c.net.profile = LinkProfile(lossy.min_delay_ms, lossy.max_delay_ms)
        timeout_ms = 2 * self.plan.config.election_tick * self.plan.config.tick_ms
        c.schedule(2 * timeout_ms, lambda: self._watch(lossy, timeout_ms))

    def _watch(self, lossy: LinkProfile, timeout_ms: float) -> None:
        c = self.c
        rng = self._teeth
        leader = c.leader()
        settled = (
            leader is not None
            and not leader.conf.joint
            and leader.raw.pending_conf_index <= leader.replica.applied_index
            and leader.raw.status().transferring_to is None
            and all(n.term <= leader.term for n in c.nodes.values() if n.up)
            and all(
                c.nodes[m].up and c.nodes[m].raw.leader == leader.id
                for m in leader.conf.members()
                if m in c.nodes
            )
        )
        if not settled:
            c.note("chaos: liveness window skipped: no settled leader")
            self._close_window(lossy)
            return
        assert leader is not None
        members = frozenset(m for m in leader.conf.members() if m in c.nodes)
        self._watched = (leader.id, leader.term, members)
        c.stats["liveness_windows"] += 1
        c.note(f"chaos: liveness window: {leader.id} leads term {leader.term}")
        followers = sorted(leader.conf.voters - {leader.id})
        most = (len(leader.conf.voters) - 1) // 2  # the leader keeps a majority
        if most and rng.random() < 0.7:
            # Cut a minority of the voters off from the leader (and only from it).
            c.partition([leader.id], rng.sample(followers, rng.randint(1, most)))
        end = c.now + rng.uniform(1.5, 3) * timeout_ms
        self._stall_a_disk(leader, members, timeout_ms)

        def check() -> None:
            self._check_watched()
            if c.now < end:
                c.schedule(self.plan.config.tick_ms, check)
            else:
                self._close_window(lossy)

        check()

    def _stall_a_disk(self, leader: SimNode, members: frozenset[NodeId], timeout_ms: float) -> None:
        """A slow disk is no fault of the protocol's: stall the leader's or a member's
        writes for up to two election timeouts. Heartbeats and their answers need no
        write, so the leader must keep its term (a write in progress must not hold
        them back)."""
        rng = self._stalls
        if rng.random() < 0.5:
            return
        victim = leader if rng.random() < 0.5 else self.c.nodes[rng.choice(sorted(members))]
        self.c.stats["disk_stalls"] += 1
        self.c.note(f"chaos: {victim.id}'s disk stalls")
        victim.disk_stall_ms = rng.uniform(0.5, 2) * timeout_ms

    def _check_watched(self) -> None:
        assert self._watched is not None
        lid, term, members = self._watched
        leader = self.c.nodes[lid]
        if not (leader.up and leader.raw.is_leader and leader.term == term):
            raise LivenessFailure(
                f"liveness invariant: {lid} led term {term} and a quorum heard from it in "
                f"a fault-free window, yet it was unseated (now {leader.role}, term "
                f"{leader.term})"
            )
        for nid in sorted(members):
            n = self.c.nodes[nid]
            if n.up and n.term > term:
                raise LivenessFailure(
                    f"liveness invariant: {nid} reached term {n.term} while {lid} led term "
                    f"{term} and a quorum heard from it, in a fault-free window"
                )

    def _close_window(self, lossy: LinkProfile) -> None:
        self._watched = None
        self.c.net.profile = lossy
        self.c.heal()
        self.quiet = False

    def _pause(self) -> None:
        if not self.active:
            return
        rng = self._pause_rng
        if self.quiet:
            self.c.schedule(rng.uniform(150, 600), self._pause)
            return
        up = [n for n in self._members() if self.c.nodes[n].up and not self.c.nodes[n].paused]
        if up:
            victim = rng.choice(up)
            leader = self.c.leader()
            if leader is not None and rng.random() < 0.3:
                victim = leader.id
            self.c.pause(victim)
            self.c.schedule(rng.uniform(30, 700), lambda: self.c.resume(victim))
        self.c.schedule(rng.uniform(150, 600), self._pause)

    def _one_way(self) -> None:
        ids = list(self.c.nodes)
        if len(ids) < 2:
            return
        a, b = self.rng.sample(ids, 2)
        self.c.block(a, b)
        self.c.schedule(self.rng.uniform(80, 900), self.c.heal)

    def _transfer(self) -> None:
        leader = self.c.leader()
        if leader is None:
            return
        voters = sorted(leader.conf.all_voters() - {leader.id})
        if voters:
            target = self.rng.choice(voters)

            def answered(outcome: tuple[Any, Any] | Failure) -> None:
                self.c.note(f"chaos: transfer to {target}: {outcome}")
                if not isinstance(outcome, Failure):
                    self.c.check_transfer_answer(leader, *outcome)

            leader.driver.transfer_leadership(target, answered)

    def _force_campaign(self) -> None:
        up = [n for n in self._members() if self.c.nodes[n].up]
        if up:
            self._campaign(self.c.nodes[self.rng.choice(up)], self.rng.random() < 0.3)

    def _campaign(self, node, with_write: bool) -> None:
        node.raw.campaign()
        if with_write:
            self._writes += 1
            cmd = encode_command(["put", "chaos", f"{node.id}-{self._writes}"])
            with contextlib.suppress(ProposalDropped):  # not (yet) the leader
                node.raw.propose(cmd)
        node.process()

    def _compact_now(self) -> None:
        up = [n for n in self.c.nodes.values() if n.up]
        if up:
            self.rng.choice(up).take_snapshot()

    def _membership(self) -> None:
        leader = self.c.leader()
        if leader is None:
            return
        conf = leader.conf
        if conf.joint:
            return
        voters = sorted(conf.voters)
        learners = sorted(conf.learners)
        options = ["add_learner"]
        if learners:
            options += ["promote", "promote", "remove_learner"]
        if len(voters) > 1:
            options += ["remove_voter", "remove_leader"]
        if learners and len(voters) > 1:
            options.append("replace")
        if len(voters) >= 6:
            options = [o for o in options if o not in ("promote", "replace")] or ["remove_voter"]
        if self.plan.shrink and len(voters) > 1:
            options = ["remove_voter", "remove_voter", "remove_leader", "add_learner"]
        if self.plan.joint and 1 < len(voters) <= 5:
            # Changes whose incoming majority can form without an outgoing one: only
            # those let a leader that counts the incoming majority alone commit.
            options = ["add_learner"] if len(learners) < 2 else ["swap", "swap", "swap", *options]
        choice = self.rng.choice(options)
        changes: list[tuple[ChangeOp, str]]
        if choice == "add_learner":
            nid = f"n{self._next_node}"
            self._next_node += 1
            self.c.add_node(nid)
            changes = [(ChangeOp.ADD_LEARNER, nid)]
        elif choice == "promote":
            nid = self.rng.choice(learners)
            pr = leader.raw.progress(nid)
            caught_up = pr is not None and pr.state == ProgressState.REPLICATE.value
            if not caught_up and self.rng.random() < 0.7:
                return  # what a careful operator does: wait for the learner
            changes = [(ChangeOp.ADD_VOTER, nid)]
        elif choice == "remove_learner":
            changes = [(ChangeOp.REMOVE, self.rng.choice(learners))]
        elif choice == "remove_voter":
            changes = [(ChangeOp.REMOVE, self.rng.choice(voters))]
        elif choice == "remove_leader":
            changes = [(ChangeOp.REMOVE, leader.id)]
        elif choice == "swap":
            # Up to half the voters (never the leader) for as many learners.
            k = min(len(learners), (len(voters) - 1) // 2 + 1)
            outgoing = self.rng.sample([v for v in voters if v != leader.id], k)
            incoming = self.rng.sample(learners, k)
            changes = [(ChangeOp.ADD_VOTER, n) for n in incoming]
            changes += [(ChangeOp.REMOVE, n) for n in outgoing]
        else:
            changes = [
                (ChangeOp.ADD_VOTER, self.rng.choice(learners)),
                (ChangeOp.REMOVE, self.rng.choice(voters)),
            ]
        cc = ConfChange(changes)
        if not self._propose_change(leader, cc, choice):
            return
        self.c.note(f"chaos: proposed {choice} {changes}")
        if self.plan.joint and self._teeth.random() < 0.3:
            # Right after the joint configuration is appended (the applied case is
            # _joint_applied).
            with contextlib.suppress(ConfChangeError):
                joint = apply_change(leader.conf, cc)
                if joint.joint:
                    self._split_outgoing(leader.id, joint)
        elif self.rng.random() < 0.4:
            # Split the cluster while the change is in flight: the joint phase is
            # where quorums of the old and the new configuration must both hold.
            self.c.schedule(self.rng.uniform(1, 40), self._partition_if_acting)
        for op, nid in changes:
            if op is ChangeOp.REMOVE:
                # The removed process keeps running (it may try to disturb us);
                # it stops counting as a member once the removal has applied.
                self._watch_removal(nid)

    def _propose_change(self, leader: SimNode, cc: ConfChange, what: str) -> bool:
        """Through the driver, as raft-node does; whatever the driver answers is
        checked against the entry the cluster applied at the change's index."""
        index, term = leader.raw.last_index() + 1, leader.term
        refused: list[Failure] = []

        def answered(outcome: tuple[Any, Any] | Failure) -> None:
            self.c.note(f"chaos: {what} at {index}: {outcome}")
            if isinstance(outcome, Failure):
                if outcome.code is FailureCode.REFUSED:
                    refused.append(outcome)
                elif outcome.code is FailureCode.REPLACED:
                    self.c.check_conf_change_answer(leader, index, term, took_effect=False)
            else:
                self.c.check_conf_change_answer(leader, index, term, took_effect=True)

        leader.driver.submit_conf_change(cc, answered)
        return not refused

    def _watch_removal(self, nid: str) -> None:
        def check() -> None:
            leader = self.c.leader()
            if leader is not None and nid not in leader.conf.members():
                self.c.removed.add(nid)
            elif self.active:
                self.c.schedule(50, check)

        self.c.schedule(50, check)

    def stop(self) -> None:
        self.active = False
        self.c.heal()
        for nid, node in self.c.nodes.items():
            self.c.resume(nid)
            if not node.up:
                self.c.restart(nid)


def _converged(c: SimCluster) -> bool:
    leader = c.leader()
    if leader is None or leader.conf.joint:
        return False
    target = leader.replica.applied_index
    if leader.raw.commit_index != leader.raw.last_index():
        return False
    for nid in leader.conf.members():
        n = c.nodes.get(nid)
        if n is None or not n.up or n.replica.applied_index < target:
            return False
    return True


def run_one(seed: int, *, keep_trace: bool = False) -> RunResult:
    plan = plan_run(seed)
    result = RunResult(seed)
    c = SimCluster(seed, plan.config)
    rng = random.Random(seed * 31 + 7)
    keys = [f"k{i}" for i in range(plan.keys)]
    clients = [
        SimClient(c, f"c{i}", random.Random(rng.getrandbits(64)), keys=keys)
        for i in range(plan.clients)
    ]
    chaos = Chaos(c, random.Random(rng.getrandbits(64)), plan)
    try:
        for cl in clients:
            cl.start()
        chaos.start()
        c.run_for(plan.fault_ms)
        chaos.stop()
        for cl in clients:
            cl.stop()
        c.run_until(lambda: all(cl.idle for cl in clients), plan.settle_ms)
        for cl in clients:
            cl.finish()
        if not c.run_until(lambda: _converged(c), plan.settle_ms):
            result.ok = False
            result.kind = "liveness"
            result.reason = (
                f"cluster did not converge within {plan.settle_ms:.0f} ms after faults stopped"
            )
        if result.ok:
            _check_replicas_agree(c)
    except (LivenessFailure, Livelock) as e:
        result.ok, result.kind, result.reason = False, "liveness", str(e)
    except InvariantViolation as e:
        result.ok, result.kind, result.reason = False, "invariant", str(e)
    except Exception as e:  # a crash of the engine is a failure too
        result.ok, result.kind = False, "exception"
        result.reason = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"
    history = [op for cl in clients for op in cl.history]
    result.operations = len(history)
    if result.ok:
        check = check_history(history, max_steps_per_key=300_000)
        if check.status == "violation":
            result.ok, result.kind = False, "linearizability"
            result.reason = check.message
        elif check.status == "unknown":
            result.stats["linearizability_unknown"] = 1
    result.stats.update({k: c.stats.get(k, 0) for k in COUNTERS})
    result.stats["snapshots_taken"] = sum(n.snapshots_taken for n in c.nodes.values())
    result.stats["torn_tails_dropped"] = sum(n.disk.torn_tails_dropped for n in c.nodes.values())
    result.stats["store_batches_lost"] = sum(
        n.store.batches_lost for n in c.nodes.values() if n.store is not None
    )
    if keep_trace or not result.ok:
        result.trace = [*c.trace[-400:], c.dump()]
    return result


def _check_replicas_agree(c: SimCluster) -> None:
    """After convergence every member holds the same state and digest chain."""
    leader = c.leader()
    assert leader is not None
    want = leader.replica.digest()
    for nid in leader.conf.members():
        got = c.nodes[nid].replica.digest()
        if got != want:
            raise InvariantViolation(f"replicas differ after convergence: {nid} {got} vs {want}")


def replay_command(seed: int) -> str:
    return f"python -m raft_core.sim replay --seed {seed}"


def run_campaign(seeds: list[int], jobs: int = 1, progress=None) -> dict:
    started = time.monotonic()
    summary: dict = {
        "runs": 0,
        "failures": [],
        "invariant_violations": 0,
        "linearizability_violations": 0,
        **{k: 0 for k in COUNTERS},
        "runs_with_membership_changes": 0,
        "runs_with_snapshots_installed": 0,
        "linearizability_unknown": 0,
        "operations": 0,
    }
    if jobs > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(jobs) as pool:
            results = pool.imap_unordered(run_one, seeds, chunksize=4)
            for r in results:
                _accumulate(summary, r, progress)
    else:
        for s in seeds:
            _accumulate(summary, run_one(s), progress)
    summary["failures"].sort(key=lambda f: f["seed"])
    summary["seconds"] = round(time.monotonic() - started, 2)
    return summary


def _accumulate(summary: dict, r: RunResult, progress) -> None:
    summary["runs"] += 1
    summary["operations"] += r.operations
    for k in COUNTERS:
        summary[k] += r.stats.get(k, 0)
    summary["runs_with_membership_changes"] += bool(r.stats.get("membership_changes"))
    summary["runs_with_snapshots_installed"] += bool(r.stats.get("snapshots_installed"))
    summary["linearizability_unknown"] += r.stats.get("linearizability_unknown", 0)
    if not r.ok:
        summary["failures"].append(
            {"seed": r.seed, "kind": r.kind, "reason": r.reason.splitlines()[0][:300]}
        )
        if r.kind == "invariant":
            summary["invariant_violations"] += 1
        elif r.kind == "linearizability":
            summary["linearizability_violations"] += 1
    if progress is not None:
        progress(r)


__all__ = ["RunResult", "plan_run", "replay_command", "run_campaign", "run_one"]
