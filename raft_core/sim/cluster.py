"""A whole simulated cluster on a virtual clock: nodes, network, clients, checks.

Everything happens in a single thread through one event queue ordered by virtual
time, and every random choice comes from RNGs derived from the run's seed, so a run
is a pure function of its seed and its fault schedule: a failure replays exactly.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..confchange import ChangeOp, ConfChange
from ..driver import Failure, FailureCode
from ..node.wal import StorageCorruption
from ..raft import RaftConfig
from ..rawnode import PersistedState, Ready
from ..statemachine import ApplyResult, encode_command
from ..types import DropCode, Entry, EntryType, NodeId
from .disk import Disk
from .invariants import InvariantViolation, SafetyChecker
from .network import LinkProfile, SimNetwork
from .node import SimNode
from .store import SimStore

# -- client <-> node protocol (simulated RPCs) ---------------------------------


@dataclass(slots=True)
class ClientRequest:
    client: str
    req_id: int
    kind: str  # put | get | delete | cas
    key: str
    value: str | None = None
    expected: str | None = None
    session: tuple[str, int] | None = None  # (client id, sequence number)


@dataclass(slots=True)
class ClientResponse:
    req_id: int
    ok: bool
    # When not ok: "not_leader" (definitely not executed), "dropped" (definitely
    # not executed), "lost" (the entry was overwritten: not executed) or "unknown"
    # (a snapshot skipped the entry: it may have been executed).
    error: str | None = None
    leader: NodeId | None = None
    output: dict | None = None


@dataclass
class SimConfig:
    nodes: int = 3  # founding voters
    learners: int = 0  # founding learners besides them
    tick_ms: float = 10.0
    election_tick: int = 10
    heartbeat_tick: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    link: LinkProfile = field(default_factory=LinkProfile)
    disk_latency_ms: tuple[float, float] = (0.0, 0.0)
    snapshot_every: int = 0
    keep_entries: int = 10
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    snapshot_chunk_bytes: int = 256 << 10
    broadcast_commit: bool = True  # raft-node runs with False
    # A crash, or a cut of the link between two nodes (a partition, an isolation, a
    # one-way block), closes their connections: each side hears of it after a link
    # delay and reports its leader lost, as raft-node does on a closed socket. A cut
    # leaves the leader alive, so a follower must not unseat it on that report alone.
    close_notices: bool = False
    check_invariants: bool = True
    # The state machine as raft-node keeps it by default: in a store on disk whose
    # unsynced batches a crash may lose (raft_core/sim/store.py).
    stored_state: bool = False
    # A run that handles more events than this is livelocked (the busiest campaign
    # runs handle ~15k): it fails at once, naming its seed, instead of spinning.
    max_events: int = 250_000


class LivenessFailure(AssertionError):
    """A simulated run exhausted its event budget."""


class SimCluster:
    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        self.seed = seed
        self.cfg = config or SimConfig()
        self.rng = random.Random(seed)
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self.events_handled = 0
        self._seq = itertools.count()
        self.net = SimNetwork(random.Random(self.rng.getrandbits(64)), self.schedule, self.cfg.link)
        self.checker = SafetyChecker()
        self.nodes: dict[NodeId, SimNode] = {}
        self.removed: set[NodeId] = set()
        self.trace: list[str] = []
        self.trace_limit = 4000
        self.stats: dict[str, int] = {
            "elections": 0,
            "leaders": 0,
            "commits": 0,
            "leadership_transfers": 0,
            "membership_changes": 0,
            "snapshots_installed": 0,
            "snapshots_taken": 0,
            "crashes": 0,
            "partitions": 0,
            "corruptions_refused": 0,
            "pauses": 0,
            # Linearizable reads served by a follower or learner (ReadIndex through
            # the leader), and reads that failed (no leader, term change, expiry).
            "follower_reads": 0,
            "reads_failed": 0,
            "close_notices": 0,
            # The campaign's targeted actions (raft_core/sim/campaign.py).
            "figure8_crashes": 0,
            "joint_splits": 0,
            "liveness_windows": 0,
            "disk_stalls": 0,
            "images_made": 0,
        }
        self._conf_entries_seen: set[int] = set()
        self._client_seen: dict[NodeId, dict[str, int]] = {}
        self.apply_hooks: list[Callable[[NodeId, Entry, ApplyResult], None]] = []
        # Called after a node persisted a Ready, before its messages leave.
        self.persist_hooks: list[Callable[[SimNode, Ready], None]] = []
        # Called after a node sent what may leave before its write, before the write.
        self.early_send_hooks: list[Callable[[SimNode, Ready], None]] = []
        # Called when a node became leader (its no-op appended, not yet sent or written).
        self.elected_hooks: list[Callable[[SimNode], None]] = []
        # Called after a node stepped a message from a peer (and ran its Ready loop).
        self.receive_hooks: list[Callable[[SimNode, Any], None]] = []
        n_voters, n_all = self.cfg.nodes, self.cfg.nodes + self.cfg.learners
        ids = [f"n{i + 1}" for i in range(n_all)]
        for nid in ids:
            self._add(nid, PersistedState.bootstrap(ids[:n_voters], ids[n_voters:]))
        self._tick_all()

    # -- the event loop ------------------------------------------------------

    def schedule(self, delay_ms: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (self.now + delay_ms, next(self._seq), fn))

    def step(self) -> bool:
        if not self._queue:
            return False
        t, _, fn = heapq.heappop(self._queue)
        self.now = t
        self.events_handled += 1
        if self.events_handled > self.cfg.max_events:
            raise LivenessFailure(
                f"seed {self.seed}: event budget of {self.cfg.max_events} exhausted at "
                f"t={t:.1f}ms (a livelock?); replay: python -m raft_core.sim replay "
                f"--seed {self.seed}"
            )
        fn()
        return True

    def run_for(self, ms: float) -> None:
        end = self.now + ms
        while self._queue and self._queue[0][0] <= end:
            self.step()
        self.now = end

    def run_until(self, cond: Callable[[], bool], timeout_ms: float = 10_000) -> bool:
        end = self.now + timeout_ms
        while not cond():
            if not self._queue or self._queue[0][0] > end:
                self.now = max(self.now, end)
                return cond()
            self.step()
        return True

    def _tick_all(self) -> None:
        for node in list(self.nodes.values()):
            if node.up:
                node.tick()
        self.schedule(self.cfg.tick_ms, self._tick_all)

    def note(self, text: str) -> None:
        if len(self.trace) < self.trace_limit:
            self.trace.append(f"{self.now:10.1f}ms {text}")

    # -- nodes ---------------------------------------------------------------

    def _raft_config(self, nid: NodeId) -> RaftConfig:
        c = self.cfg
        return RaftConfig(
            id=nid,
            election_tick=c.election_tick,
            heartbeat_tick=c.heartbeat_tick,
            pre_vote=c.pre_vote,
            check_quorum=c.check_quorum,
            max_size_per_msg=c.max_size_per_msg,
            max_inflight_msgs=c.max_inflight_msgs,
            snapshot_chunk_bytes=c.snapshot_chunk_bytes,
            broadcast_commit=c.broadcast_commit,
        )

    def _add(self, nid: NodeId, state: PersistedState) -> SimNode:
        disk = Disk(state.hard_state, state.snapshot, list(state.entries))
        node = SimNode(
            nid,
            self._raft_config(nid),
            disk,
            random.Random(self.rng.getrandbits(64)),
            schedule=self.schedule,
            send=lambda m, nid=nid: self.net.send(nid, m.to, m, m.type.name),
            on_apply=self._on_apply,
            on_ready_persisted=self._on_persisted,
            on_write_done=self._on_write_done,
            on_sent_early=self._on_sent_early,
            on_read=self._on_read,
            on_request_failed=self._on_request_failed,
            disk_latency_ms=self.cfg.disk_latency_ms,
            snapshot_every=self.cfg.snapshot_every,
            keep_entries=self.cfg.keep_entries,
            store=(
                SimStore(random.Random(f"{self.seed}/{nid}")) if self.cfg.stored_state else None
            ),
        )
        self._hook_events(node)
        self.nodes[nid] = node
        self.net.attach(nid, lambda m, nid=nid: self._deliver(nid, m))
        return node

    def _hook_events(self, node: SimNode) -> None:
        def on_event(name: str, fields: dict, node: SimNode = node) -> None:
            if name == "election":
                self.stats["elections"] += 1
            elif name == "became_leader":
                self.stats["leaders"] += 1
                self._leader_elected(node)
            elif name == "snapshot_installed":
                self.stats["snapshots_installed"] += 1
            elif name == "snapshot_wanted":
                # The leader's snapshot is a checkpoint: make an image, as raft-node
                # does, later (not inside the engine's step).
                self.schedule(0, lambda i=node.incarnation: self._make_image(node, i))
            elif name == "transfer_started":
                self.stats["leadership_transfers"] += 1
            self.note(f"{node.id} {name} {fields}")

        node.raw.set_event_hook(on_event)

    def _make_image(self, node: SimNode, incarnation: int) -> None:
        if node.incarnation == incarnation and node.up and node.take_snapshot(image=True):
            self.stats["images_made"] += 1

    def add_node(self, nid: NodeId) -> SimNode:
        """A fresh process for a node that is about to be added to the cluster."""
        if nid in self.nodes:
            raise ValueError(f"{nid} exists")
        return self._add(nid, PersistedState.joining())

    def crash(self, nid: NodeId) -> None:
        node = self.nodes[nid]
        if not node.up:
            return
        node.crash()
        self.stats["crashes"] += 1
        self.note(f"{nid} CRASH")
        if self.cfg.close_notices:
            for other in self.nodes:
                if other != nid and self.net.reachable(nid, other):
                    self._notify_closed(other, nid)

    def _notify_closed(self, nid: NodeId, peer: NodeId) -> None:
        """``nid`` hears, after a link delay, that its connection to ``peer`` closed."""
        if not self.nodes[nid].up:
            return
        self.stats["close_notices"] += 1
        delay = self.rng.uniform(self.cfg.link.min_delay_ms, self.cfg.link.max_delay_ms)
        self.schedule(delay, lambda: self._connection_closed(self.nodes[nid], peer))

    def _connection_closed(self, node: SimNode, peer: NodeId) -> None:
        if node.up:
            node.raw.report_leader_lost(peer)
            node.process()

    def _cut(self, change: Callable[[], None]) -> None:
        """Apply a change to the network that blocks links; with close notices, the
        two ends of every node-to-node link it cut hear that the connection closed."""
        if not self.cfg.close_notices:
            change()
            return
        before = set(self.net.blocked)
        change()
        pairs = {
            tuple(sorted(link))
            for link in self.net.blocked - before
            if link[0] in self.nodes and link[1] in self.nodes
        }
        for a, b in sorted(pairs):
            self._notify_closed(a, b)
            self._notify_closed(b, a)

    def restart(self, nid: NodeId) -> None:
        node = self.nodes[nid]
        if node.up:
            return
        damaged = node.disk.damaged
        try:
            node.start()
        except StorageCorruption as e:
            if not damaged:
                raise InvariantViolation(f"{nid} refused an undamaged WAL: {e}") from e
            # Refusing is right; an operator restores the bytes and starts it again.
            self.stats["corruptions_refused"] += 1
            self.note(f"{nid} REFUSED TO START: {e}")
            node.disk.repair()
            node.start()
        else:
            if damaged:
                raise InvariantViolation(
                    f"{nid} started from a WAL whose acknowledged records are damaged"
                )
        self._hook_events(node)
        self.note(f"{nid} RESTART term={node.term} commit={node.raw.commit_index}")

    def pause(self, nid: NodeId) -> None:
        """Stop a process without killing it (SIGSTOP): its clock stops and what is
        sent to it waits; it resumes with everything it had, an old term included."""
        node = self.nodes[nid]
        if node.up and not node.paused:
            node.paused = True
            self.stats["pauses"] += 1
            self.note(f"{nid} PAUSE")

    def resume(self, nid: NodeId) -> None:
        node = self.nodes[nid]
        if not node.paused:
            return
        node.paused = False
        self.note(f"{nid} RESUME ({len(node.inbox)} waiting)")
        waiting, node.inbox = node.inbox, []
        for m in waiting:
            self._deliver(nid, m)

    def _deliver(self, nid: NodeId, m: Any) -> None:
        node = self.nodes[nid]
        if not node.up:
            return
        if node.paused:
            node.inbox.append(m)  # in the socket buffers until it resumes
            return
        if isinstance(m, ClientRequest):
            # A TCP connection does not deliver a request twice: drop network
            # duplicates and stale reordered attempts (a retry is a new attempt).
            seen = self._client_seen.setdefault(nid, {})
            if m.req_id <= seen.get(m.client, 0):
                return
            seen[m.client] = m.req_id
            self._handle_client_request(node, m)
        else:
            node.receive(m)
            for hook in self.receive_hooks:
                hook(node, m)

    # -- observation and invariants -----------------------------------------

    def _leader_elected(self, node: SimNode) -> None:
        if self.cfg.check_invariants:
            raw = node.raw
            self.checker.leader_elected(node.id, raw.term)
            self.checker.leader_complete(node.id, raw.term, raw.first_index(), raw.entry_at)
        for hook in self.elected_hooks:
            hook(node)

    def _on_sent_early(self, node: SimNode, rd: Ready) -> None:
        for hook in self.early_send_hooks:
            hook(node, rd)

    def _on_persisted(self, node: SimNode, rd: Ready, prev_term: int | None) -> None:
        for hook in self.persist_hooks:
            hook(node, rd)
        if not self.cfg.check_invariants:
            return
        ck = self.checker
        if rd.entries:
            ck.entries_persisted(node.id, rd.entries, prev_term)
        if rd.hard_state is not None:
            ck.term_observed(node.id, rd.hard_state.term)
            before = ck.last_commit.get(node.id, 0)
            ck.commit_observed(node.id, rd.hard_state.commit, node.raw.entry_at)
            if rd.hard_state.commit > before:
                self.stats["commits"] += rd.hard_state.commit - before

    def _on_apply(self, node: SimNode, e: Entry, result: ApplyResult) -> None:
        if self.cfg.check_invariants:
            if not node.disk.holds(e.index, e.term):
                # The state machine (and any snapshot taken of it) would run ahead of
                # the log a restart recovers: a crash now un-applies the entry here.
                raise InvariantViolation(
                    f"{node.id} applied {e.index}/{e.term} before persisting it "
                    f"(persisted through {node.disk.last_index()})"
                )
            self.checker.entry_applied(node.id, e)
        if (
            e.type is EntryType.CONF_CHANGE
            and e.index > 1
            and e.index not in self._conf_entries_seen
        ):
            self._conf_entries_seen.add(e.index)
            if not ConfChange.decode(e.data).is_leave_joint:
                self.stats["membership_changes"] += 1
        for hook in self.apply_hooks:
            hook(node.id, e, result)

    def check_transfer_answer(self, node: SimNode, leader: NodeId, term: int) -> None:
        if self.cfg.check_invariants:
            self.checker.transfer_answered(node.id, leader, term)

    def check_conf_change_answer(
        self, node: SimNode, index: int, term: int, *, took_effect: bool
    ) -> None:
        if self.cfg.check_invariants:
            self.checker.conf_change_answered(node.id, index, term, took_effect)

    def _on_write_done(self, node: SimNode, req: ClientRequest, result: ApplyResult) -> None:
        if result.error is not None:
            self._respond(node.id, req, ClientResponse(req.req_id, False, result.error.code))
        else:
            output = self._output(req, result.value)
            self._respond(node.id, req, ClientResponse(req.req_id, True, output=output))

    @staticmethod
    def _output(req: ClientRequest, value: Any) -> dict:
        if req.kind == "put":
            return {}
        if req.kind == "delete":
            return {"deleted": bool(value["deleted"])}
        return {"ok": bool(value["ok"]), "value": value["value"]}

    # -- serving clients (what the node server does over HTTP) ---------------

    def _handle_client_request(self, node: SimNode, req: ClientRequest) -> None:
        if req.kind == "get":
            node.driver.read(req)
            return
        if req.kind == "put":
            cmd = ["put", req.key, req.value]
        elif req.kind == "delete":
            cmd = ["del", req.key]
        else:
            cmd = ["cas", req.key, req.expected, req.value]
        cid, seq = req.session if req.session else (None, None)
        node.driver.submit(encode_command(cmd, cid, seq, int(self.now)), req)

    def _on_read(self, node: SimNode, req: ClientRequest, index: int) -> None:
        if not node.raw.is_leader:
            self.stats["follower_reads"] += 1
        value = node.kv.get(req.key)
        self._respond(node.id, req, ClientResponse(req.req_id, True, output={"value": value}))

    def _on_request_failed(self, node: SimNode, req: ClientRequest, failure: Failure) -> None:
        if req.kind == "get":
            self.stats["reads_failed"] += 1
        if failure.drop is DropCode.NOT_LEADER:
            error = "not_leader"
        elif failure.code is FailureCode.REPLACED:
            error = "lost"
        elif failure.indeterminate:
            error = "unknown"
        else:
            error = "dropped"
        self._respond(node.id, req, ClientResponse(req.req_id, False, error, failure.leader))

    def _respond(self, nid: NodeId, req: ClientRequest, resp: ClientResponse) -> None:
        self.net.send(nid, req.client, resp, "client_response")

    # -- conveniences for scenarios -----------------------------------------

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]

    def leaders(self) -> list[SimNode]:
        return [n for n in self.live() if n.raw.is_leader]

    def leader(self) -> SimNode | None:
        """The leader of the highest term among live nodes, if any."""
        ls = self.leaders()
        return max(ls, key=lambda n: n.term) if ls else None

    def wait_for_leader(
        self, timeout_ms: float = 10_000, among: set[NodeId] | None = None
    ) -> SimNode:
        def ok() -> bool:
            ls = [n for n in self.leaders() if among is None or n.id in among]
            return bool(ls)

        if not self.run_until(ok, timeout_ms):
            raise AssertionError(f"no leader within {timeout_ms} ms\n" + self.dump())
        ls = [n for n in self.leaders() if among is None or n.id in among]
        return max(ls, key=lambda n: n.term)

    def propose(self, data: bytes) -> tuple[int, int]:
        leader = self.leader()
        if leader is None:
            raise AssertionError("no leader to propose to")
        out = leader.raw.propose(data)
        leader.process()
        return out

    def change(self, *changes: tuple[ChangeOp, NodeId]) -> tuple[int, int]:
        leader = self.leader()
        if leader is None:
            raise AssertionError("no leader")
        return leader.propose_conf_change(ConfChange(list(changes)))

    def partition(self, *groups: list[NodeId] | set[NodeId]) -> None:
        self.stats["partitions"] += 1
        self._cut(lambda: self.net.partition(*groups))
        self.note(f"PARTITION {[sorted(g) for g in groups]}")

    def isolate(self, nid: NodeId) -> None:
        self.stats["partitions"] += 1
        self._cut(lambda: self.net.isolate(nid, list(self.nodes) + list(self.client_ids())))
        self.note(f"ISOLATE {nid}")

    def block(self, src: NodeId, dst: NodeId) -> None:
        """Block one direction only (its connection closes all the same)."""
        self.stats["partitions"] += 1
        self._cut(lambda: self.net.block(src, dst))
        self.note(f"BLOCK {src} -> {dst}")

    def heal(self) -> None:
        self.net.heal()
        self.note("HEAL")

    def client_ids(self) -> list[str]:
        return [e for e in self.net.receivers if e not in self.nodes]

    def committed_everywhere(self, index: int, nodes: list[NodeId] | None = None) -> bool:
        ids = nodes or [n.id for n in self.live()]
        return all(self.nodes[i].up and self.nodes[i].replica.applied_index >= index for i in ids)

    def dump(self) -> str:
        lines = [f"t={self.now:.1f}ms seed={self.seed}"]
        for nid, n in sorted(self.nodes.items()):
            if not n.up:
                lines.append(f"  {nid}: DOWN")
                continue
            st = n.raw.status()
            lines.append(
                f"  {nid}: {st.role} term={st.term} lead={st.leader} "
                f"commit={st.commit_index} applied={st.applied_index} "
                f"last={st.last_index}/{st.last_term} first={st.first_index} "
                f"voters={list(st.voters)} out={list(st.voters_outgoing)} "
                f"learners={list(st.learners)}"
            )
            for peer, p in (st.progress or {}).items():
                lines.append(
                    f"      -> {peer}: match={p.match} next={p.next} {p.state} "
                    f"inflight={p.inflight} active={p.recent_active} "
                    f"snap_acked={p.snapshot_bytes_acked}"
                )
        return "\n".join(lines)


__all__ = [
    "ClientRequest",
    "ClientResponse",
    "InvariantViolation",
    "LivenessFailure",
    "SimCluster",
    "SimConfig",
]
