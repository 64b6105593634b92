"""Chaos on a local NATS JetStream sandbox (``raft-manager nats up``).

Clients (threads, one NATS connection each) put to and read from the replicated KV
bucket while a seeded nemesis kills (SIGKILL, restart after a hold), pauses
(SIGSTOP/SIGCONT), steps down the meta or the KV stream's leader, and removes a server
from the peer set and adds a new one in its place. Every fault goes through the
manager, so each is guarded and audited like an operator's.

What the verdict can check (docs/design.md, "NATS JetStream"):

- *no acknowledged write lost*: a put acknowledged by the stream leader (a quorum
  stored it) must be what the final read of its key returns unless a later write of
  the key may have taken effect (``checks.lost_writes``);
- *linearizability* of the puts and the reads, which go through ``STREAM.MSG.GET``
  (answered by the stream leader). JetStream has no read index or leader lease, so a
  leader deposed a moment ago could answer a stale read: a violation found here is a
  property of that read path, and the verdict says so;
- the KV stream's replicas agree on sequences and counts after healing
  (``verify_consistency`` on group ``stream:KV_...``).

Compare-and-swap is not exercised: KV's compare is on a revision, not a value, which the
history checker does not model. Partitions and slow disks are not offered (no fault
API in nats-server).
"""

from __future__ import annotations

import base64
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from ..adapters.nats import KV_BUCKET, KV_STREAM, NatsAdapter
from ..adapters.nats_wire import NatsConnection
from ..core import ManagerError
from ..core.errors import NodeRequestError, Unreachable
from ..local.nats import NatsLocalCluster
from ..manager import Manager
from .checks import check_linearizable, lost_writes
from .models import Anomaly, ChaosVerdict, FaultEvent, OpCounts
from .timeline import write_timeline
from .workload import History, Op

KV_GROUP = f"stream:{KV_STREAM}"
# "transfer" is a step-down here: JetStream cannot hand leadership to a named server.
NEMESES = ("kill", "pause", "transfer", "membership")
NOTES = {
    "partition": "partition: not supported on nats (nats-server has no fault API)",
    "disk": "disk: not supported on nats (nats-server has no fault API)",
    "cas": "cas: not exercised (KV compares revisions, not values; the checker models values)",
}
HOLD_S = (1.5, 3.0)
GAP_S = 1.0
HEAL_S = 45.0
SETTLE_S = 20.0
REQUEST_TIMEOUT_S = 2.0


class _Client(threading.Thread):
    """Puts (unique values) and linearizable reads on the live keys until stopped."""

    def __init__(self, name: str, urls: list[str], history: History, seed: int) -> None:
        super().__init__(name=f"chaos-{name}", daemon=True)
        self.client, self.urls, self.history = name, urls, history
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.conn: NatsConnection | None = None
        self.n = 0

    def _connection(self) -> NatsConnection:
        if self.conn is None:
            for url in self.rng.sample(self.urls, len(self.urls)):
                try:
                    self.conn = NatsConnection(url, timeout=REQUEST_TIMEOUT_S)
                    break
                except ManagerError:
                    continue
            else:
                raise Unreachable("no server accepted a connection")
        return self.conn

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self) -> None:
        while not self.stop.is_set():
            key = self.rng.choice(self.history.live_keys())
            if self.rng.random() < 0.5:
                self.n += 1
                self.put(key, f"{self.client}-{self.n}")
            else:
                self.get(key)
        self._drop()

    def put(self, key: str, value: str) -> Op:
        op = self.history.begin(self.client, "put", key, value=value)
        try:
            msg = self._connection().request(
                f"$KV.{KV_BUCKET}.{key}", value.encode(), timeout=REQUEST_TIMEOUT_S
            )
            ack = msg.json()
            if "error" in ack:
                op.status, op.error = "fail", str(ack["error"])
            else:
                op.status, op.ret, op.output = "ok", self.history.now(), {}
        except NodeRequestError as e:  # no responders: nothing received it
            op.status, op.error = "fail", e.reason
        except Unreachable as e:  # timed out or cut: it may have been stored
            self._drop()
            op.status, op.error = "info", e.reason
        op.end, op.attempts = self.history.now(), 1
        return op

    def get(self, key: str) -> Op:
        op = self.history.begin(self.client, "get", key)
        body = f'{{"last_by_subj": "$KV.{KV_BUCKET}.{key}"}}'.encode()
        try:
            msg = self._connection().request(
                f"$JS.API.STREAM.MSG.GET.{KV_STREAM}", body, timeout=REQUEST_TIMEOUT_S
            )
            doc = msg.json()
            err = doc.get("error") or {}
            if err and err.get("code") != 404:
                op.status, op.error = "fail", str(err)
            else:
                value = None
                if not err:
                    value = base64.b64decode(doc["message"].get("data") or "").decode()
                op.status, op.ret, op.output = "ok", self.history.now(), {"value": value}
        except ManagerError as e:  # a read changes nothing: failed either way
            self._drop()
            op.status, op.error = "fail", e.reason
        op.end, op.attempts = self.history.now(), 1
        return op


def run_nats_chaos(
    mgr: Manager,
    directory: Path,
    *,
    duration_s: float,
    seed: int,
    clients: int,
    nemeses: list[str],
    out: Path,
    log=lambda s: None,
) -> ChaosVerdict:
    """One chaos run on the ``nats up`` cluster in ``directory``, start to verdict."""
    t0 = time.monotonic()
    adapter = mgr.adapter
    assert isinstance(adapter, NatsAdapter)
    adapter.ensure_bucket()
    lc = NatsLocalCluster.load(directory)
    history = History(prefix=f"chaos-{uuid.uuid4().hex[:8]}-")
    rng = random.Random(seed)
    kinds = [k for k in nemeses if k in NEMESES] or list(NEMESES)
    workers = [_Client(f"c{i}", lc.client_urls(), history, seed * 1000 + i) for i in range(clients)]
    for w in workers:
        w.start()
    events: list[FaultEvent] = []
    order = rng.sample(kinds, len(kinds))
    i = 0
    # Every kind asked for runs once whatever the duration (a short run on a loaded
    # machine still injects each); then more until the duration is used up.
    while i < len(order) or history.now() < duration_s:
        kind = order[i % len(order)]
        i += 1
        events.append(_fault(mgr, kind, rng, history, log))
        time.sleep(GAP_S)
    for w in workers:
        w.stop.set()
    for w in workers:
        w.join(timeout=10)
    healed = _heal(mgr, directory)
    final = _Client("final", NatsLocalCluster.load(directory).client_urls(), history, seed)
    final_reads: dict[str, Op] = {}
    for key in sorted({op.key for op in history.ops}):
        for _ in range(5):
            final_reads[key] = final.get(key)
            if final_reads[key].status == "ok":
                break
            time.sleep(0.5)
    final._drop()
    report = mgr.verify_consistency(group=KV_GROUP)
    check, anomalies = check_linearizable(history.ops)
    anomalies += lost_writes(history.ops, final_reads)
    if not healed:
        anomalies.append(Anomaly(kind="not-converged", message="the KV group did not heal"))
    if report.consistent is False:
        anomalies += [Anomaly(kind="divergence", message=d.detail) for d in report.divergences]
    elif report.consistent is None:
        anomalies.append(Anomaly(kind="unverified", message="; ".join(report.reasons)))
    status = Counter(op.status for op in history.ops)
    history_path, timeline_path = out / "history.jsonl", out / "timeline.html"
    notes = [NOTES[k] for k in ("partition", "disk") if k in nemeses] + [NOTES["cas"]]
    if check == "violation":
        notes.append(
            "the reads are STREAM.MSG.GET on the stream leader, which JetStream serves without "
            "a read index or lease: a stale read after a leader change is possible by design"
        )
    verdict = ChaosVerdict(
        ok=not anomalies,
        linearizable=check == "ok",
        check=check,  # type: ignore[arg-type]
        anomalies=anomalies,
        seed=seed,
        duration_s=duration_s,
        elapsed_s=round(time.monotonic() - t0, 1),
        nemeses=kinds,
        notes=notes,
        cluster=str(directory),
        kind="nats",
        nodes=sorted(s.name for s in NatsLocalCluster.load(directory).servers),
        counts=OpCounts(
            operations=len(history.ops),
            ok=status["ok"],
            failed=status["fail"],
            indeterminate=status["info"],
            by_kind=dict(sorted(Counter(op.kind for op in history.ops).items())),
        ),
        faults=dict(sorted(Counter(e.kind for e in events if e.applied).items())),
        faults_refused=sum(not e.applied for e in events),
        fault_events=events,
        membership_via="manager (change_membership remove/add_voter; elect_leader step-downs)",
        consistent=report.consistent,
        common_index=report.common_index,
        history_path=str(history_path),
        timeline_path=str(timeline_path),
        out_dir=str(out),
        logs=sorted(str(p) for p in directory.glob("*.log")),
    )
    history.save(history_path)
    write_timeline(timeline_path, verdict, history.ops, events)
    (out / "verdict.json").write_text(verdict.model_dump_json(indent=2) + "\n")
    return verdict


def _fault(mgr: Manager, kind: str, rng: random.Random, history: History, log) -> FaultEvent:
    """Inject one fault through the manager, hold it, heal it; what happened. Each
    starts from a healed cluster (the previous fault's server current again), so the
    manager's guardrails judge this fault, not the tail of the last one."""
    start = history.now()
    _wait_healed(mgr, SETTLE_S, writes_stopped=False)
    st = mgr.status(group=KV_GROUP)
    up = sorted(m.id for m in st.members if m.reachable)
    leader = st.leader
    targets: list[str] = []
    variant = kind
    try:
        if kind in ("kill", "pause") and up:
            victim = leader if leader and rng.random() < 0.5 else rng.choice(up)
            variant = f"{kind}-{'leader' if victim == leader else 'follower'}"
            targets = [victim]
            mgr.inject_fault("kill" if kind == "kill" else "stop", targets)
            time.sleep(rng.uniform(*HOLD_S))
            if kind == "kill":
                mgr.recover_node(victim, timeout_s=30)
            else:
                mgr.inject_fault("continue", targets)
            detail = f"{variant} {victim}, then healed"
        elif kind == "transfer":
            group = KV_GROUP if rng.random() < 0.5 else None
            r = mgr.elect_leader(group=group).result
            variant = f"step-down-{'kv' if group else 'meta'}"
            targets = [r.previous_leader] if r.previous_leader else []
            detail = f"{r.previous_leader} stepped down; {r.leader} leads {group or 'meta'}"
        else:
            # A follower in both the KV group and the meta group: the removal is then
            # judged on a cluster that still has its leaders.
            meta_leader = mgr.status().leader
            victim = rng.choice([m for m in up if m not in (leader, meta_leader)] or up)
            targets = [victim]
            variant = "replace"
            mgr.inject_fault("kill", targets)
            mgr.change_membership("remove", victim, dry_run=False)
            new = _fresh_name(mgr)
            mgr.change_membership("add_voter", new, dry_run=False, catch_up_timeout_s=30)
            targets.append(new)
            detail = f"{victim} killed, removed from the peer set, replaced by {new}"
        applied = True
    except ManagerError as e:
        applied, detail = False, f"{variant}: {e.reason}"
    log(f"{history.now():7.1f}s  {detail}")
    return FaultEvent(
        kind=kind,
        variant=variant,
        targets=targets,
        start=start,
        end=history.now(),
        applied=applied,
        detail=detail,
    )


def _fresh_name(mgr: Manager) -> str:
    used = {m.id for m in mgr.status().members}
    used |= {s.name for s in NatsLocalCluster.load(Path(str(mgr.cluster.dir))).servers}
    n = 1
    while f"n{n}" in used:
        n += 1
    return f"n{n}"


def _heal(mgr: Manager, directory: Path) -> bool:
    """Continue paused servers, restart dead ones; until the KV group is healthy."""
    lc = NatsLocalCluster.load(directory)
    for s in lc.servers:
        if lc.frozen(s):
            mgr.inject_fault("continue", [s.name])
        elif not lc.alive(s):
            mgr.recover_node(s.name, timeout_s=30)
    return _wait_healed(mgr, HEAL_S, writes_stopped=True)


def _wait_healed(mgr: Manager, wait_s: float, *, writes_stopped: bool) -> bool:
    """Until the KV group has no warnings and, once writes stopped, every replica
    stored the same last sequence (a replica that was paused reports itself current a
    moment before it has caught up)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        st = mgr.status(group=KV_GROUP)
        seqs = {m.last_index for m in st.members if m.voter}
        if not st.warnings and (not writes_stopped or (len(seqs) == 1 and None not in seqs)):
            return True
        time.sleep(0.5)
    return False
