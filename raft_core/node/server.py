"""RaftNode: the engine driven by real time, a durable disk and TCP peers.

The Ready loop itself is ``raft_core/driver.py``, shared with the simulator; this
module plugs in what production has: the WAL (fsynced on the loop thread or a disk
thread), TCP peers, asyncio, metrics, member addresses and the API's waiters.

It is also the library entry point: an application can run ``RaftNode`` inside its
own loop with its own ``StateMachine`` (the KV store is only the default) and call
``propose``/``read_barrier`` directly.

Throughput comes from group commit: client requests that arrive while the previous
batch is being fsynced (on a dedicated disk thread) are proposed together, written in
one WAL record with one fsync, and replicated in the same AppendEntries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack

from ..confchange import ChangeOp, ConfChange
from ..diskstate import STORE_FILE, DiskReplica, arm_crash_points, crash_point
from ..driver import Driver, DriverHooks, Failure, FailureCode
from ..kv import KVStore
from ..raft import RaftConfig
from ..rawnode import PersistedState, RawNode, Ready
from ..statemachine import ApplyResult, CommandError, Replica, StateMachine, encode_command
from ..status import NodeRole, RaftStatus
from ..types import ConfState, DropCode, EntryType, NodeId, Snapshot, SnapshotMeta
from .address import parse_address
from .config import NodeConfig
from .errors import BadRequest, Conflict, Forbidden, NodeError, NotLeader, Unavailable
from .faults import FaultRequest, check_peer_ids, merge
from .metrics import Registry
from .snapfile import SnapshotFileBuilder, snapshot_name
from .status import MemberAddress, NodeStatus
from .storage import DiskFull, DiskStorage, StorageError
from .tls import peer_tls_of
from .transport import PeerTransport

log = logging.getLogger("raft_core.node")

# How far past ``snapshot_entries`` a large state may defer its snapshot (see
# RaftNode._maybe_snapshot).
SNAPSHOT_WAIT_FACTOR = 4
# A snapshot image smaller than this is never deferred: it costs next to nothing, and
# an on-disk store's image has a fixed overhead of a few pages even when nearly empty.
SNAPSHOT_DEFER_MIN_BYTES = 64 << 10
# Each node snapshots after snapshot_entries times a factor in [1, 1 + this), fixed
# per node id, so that the members of a cluster do not all snapshot at the same index.
SNAPSHOT_JITTER = 0.3
# The engine's events worth a log line, and at what level; the rest are only counted
# (see RaftNode._on_engine_event).
_LOGGED_EVENTS = {
    "became_leader": logging.INFO,
    "stepped_down": logging.INFO,
    "check_quorum_step_down": logging.INFO,
    "transfer_aborted": logging.INFO,
    "auto_leave_deferred": logging.DEBUG,
    "conf_change_ignored": logging.WARNING,
}
# Applied batches are committed to the state store at most this often (and at every
# tick): an LMDB commit writes its dirty pages, about as costly as the batch itself.
STORE_COMMIT_S = 0.01
# An on-disk store's committed pages are written out this often, off the loop (see
# DiskReplica.flush).
STORE_FLUSH_S = 1.0
# A batch of more entries than this is never synced on the loop (see _WalWriter._offload).
LOOP_SYNC_MAX_ENTRIES = 256
# A loop stall at least this long is logged (the loop-lag probe measures them all).
LOOP_STALL_WARN_S = 0.05
# A WAL sync slower than this sends the next batch to the disk thread, so a slow disk
# never stalls the event loop (a healthy one syncs in well under a millisecond).
SLOW_FSYNC_S = 0.01


# -- membership addresses -------------------------------------------------------------


def _member_context(node: NodeId, peer: str | None, api: str | None) -> bytes:
    return msgpack.packb({"id": node, "peer": peer, "api": api})


def _decode_member_context(data: bytes) -> dict | None:
    if not data:
        return None
    try:
        ctx = msgpack.unpackb(data)
    except (ValueError, msgpack.ExtraData):
        return None
    return ctx if isinstance(ctx, dict) and isinstance(ctx.get("id"), str) else None


class RaftNode:
    def __init__(self, cfg: NodeConfig, state_machine: StateMachine | None = None) -> None:
        self.cfg = cfg
        self._request_timeout_s = cfg.request_timeout_ms / 1000
        self.id = cfg.id
        # The state machine: the on-disk KV by default, else the caller's (or the
        # in-memory KV with --state-store memory), all behind the Replica contract.
        self.replica: Replica
        if state_machine is not None:
            self.replica = Replica(state_machine)
        elif cfg.state_store == "lmdb":
            os.makedirs(cfg.data_dir, exist_ok=True)
            self.replica = DiskReplica(Path(cfg.data_dir) / STORE_FILE)
        else:
            self.replica = Replica(KVStore())
        self.sm: StateMachine = self.replica.sm
        self.state_store = (
            "custom" if state_machine is not None else cfg.state_store  # for status
        )
        if cfg.allow_fault_injection and arm_crash_points():
            log.warning("%s: crash point armed: %s", cfg.id, os.environ.get("RAFT_NODE_CRASH_AT"))
        self.snapshot_every = round(
            cfg.snapshot_entries * (1 + SNAPSHOT_JITTER * random.Random(cfg.id).random())
        )
        # The snapshot image writer: not the disk thread, whose WAL writes must not
        # queue behind a whole image.
        self._snap_pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"raft-snap-{cfg.id}"
        )
        self._snapshot_task: asyncio.Task | None = None
        self._incoming: _FileSnapshotBuffer | None = None  # a snapshot being received
        self._store_commit_at = 0.0
        self._store_flush_at = 0.0
        self._flushing = False
        self.loop_lag_s = 0.0  # the ticker's latest lateness
        self.loop_lag_max_s = 0.0
        self.metrics = Registry()
        self._init_metrics()
        self.storage: DiskStorage | None = None
        self.raw: RawNode
        self.driver: Driver[asyncio.Future]
        self.transport: PeerTransport
        self.addresses: dict[NodeId, MemberAddress] = {}
        self._loop: asyncio.AbstractEventLoop
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raft-disk-{cfg.id}")
        self._stopping = False
        self._fatal: BaseException | None = None
        # (deadline, future, is_write) in deadline order: every request gets the same
        # timeout, so appending keeps the queue sorted.
        self._deadlines: deque[tuple[float, asyncio.Future, bool]] = deque()
        self._tick_task: asyncio.Task | None = None
        self._snapshotting = False
        self.last_fsync_s = 0.0  # how long the latest WAL sync took
        self._last_snapshot_index = 0
        self._last_snapshot_bytes = 0  # 0 after a checkpoint
        self._last_image_bytes = 0
        self._applied_bytes = 0  # of entry payloads applied since the last snapshot
        self._started = time.monotonic()
        self._last_leader: NodeId | None = None

    # -- metrics ---------------------------------------------------------------

    def _init_metrics(self) -> None:
        m = self.metrics
        self.m_proposals = m.counter("raft_proposals_total", "Client commands proposed")
        self.m_proposals_failed = m.counter(
            "raft_proposals_failed_total", "Client commands refused or lost", "reason"
        )
        self.m_elections = m.counter("raft_elections_total", "Elections started by this node")
        self.m_leader_changes = m.counter("raft_leader_changes_total", "Leader changes seen")
        self.m_snapshots = m.counter(
            "raft_snapshots_total", "Snapshots taken locally (checkpoints and images)"
        )
        self.m_snapshot_images = m.counter(
            "raft_snapshot_images_total",
            "Snapshot images written locally (for a follower, an operator, or a state kept "
            "in memory; a store's other snapshots are checkpoints)",
        )
        self.m_snapshots_installed = m.counter(
            "raft_snapshots_installed_total", "Snapshots received from the leader"
        )
        self.m_batches = m.counter("raft_ready_batches_total", "Ready batches processed")
        self.m_fsync = m.histogram(
            "raft_fsync_seconds",
            "Duration of WAL fsyncs",
            [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
        )
        self.m_batch_entries = m.histogram(
            "raft_batch_entries",
            "Entries persisted per Ready batch",
            [1, 2, 4, 8, 16, 32, 64, 128, 512],
        )

        def status_value(read: Callable[[RaftStatus], int]) -> Callable[[], float]:
            return lambda: float(read(self.raw.status())) if hasattr(self, "raw") else 0.0

        m.gauge("raft_term", "Current term", status_value(lambda st: st.term))
        m.gauge("raft_commit_index", "Commit index", status_value(lambda st: st.commit_index))
        m.gauge("raft_applied_index", "Applied index", status_value(lambda st: st.applied_index))
        m.gauge("raft_last_index", "Last log index", status_value(lambda st: st.last_index))
        m.gauge(
            "raft_snapshot_index",
            "Index of the latest snapshot",
            status_value(lambda st: st.snapshot_index),
        )

        def roles() -> dict[str, float]:
            role = self.raw.status().role if hasattr(self, "raw") else None
            return {r.value: float(role is r) for r in NodeRole}

        m.gauge("raft_role", "1 for the role this node has", roles, label="role")
        m.gauge(
            "raft_messages_sent_total",
            "Raft messages sent, by type",
            lambda: dict(self.transport.stats.sent_messages) if hasattr(self, "transport") else {},
            label="type",
        )
        m.gauge(
            "raft_messages_received_total",
            "Raft messages received, by type",
            lambda: (
                dict(self.transport.stats.received_messages) if hasattr(self, "transport") else {}
            ),
            label="type",
        )
        m.gauge(
            "raft_messages_dropped_total",
            "Raft messages dropped by the transport, by reason",
            lambda: dict(self.transport.stats.dropped) if hasattr(self, "transport") else {},
            label="reason",
        )
        m.gauge(
            "raft_pending_proposals", "Client commands waiting", lambda: float(self.pending_count())
        )
        self.m_loop_lag = m.histogram(
            "raft_loop_lag_seconds",
            "How late the event loop ran the node's tick timer (a stall of the loop)",
            [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2],
        )
        m.gauge(
            "raft_loop_lag_max_seconds",
            "The largest loop lag seen since the node started",
            lambda: self.loop_lag_max_s,
        )
        self.m_snapshot_seconds = m.histogram(
            "raft_snapshot_seconds",
            "Time to take a snapshot (image written off the loop, then saved)",
            [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60],
        )
        m.gauge(
            "raft_snapshot_bytes",
            "Size of the latest snapshot image",
            lambda: float(self._last_image_bytes),
        )

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.cfg
        os.makedirs(cfg.data_dir, exist_ok=True)
        # Before 2026-12 images were written here first, then copied into snap/.
        shutil.rmtree(Path(cfg.data_dir) / "images", ignore_errors=True)
        self.storage = await self.run_on_disk(
            lambda: DiskStorage.open(cfg.data_dir, fsync=cfg.fsync, on_fsync=self._synced)
        )
        rec = self.storage.recovered
        fresh = rec.hard_state.term == 0 and rec.snapshot is None and not rec.entries
        if fresh and not cfg.join:
            founders = sorted(cfg.peers) if cfg.peers else [cfg.id]
            state = PersistedState.bootstrap(founders)
            await self.run_on_disk(self.storage.save, state.hard_state, state.entries, None)
            log.info("%s: founded a new cluster with voters %s", cfg.id, ", ".join(founders))
        elif fresh:
            state = PersistedState.joining()
            log.info("%s: empty node waiting to be added to a cluster", cfg.id)
        else:
            state = PersistedState(rec.hard_state, rec.snapshot, rec.entries)
            log.info(
                "%s: recovered term %d, commit %d, log %d..%d, snapshot %d",
                cfg.id,
                rec.hard_state.term,
                rec.hard_state.commit,
                (rec.snapshot.meta.index if rec.snapshot else 0) + 1,
                (rec.entries[-1].index if rec.entries else 0),
                rec.snapshot.meta.index if rec.snapshot else 0,
            )
        for node, peer in cfg.peers.items():
            self.addresses[node] = MemberAddress(peer, cfg.peer_apis.get(node))
        self.addresses[cfg.id] = MemberAddress(cfg.advertised_peer, cfg.advertised_api)
        if state.snapshot is not None:
            snap = state.snapshot
            behind = self.replica.applied_index < snap.meta.index
            if behind and not snap.data:
                raise StorageError(
                    f"{cfg.id}: the state store holds index {self.replica.applied_index}, "
                    f"behind the checkpoint at {snap.meta.index} that compacted the log: "
                    f"the store file ({STORE_FILE} in {cfg.data_dir}) was replaced or lost. "
                    "Nothing was changed. Restore that file, or remove the node from the "
                    "cluster, empty its data directory and add it back to copy the state "
                    "from the leader."
                )
            if behind:
                extra = await self.run_on_disk(self.replica.restore, snap.data)
            else:
                # The on-disk store already holds the snapshot (and maybe more, which
                # the log replays over without applying twice).
                extra = getattr(self.replica, "extra", None)
            self.adopt_snapshot(snap, extra)
        incoming = Path(cfg.data_dir) / "incoming"
        incoming.mkdir(exist_ok=True)
        for stale in incoming.iterdir():  # a transfer a crash cut short
            stale.unlink(missing_ok=True)
        self._incoming_dir = incoming
        raft_cfg = RaftConfig(
            id=cfg.id,
            election_tick=cfg.election_ticks,
            heartbeat_tick=cfg.heartbeat_ticks,
            broadcast_commit=cfg.broadcast_commit,
            snapshot_buffer=self._snapshot_buffer,
        )
        self.raw = RawNode(raft_cfg, state, random.Random())
        self.raw.set_event_hook(self._on_engine_event)
        self._last_snapshot_index = state.snapshot.meta.index if state.snapshot else 0
        self._last_snapshot_bytes = len(state.snapshot.data) if state.snapshot else 0
        host, port = parse_address(cfg.peer_listen, "--peer-listen", listen=True)
        self.transport = PeerTransport(
            cfg.id,
            host,
            port,
            on_message=self._on_message,
            on_unreachable=self._on_unreachable,
            on_disconnected=self._on_disconnected,
            cluster_secret=cfg.read_secret("cluster_secret_file"),
            tls=peer_tls_of(cfg),
        )
        self._update_peers()
        self.driver = Driver(
            self.raw,
            storage=_WalWriter(self),
            transport=self.transport,
            state=self.replica,
            call_soon=self._loop.call_soon,
            hooks=_NodeHooks(self),
        )
        await self.transport.start()
        self._tick_task = asyncio.create_task(self._ticker(), name=f"raft-tick-{cfg.id}")
        self._schedule()

    async def stop(self) -> None:
        self._stopping = True
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        await self.transport.close()
        self._fail_everything("the node is shutting down")
        if self._snapshot_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._snapshot_task
        # Wait for the disk thread to finish what it is doing, then close.
        await self.run_on_disk(lambda: None)
        if self.storage is not None:
            await self.run_on_disk(self.storage.close)
        self._disk.shutdown(wait=True)
        self._snap_pool.shutdown(wait=True)
        self.replica.close()

    async def _ticker(self) -> None:
        interval = self.cfg.tick_ms / 1000
        next_at = self._loop.time()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - self._loop.time()))
            # The loop-lag probe: how late this tick woke up is how long the loop was
            # busy elsewhere (a stall of the loop delays every timer alike).
            lag = max(0.0, self._loop.time() - next_at)
            self.loop_lag_s = lag
            if lag >= LOOP_STALL_WARN_S:
                log.warning("%s: the event loop was blocked for %.0f ms", self.id, lag * 1000)
            if lag > self.loop_lag_max_s:
                self.loop_lag_max_s = lag
            self.m_loop_lag.observe(lag)
            self._commit_store()  # what was applied since the last commit, if anything
            self._maybe_flush_store()
            if self._fatal is not None:
                return
            self.raw.tick()
            self._expire_requests()
            self._schedule()

    # -- inputs ----------------------------------------------------------------

    def _on_message(self, m) -> None:
        if self._fatal is not None or self._stopping:
            return
        self.raw.step(m)
        self._schedule()

    def _on_unreachable(self, node: NodeId) -> None:
        if self._fatal is None:
            self.raw.report_unreachable(node)
            self._schedule()

    def _on_disconnected(self, node: NodeId) -> None:
        # kill -9 of the leader closes its connections at once: its followers need
        # not wait out a whole election timeout (see Raft.report_leader_lost).
        if self._fatal is None and node == self.raw.leader:
            log.info("%s: the leader %s closed its connection", self.id, node)
            self.raw.report_leader_lost(node)

    def _on_engine_event(self, name: str, fields: dict) -> None:
        """The engine's one event stream: counted here, and logged here only."""
        if name == "election":
            self.m_elections.inc()
        elif name == "snapshot_installed":
            self.m_snapshots_installed.inc()
        elif name == "snapshot_wanted":
            self._image_wanted()
        level = _LOGGED_EVENTS.get(name)
        if level is not None:
            log.log(level, "%s: %s %s", self.id, name.replace("_", " "), fields)

    # -- the Ready loop (raft_core/driver.py) -------------------------------------

    def _schedule(self) -> None:
        if self._fatal is None and hasattr(self, "driver"):
            self.driver.kick()

    def _synced(self, seconds: float) -> None:
        """A WAL sync finished (on the loop or the disk thread): how long it took."""
        self.last_fsync_s = seconds
        self.m_fsync.observe(seconds)

    def persist(self, rd: Ready) -> None:
        """Write ``rd`` to the WAL (the caller picks the thread: see ``_WalWriter``)."""
        assert self.storage is not None
        self.storage.save(rd.hard_state, rd.entries, rd.snapshot, sync=rd.must_sync)

    def run_on_disk(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Run ``fn(*args)`` on the disk thread, after whatever it is doing now."""
        return self._loop.run_in_executor(self._disk, fn, *args)

    @property
    def snapshotting(self) -> bool:
        """Whether a snapshot is being written on the disk thread now."""
        return self._snapshotting

    @property
    def disk_full(self) -> Path | None:
        """The directory whose disk filled up, if that is why this node stopped serving."""
        return self._fatal.path if isinstance(self._fatal, DiskFull) else None

    def storage_failed(self, error: BaseException) -> None:
        """A failed disk write leaves the on-disk state unknown: stop, don't guess."""
        self._fatal = error
        log.critical(
            "%s: storage failed (%s); this node stops serving. %s",
            self.id,
            error,
            "It restarts by itself once the disk has room."
            if isinstance(error, DiskFull)
            else "Restart it: recovery will check the log and refuse to start if data is damaged.",
        )
        self._fail_everything(f"storage failure: {error}")
        if self._tick_task is not None:
            self._tick_task.cancel()

    def _fail_everything(self, why: str) -> None:
        """Answer every waiting request: the node stops (their writes may commit)."""
        self.driver.stop(Failure(FailureCode.SHUTDOWN, why))

    def error_for(self, failure: Failure) -> NodeError:
        """What the API answers for a write or read the driver could not complete."""
        if failure.not_leader:
            if failure.code is FailureCode.LEADERSHIP_LOST:
                return self._not_leader(failure.reason)
            return self._not_leader()
        return Unavailable(failure.reason, indeterminate=failure.indeterminate)

    def conf_change_error_for(self, failure: Failure) -> NodeError:
        """Like ``error_for``, but a change the engine refuses is the caller's to fix
        (400) or to retry later (409), not an outage."""
        if failure.code is not FailureCode.REFUSED or failure.drop is DropCode.NOT_LEADER:
            return self.error_for(failure)
        if failure.drop is DropCode.INVALID_CONF_CHANGE:
            return BadRequest(failure.reason)
        return Conflict(failure.reason)

    def transfer_error_for(self, failure: Failure) -> NodeError:
        """A refused transfer is a 409; an aborted one a 503 (not indeterminate: the
        old leader still leads)."""
        if failure.code is FailureCode.REFUSED:
            return Conflict(failure.reason)
        if failure.code is FailureCode.ABORTED:
            return Unavailable(failure.reason)
        return self.error_for(failure)

    def batch_done(self, rd: Ready, confs: list[ConfState]) -> None:
        """A Ready batch was acknowledged (``confs`` took effect): follow the member
        addresses, count a new leader, and snapshot when due."""
        self.m_batches.inc()
        for _, cc in rd.conf_changes:
            self._apply_member_context(cc)
        if confs:
            self._update_peers()
        if rd.soft_state is not None and self.raw.leader != self._last_leader:
            self._last_leader = self.raw.leader
            if self._last_leader is not None:
                self.m_leader_changes.inc()
        if rd.committed_entries and time.monotonic() - self._store_commit_at >= STORE_COMMIT_S:
            self._commit_store()
            self._applied_bytes += sum(len(e.data) for e in rd.committed_entries)
        self._maybe_snapshot()

    # -- proposals and reads ---------------------------------------------------

    def pending_count(self) -> int:
        return self.driver.pending_count() if hasattr(self, "driver") else 0

    def _not_leader(self, why: str = "this node is not the leader") -> NotLeader:
        lead = self.raw.leader
        lead = None if lead == self.id else lead
        addr = self.addresses.get(lead) if lead else None
        return NotLeader(why, leader=lead, leader_api=addr.api if addr else None)

    def _check_serving(self) -> None:
        if self._fatal is not None:
            raise Unavailable(f"storage failure: {self._fatal}", indeterminate=False)
        if self._stopping:
            raise Unavailable("the node is shutting down", indeterminate=False)

    def submit(
        self, command: Any, client_id: str | None = None, seq: int | None = None
    ) -> asyncio.Future[ApplyResult]:
        """Start replicating one state-machine command; a future of its result.

        The future gets the ApplyResult once the command is applied here, or
        Unavailable (indeterminate) at the request timeout. What cannot be taken at all
        (not the leader, overloaded, stopping) raises at once. The HTTP API answers
        from the future's callback; :meth:`propose` awaits it.
        """
        self._check_serving()
        if not self.raw.is_leader:
            raise self._not_leader()
        if self.pending_count() >= self.cfg.max_pending_proposals:
            self.m_proposals_failed.inc(label_value="overloaded")
            raise Unavailable("too many requests in flight; retry shortly", indeterminate=False)
        data = encode_command(command, client_id, seq, int(time.time() * 1000))
        fut: asyncio.Future[ApplyResult] = self._loop.create_future()
        self.m_proposals.inc()
        self.driver.submit(data, fut)
        self._track(fut, write=True)
        return fut

    async def propose(
        self, command: Any, client_id: str | None = None, seq: int | None = None
    ) -> ApplyResult:
        """Replicate one state-machine command; its result once applied here."""
        return await self.submit(command, client_id, seq)

    def _track(self, fut: asyncio.Future, *, write: bool) -> None:
        # One queue swept every tick instead of a timer per request (wait_for costs a
        # task and a timer handle per call, which shows on the hot path).
        self._deadlines.append((self._loop.time() + self._request_timeout_s, fut, write))

    def _expire_requests(self) -> None:
        """Fail requests past their deadline, and forget answered ones from the front.

        Requests are answered roughly in arrival order, so the front is mostly answered
        ones: dropping them every tick keeps only pending requests referenced. (Keeping
        every future for the whole timeout held tens of thousands of objects that each
        full garbage collection had to walk.)
        """
        now = self._loop.time()
        queue = self._deadlines
        while queue:
            deadline, fut, write = queue[0]
            if fut.done():
                queue.popleft()
                continue
            if deadline > now:
                break
            queue.popleft()
            fut.set_exception(
                Unavailable(
                    "timed out waiting for a quorum"
                    + ("; the write may still commit" if write else ""),
                    indeterminate=write,
                )
            )

    def submit_read(self) -> asyncio.Future[int]:
        """Start a linearizable read; a future of the index this node may serve it at.

        ReadIndex (dissertation 6.4): reads arriving together share one round of
        heartbeats, and the future is done once the applied index reaches the read
        index. A follower or learner asks its leader for the index (no clock
        involved); with no leader known, or outside the configuration (removed, or
        not yet joined), it raises NotLeader at once. A read the leader does not
        confirm in time fails as Unavailable, never with a stale answer.
        """
        self._check_serving()
        raw = self.raw
        if not raw.is_leader and (raw.leader is None or self.id not in raw.conf.members()):
            raise self._not_leader()
        fut: asyncio.Future[int] = self._loop.create_future()
        self.driver.read(fut)
        self._track(fut, write=False)
        return fut

    async def read_barrier(self) -> int:
        """Wait until this node can serve a linearizable read; the index it is at."""
        return await self.submit_read()

    # -- leadership --------------------------------------------------------------

    def _election_timeout_s(self) -> float:
        return self.cfg.tick_ms * self.cfg.election_ticks / 1000

    async def transfer_leadership(self, target: NodeId | None) -> tuple[NodeId, int]:
        self._check_serving()
        raw = self.raw
        if not raw.is_leader:
            raise self._not_leader()
        voters = raw.conf.all_voters()
        if target is None:
            candidates = [
                (pr.match, n)
                for n in voters
                if n != self.id and (pr := raw.progress(n)) is not None
            ]
            if not candidates:
                raise Conflict("no other voter to transfer leadership to")
            target = max(candidates)[1]
        if target == self.id:
            return self.id, raw.term
        if target not in voters:
            raise BadRequest(f"{target} is not a voter of this cluster")
        fut: asyncio.Future[tuple[NodeId, int]] = self._loop.create_future()
        self.driver.transfer_leadership(target, fut)
        # The engine aborts a transfer after an election timeout; this bounds the wait
        # should no leader emerge at all (this node cut off meanwhile).
        deadline = self._election_timeout_s() * 3
        try:
            return await asyncio.wait_for(fut, deadline)
        except TimeoutError:
            raise Unavailable(
                f"leadership did not move to {target} within {deadline:.1f}s and no other "
                "leader is known (is this node cut off from the cluster?)"
            ) from None

    def campaign(self) -> int:
        self._check_serving()
        if self.raw.is_leader:
            raise Conflict("this node is already the leader")
        if not self.raw.promotable():
            raise Conflict("this node is not a voter, so it cannot campaign")
        self.raw.campaign()
        self._schedule()
        return self.raw.term

    # -- membership ----------------------------------------------------------------

    async def change_membership(
        self, action: str, node: NodeId, peer_address: str | None, api_address: str | None
    ) -> dict:
        self._check_serving()
        if not self.raw.is_leader:
            raise self._not_leader()
        if action == "add_learner":
            if not peer_address:
                raise BadRequest("add_learner needs peer_address (where the new node listens)")
            try:
                parse_address(peer_address, "peer_address")
                if api_address:
                    parse_address(api_address, "api_address")
            except ValueError as e:
                raise BadRequest(str(e)) from None
            cc = ConfChange(
                [(ChangeOp.ADD_LEARNER, node)], _member_context(node, peer_address, api_address)
            )
        elif action == "promote":
            if node not in self.raw.conf.learners:
                raise BadRequest(f"{node} is not a learner; add it as a learner first")
            cc = ConfChange([(ChangeOp.ADD_VOTER, node)])
        elif action == "remove":
            cc = ConfChange([(ChangeOp.REMOVE, node)])
        else:
            raise BadRequest(f"unknown action {action!r}: use add_learner, promote or remove")
        fut: asyncio.Future[tuple[int, ConfState]] = self._loop.create_future()
        self.driver.submit_conf_change(cc, fut)
        # The entry's commit and, for a voter change, the end of the joint
        # configuration it enters each get the request timeout.
        timeout = 2 * self._request_timeout_s
        try:
            index, conf = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Unavailable(
                f"the configuration change did not take effect within {timeout:.0f}s; "
                "it may still: check the membership before retrying",
                indeterminate=True,
            ) from None
        return {"index": index, "voters": sorted(conf.voters), "learners": sorted(conf.learners)}

    def _apply_member_context(self, cc: ConfChange) -> None:
        ctx = _decode_member_context(cc.context)
        for op, node in cc.changes:
            if op is ChangeOp.REMOVE and node != self.id:
                self.addresses.pop(node, None)
            elif ctx is not None and ctx["id"] == node and isinstance(ctx.get("peer"), str):
                self.addresses[node] = MemberAddress(ctx["peer"], ctx.get("api"))

    def _update_peers(self) -> None:
        peers = {n: a.peer for n, a in self.addresses.items() if n != self.id}
        try:
            self.transport.set_peers(peers)
        except ValueError as e:
            log.error("%s: bad peer address in the membership: %s", self.id, e)

    # -- snapshots -------------------------------------------------------------------

    def _commit_store(self) -> None:
        """Commit the batches applied since the last commit, their sessions and the
        applied index, in one transaction (docs/design.md, "The on-disk state
        machine": a commit costs about as much as the batch it closes, so batches
        applied within STORE_COMMIT_S share one; the log replays what a crash loses)."""
        self.replica.commit()
        self._store_commit_at = time.monotonic()

    def _maybe_flush_store(self) -> None:
        flush = getattr(self.replica, "flush", None)
        now = time.monotonic()
        if flush is None or self._flushing or now - self._store_flush_at < STORE_FLUSH_S:
            return
        self._flushing, self._store_flush_at = True, now

        def done(fut: Any) -> None:  # on the snapshot thread
            self._flushing = False
            if fut.exception() is not None:  # the WAL still holds everything: retried
                log.error("%s: writing out the state store failed: %s", self.id, fut.exception())

        # On the snapshot thread: never alongside an image being written, nor in the
        # way of the WAL's thread.
        self._snap_pool.submit(flush).add_done_callback(done)

    def _snapshot_buffer(self, meta: SnapshotMeta) -> _FileSnapshotBuffer:
        """Where the engine keeps a snapshot it starts receiving (one at a time)."""
        if self._incoming is not None:
            self._incoming.close()
        self._incoming = _FileSnapshotBuffer(self._incoming_dir, meta)
        return self._incoming

    def adopt_snapshot(self, snap: Snapshot, extra: Any, leader: NodeId | None = None) -> None:
        """The state machine now holds ``snap``: take the member addresses it carried.

        Members the snapshot does not know were added after it: their additions follow
        in the log and bring their addresses again, so they are dropped for now. The
        leader is the exception: it may have joined after the snapshot it sends us, and
        forgetting it would cut us off from the one node whose entries reintroduce it
        (our acknowledgement of this very snapshot could not reach it).
        """
        if isinstance(extra, dict) and isinstance(extra.get("addresses"), dict):
            for node, (peer, api) in extra["addresses"].items():
                if node != self.id:
                    self.addresses[node] = MemberAddress(peer, api)
            keep = {self.id, leader, *extra["addresses"]}
            for node in list(self.addresses):
                if node not in keep:
                    del self.addresses[node]
        if snap.meta.index > self._last_snapshot_index:
            self._last_snapshot_index = snap.meta.index
            self._last_snapshot_bytes = len(snap.data)
            self._applied_bytes = 0
        if hasattr(self, "transport"):
            self._update_peers()

    def _maybe_snapshot(self) -> None:
        """Snapshot after this node's share of ``snapshot_entries`` applied entries, or
        later for a large state.

        A snapshot writes the whole state, so taking one every N entries costs
        O(state / N) per entry, which grows without bound with the state. Waiting
        until the payloads applied since the last snapshot add up to its size keeps the
        cost per entry bounded (each byte of log pays for at most one byte of
        snapshot); ``SNAPSHOT_WAIT_FACTOR`` bounds how long the log may grow meanwhile.
        The threshold carries a per-node jitter (``SNAPSHOT_JITTER``): members do not
        all write an image at the same index. At most one snapshot runs at a time: the
        task is remembered, so it is neither scheduled twice nor left unretrieved.
        """
        if self._snapshotting or self._snapshot_task is not None:
            return
        since = self.replica.applied_index - self._last_snapshot_index
        every = self.snapshot_every
        if since < every:
            return
        if (
            since < every * SNAPSHOT_WAIT_FACTOR
            and self._last_snapshot_bytes > SNAPSHOT_DEFER_MIN_BYTES
            and self._applied_bytes < self._last_snapshot_bytes
        ):
            return
        self._start_snapshot_task(image=False)

    def _start_snapshot_task(self, *, image: bool) -> None:
        task = self._loop.create_task(
            self.take_snapshot(image=image), name=f"raft-snapshot-{self.id}"
        )
        self._snapshot_task = task
        task.add_done_callback(self._snapshot_done)

    def _image_wanted(self) -> None:
        """The engine must send a follower a snapshot and holds a checkpoint: make an
        image (the engine asks again at the follower's next probe, so a request that
        finds a snapshot running is not lost)."""
        if self._snapshot_task is None and not self._snapshotting and self._fatal is None:
            self._start_snapshot_task(image=True)

    def _snapshot_done(self, task: asyncio.Task) -> None:
        self._snapshot_task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: snapshot failed: %s", self.id, task.exception())

    async def take_snapshot(self, *, image: bool = True) -> tuple[int, int]:
        """Snapshot the state machine at its applied index and compact the log.

        A store that keeps its own durable copy takes a checkpoint unless ``image``:
        the store is synced, and the snapshot records only that it holds everything
        through the index (no image: compaction costs O(writes), not O(state)). An
        image is made when a follower needs one (``snapshot_wanted``), an operator
        asks, or the state lives in memory. For an image the loop only captures a
        consistent view (a read transaction of the on-disk store, a fork of an
        in-memory one); the image is written into its file on the snapshot thread,
        then saved and the log compacted on the disk thread. The snapshot's data stays
        in that file: the leader streams chunks of it to followers without holding it
        in memory (docs/design.md, "Snapshots off the loop").
        """
        self._check_serving()
        if self._snapshotting:
            raise Conflict("a snapshot is already being taken")
        index = self.replica.applied_index
        with_image = image or not self.replica.checkpoints
        newer = index > self._last_snapshot_index or (
            index == self._last_snapshot_index and with_image and not self._last_snapshot_bytes
        )
        if not newer or self.raw.applied_index < index:
            # (After a restart the store may be ahead of the log being replayed over
            # it: the configuration as of its index is known once the replay gets there.)
            return self._last_snapshot_index, 0
        self._snapshotting = True
        started = time.monotonic()
        assert self.storage is not None
        storage = self.storage
        try:
            extra = {"addresses": {n: [a.peer, a.api] for n, a in self.addresses.items()}}
            meta = SnapshotMeta(index, self.replica.applied_term, self.raw.conf)
            if with_image:
                write_image = self.replica.snapshot_writer(extra=extra)
                snap = await self._loop.run_in_executor(
                    self._snap_pool, storage.write_snapshot_file, meta, write_image
                )
                self.m_snapshot_images.inc()
                self._last_image_bytes = len(snap.data)
            else:
                await self._loop.run_in_executor(
                    self._snap_pool, self.replica.checkpoint_writer(extra=extra)
                )
                snap = Snapshot(meta, b"")

            def save() -> None:
                storage.save_snapshot(snap)  # the WAL record naming the file written above
                crash_point("snapshot-saved")
                storage.compact(max(0, index - self.cfg.keep_entries))

            await self.run_on_disk(save)
            self.raw.compact(snap, self.cfg.keep_entries)
            self._last_snapshot_index = index
            self._last_snapshot_bytes = len(snap.data)
            self._applied_bytes = 0
            self.m_snapshots.inc()
            took = time.monotonic() - started
            self.m_snapshot_seconds.observe(took)
            if with_image:
                log.info(
                    "%s: snapshot at %d (%d bytes, %.2fs)", self.id, index, len(snap.data), took
                )
            else:
                log.debug("%s: checkpoint at %d (%.2fs)", self.id, index, took)
            return index, len(snap.data)
        except StorageError as e:
            self.storage_failed(e)
            raise Unavailable(f"storage failure: {e}") from None
        except OSError as e:
            # Writing the image failed (disk full, ...): the log is kept, retry later.
            log.error("%s: snapshot at %d failed: %s", self.id, index, e)
            raise Unavailable(f"snapshot failed: {e}") from None
        except ValueError as e:
            # e.g. a snapshot installed from the leader meanwhile is newer than ours.
            log.warning("%s: snapshot at %d skipped: %s", self.id, index, e)
            return self._last_snapshot_index, 0
        finally:
            self._snapshotting = False

    # -- introspection ---------------------------------------------------------------

    def status(self) -> NodeStatus:
        st = self.raw.status()
        addr = self.addresses.get(st.leader) if st.leader else None
        return NodeStatus(
            engine=st,
            leader_api=addr.api if addr else None,
            fsync=self.cfg.fsync,
            members=dict(self.addresses),
            uptime_s=round(time.monotonic() - self._started, 1),
            faults=self.fault_set(),
            healthy=self._fatal is None,
            peer_auth=self.transport.peer_auth,
            loop_lag_ms=(round(self.loop_lag_s * 1000, 1), round(self.loop_lag_max_s * 1000, 1)),
            state_store=self.state_store,
        )

    async def digest(self, at: int | None = None) -> dict:
        """The state digest now (its O(state) hash off the loop), or the chain at ``at``."""
        if at is None:
            fields, state_hash = self.replica.digest_view()
            return {**fields, "state_hash": await self._loop.run_in_executor(None, state_hash)}
        chain = self.replica.chain_at(at)
        if chain is None:
            raise BadRequest(
                f"the chain at index {at} is not retained here "
                f"(applied {self.replica.applied_index})"
            )
        term = self.raw.log_term(at)
        return {"applied_index": at, "applied_term": term, "chain": chain.hex()}

    def log_entries(self, start: int | None, end: int | None, limit: int = 1000) -> dict:
        raw = self.raw
        first, last = raw.first_index(), raw.last_index()
        lo = max(first, start if start is not None else first)
        hi = min(last, end if end is not None else last, lo + limit - 1)
        entries = []
        if lo <= hi:
            for e in raw.entries(lo, hi + 1):
                kind = (
                    "conf_change"
                    if e.type is EntryType.CONF_CHANGE
                    else ("noop" if not e.data else "normal")
                )
                entries.append(
                    {
                        "index": e.index,
                        "term": e.term,
                        "type": kind,
                        "digest": hashlib.sha256(e.data).hexdigest()[:16],
                    }
                )
        return {"first_index": first, "last_index": last, "entries": entries}

    def set_faults(self, req: FaultRequest) -> dict:
        """Apply a validated fault request (see :mod:`.faults`); the new fault set."""
        if not self.cfg.allow_fault_injection:
            raise Forbidden(
                "fault injection is disabled; start the node with --allow-fault-injection"
            )
        check_peer_ids(req, self.id, self.addresses)
        assert self.storage is not None
        if req.disk_delay_ms and self.storage.fsync_mode != "always":
            raise BadRequest(
                "disk_delay_ms slows WAL syncs, and this node runs with --fsync never "
                "(it never syncs): there is nothing to slow"
            )
        new = merge(req, self.fault_set())
        self.transport.set_faults(
            new.drop, new.delay_ms, drop_out=new.drop_out, drop_in=new.drop_in
        )
        self.storage.sync_delay_s = new.disk_delay_ms / 1000.0
        return self.fault_set()

    def fault_set(self) -> dict:
        """The transport's faults and the slow-disk delay, as the API reports them."""
        disk = self.storage.sync_delay_s if self.storage is not None else 0.0
        return {**self.transport.faults, "disk_delay_ms": round(disk * 1000)}


class _WalWriter:
    """The driver's storage: the WAL, fsynced on the loop thread or the disk thread."""

    def __init__(self, node: RaftNode) -> None:
        self.node = node

    def write(self, rd: Ready, done: Callable[[BaseException | None], None]) -> None:
        node = self.node
        if rd.snapshot is not None:
            # A received snapshot: saved, and its image staged beside the store, on the
            # disk thread; the driver's restore then only swaps files on the loop.
            snap = rd.snapshot
            stage = getattr(node.replica, "stage", None)

            def install() -> None:
                node.persist(rd)
                crash_point("install-saved")
                if stage is not None and snap.data:
                    stage(snap.data)

            fut = node.run_on_disk(install)
            fut.add_done_callback(lambda f: done(f.exception()))
            return
        if node.snapshotting or (rd.must_sync and node.cfg.fsync == "always" and self._offload(rd)):
            # While a snapshot is being written on the disk thread, every write
            # queues behind it: DiskStorage has one owner at a time.
            fut = node.run_on_disk(node.persist, rd)
            fut.add_done_callback(lambda f: done(f.exception()))
            return
        # The leader's appends are already on the wire (the transport writes from
        # the caller), so blocking here in fsync delays nobody but this loop.
        try:
            node.persist(rd)
        except Exception as e:
            done(e)
            return
        done(None)

    def _offload(self, rd: Ready) -> bool:
        """Whether to fsync on the disk thread rather than here: while client requests
        wait beyond this batch, or while the disk is slow.

        With requests waiting, the loop keeps reading and parsing them while the disk
        works, and they make the next group commit; fsyncing on the loop would leave
        them in the socket buffers and the next batch small. Otherwise (one client, a
        follower's appends) the hand-off costs more than it overlaps: measured at 64
        clients, syncing a follower's batches here cut its CPU per write from about 21
        to 15.5 us and the leader's from about 61 to 51 us (less contention for the
        two cores). A slow disk (the latest sync took over SLOW_FSYNC_S) is never
        waited for here: the loop must keep answering heartbeats and status. Nor is a
        large batch (a follower catching up takes 1 MB appends): its sync is the one
        that meets another process's writeback on a shared disk (a 1 MB batch synced
        here stalled a follower's loop 113 ms while the leader wrote an image).
        """
        node = self.node
        return (
            node.last_fsync_s > SLOW_FSYNC_S
            or len(rd.entries) > LOOP_SYNC_MAX_ENTRIES
            or node.driver.pending_count() > len(rd.entries)
        )


class _NodeHooks(DriverHooks[asyncio.Future]):
    """What RaftNode does around the shared Ready loop: each request's future is
    answered here, everything else goes to RaftNode's public methods."""

    def __init__(self, node: RaftNode) -> None:
        self.node = node

    def persisted(self, rd: Ready) -> None:
        if rd.entries:
            self.node.m_batch_entries.observe(len(rd.entries))

    def snapshot_restored(self, snapshot: Snapshot, extra: Any) -> None:
        self.node.adopt_snapshot(snapshot, extra, leader=self.node.raw.leader)

    def advanced(self, rd: Ready, confs: list[ConfState]) -> None:
        self.node.batch_done(rd, confs)

    def storage_failed(self, error: BaseException) -> None:
        self.node.storage_failed(error)

    def write_done(self, token: asyncio.Future, index: int, term: int, result: ApplyResult) -> None:
        if not token.done():
            token.set_result(result)

    def write_failed(self, token: asyncio.Future, failure: Failure) -> None:
        node = self.node
        if failure.code is FailureCode.REPLACED:
            node.m_proposals_failed.inc(label_value="lost")
        elif failure.code is FailureCode.REFUSED:
            node.m_proposals_failed.inc(label_value="refused")
        if not token.done():
            token.set_exception(node.error_for(failure))

    def read_ready(self, token: asyncio.Future, applied_index: int) -> None:
        if not token.done():
            token.set_result(applied_index)

    def read_failed(self, token: asyncio.Future, failure: Failure) -> None:
        if not token.done():
            token.set_exception(self.node.error_for(failure))

    def conf_change_done(self, token: asyncio.Future, index: int, conf: ConfState) -> None:
        if not token.done():
            token.set_result((index, conf))

    def conf_change_failed(self, token: asyncio.Future, failure: Failure) -> None:
        if not token.done():
            token.set_exception(self.node.conf_change_error_for(failure))

    def transfer_done(self, token: asyncio.Future, leader: NodeId, term: int) -> None:
        if not token.done():
            token.set_result((leader, term))

    def transfer_failed(self, token: asyncio.Future, failure: Failure) -> None:
        if not token.done():
            token.set_exception(self.node.transfer_error_for(failure))


class _FileSnapshotBuffer:
    """A snapshot being received, written to ``<data_dir>/incoming`` chunk by chunk
    (into the page cache: a chunk costs the loop a copy, never a sync) as a snapshot
    file (``SnapshotFileBuilder``): saving it moves that file into place instead of
    copying the image, and the image never sits on the heap. A new transfer drops the
    files of older ones (one still open keeps its data until closed)."""

    def __init__(self, directory: Path, meta: SnapshotMeta) -> None:
        for old in directory.iterdir():
            old.unlink(missing_ok=True)
        self._file = SnapshotFileBuilder(directory / snapshot_name(meta.index, meta.term), meta)

    def __len__(self) -> int:
        return self._file.size

    def extend(self, data: bytes) -> None:
        self._file.append(data)

    def finish(self, total: int) -> bytes:
        if total != self._file.size:  # more than announced: a peer speaking garbage
            self._file.truncate(total)
        snap = self._file.seal()
        self.close()
        return snap.data

    def close(self) -> None:
        self._file.close()


__all__ = [
    "BadRequest",
    "CommandError",
    "Conflict",
    "Forbidden",
    "NodeError",
    "NotLeader",
    "RaftNode",
    "Unavailable",
]
