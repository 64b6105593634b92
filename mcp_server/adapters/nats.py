"""The NATS JetStream adapter: one cluster, many Raft groups (docs/design.md, "NATS").

A JetStream cluster runs a *meta* group (cluster-wide metadata: which streams and
consumers exist and where their replicas live) and one Raft group per replicated stream
(``stream:NAME``) and per consumer (``consumer:STREAM/NAME``). The adapter reads them
from each server's monitoring port and acts through the JetStream API over NATS:

- each server's ``/varz`` gives its ``server_name`` (the member id) and version,
  ``/healthz`` its own health, and ``/jsz?accounts=true&streams=true&consumers=true
  &config=true`` (2.9) its view of the meta group (leader, cluster size; the meta
  leader also lists its followers with ``current``/``lag``/``offline``) and, for every
  stream and consumer it holds a replica of, that group's leader, the other replicas
  and *its own* replica's state (messages, bytes, first and last sequence);
- the member statuses the generic operations see are one group's (``for_group``): the
  meta group by default, so quorum, lag and the caught-up rule of ``core/view.py``
  apply unchanged to every group. JetStream exposes no Raft terms or log indexes: a
  stream group's index is its last sequence, the meta group has none, and
  ``current``/``lag`` from the group leader stand in for replication progress;
- leadership moves only by a step-down (``$JS.API.META.LEADER.STEPDOWN``,
  ``STREAM.LEADER.STEPDOWN``, ``CONSUMER.LEADER.STEPDOWN``); 2.9's placement names a
  cluster or tags, never a server, so a step-down to a named server is refused;
- membership: a server joins by starting with routes to the others (no learners, no
  promotion); ``$JS.API.SERVER.REMOVE`` (system account) takes one out of the meta
  peer set, after which the meta leader re-places its stream replicas;
- data goes through the replicated KV bucket ``KV_BUCKET`` (R3, or the cluster size
  if smaller): a put is acknowledged by the stream leader once a quorum stored it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from raft_core.status import ProgressStatus

from ..core.errors import InputError, ManagerError, NodeRequestError, NotSupported, Unreachable
from ..core.port import (
    ClusterAdapter,
    ConfResult,
    MemberStatus,
    ReadOutcome,
    StateDigest,
    WriteResult,
)
from ..local.nats import get_json
from .nats_processes import NatsProcesses
from .nats_wire import NatsConnection
from .processes import SweptStatuses

T = TypeVar("T")
META = "meta"
KV_BUCKET = "raft-manager"
KV_STREAM = f"KV_{KV_BUCKET}"
KEY_RE = re.compile(r"^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$")
STATUS_TIMEOUT = 2.0
LEADER_WAIT_S = 10.0
JSZ = "/jsz?accounts=true&streams=true&consumers=true&config=true"
NO_TARGET = (
    "nats-server {version} cannot hand leadership to a named server: a step-down's "
    "placement selects a cluster or tags, not a server, so the group elects whichever "
    "current peer wins; elect without a target to step the leader down"
)


@dataclass
class Server:
    """One server as its monitoring port answered (or did not)."""

    url: str
    name: str
    reachable: bool = False
    error: str | None = None
    version: str | None = None
    health: str | None = None  # None: ok; else the /healthz error
    jsz: dict = field(default_factory=dict)


@dataclass
class Group:
    """One Raft group as the servers describe it."""

    name: str
    leader: str | None = None
    members: set[str] = field(default_factory=set)
    # The leader's view of each follower: current, lag, offline.
    replicas: dict[str, dict] = field(default_factory=dict)
    # Each reporting server's own view: leader it names, its replica's state.
    views: dict[str, dict] = field(default_factory=dict)


def group_kind(name: str) -> str:
    return name.split(":", 1)[0]


def _replica_index(kind: str, doc: dict) -> int | None:
    if kind == "stream":
        return int((doc.get("state") or {}).get("last_seq") or 0)
    if kind == "consumer":
        return int((doc.get("delivered") or {}).get("stream_seq") or 0)
    return None


def scan_groups(servers: dict[str, Server]) -> dict[str, Group]:
    """Every Raft group the reachable servers report, by name (``meta`` first)."""
    groups: dict[str, Group] = {META: Group(META)}
    meta = groups[META]
    for name, s in servers.items():
        if not s.reachable:
            continue
        mc = s.jsz.get("meta_cluster") or {}
        if not mc:
            continue  # JetStream off (e.g. removed from the peer set)
        meta.views[name] = {"leader": mc.get("leader"), "cluster_size": mc.get("cluster_size")}
        meta.members.add(name)
        if mc.get("leader") == name:
            meta.leader = name
            meta.replicas = {r["name"]: r for r in mc.get("replicas") or []}
            meta.members |= set(meta.replicas)
        for acct in s.jsz.get("account_details") or []:
            for sd in acct.get("stream_detail") or []:
                _add_view(groups, f"stream:{sd['name']}", name, sd)
                for cd in sd.get("consumer_detail") or []:
                    _add_view(groups, f"consumer:{sd['name']}/{cd['name']}", name, cd)
    if meta.leader is None:
        named = [v["leader"] for v in meta.views.values() if v.get("leader")]
        meta.leader = max(set(named), key=named.count) if named else None
        if meta.leader:
            meta.members.add(meta.leader)
    return groups


def _add_view(groups: dict[str, Group], gname: str, server: str, doc: dict) -> None:
    g = groups.setdefault(gname, Group(gname))
    cl = doc.get("cluster") or {}
    leader = cl.get("leader")
    g.views[server] = {"leader": leader, "index": _replica_index(group_kind(gname), doc), **doc}
    g.members.add(server)
    for r in cl.get("replicas") or []:
        g.members.add(r["name"])
    if leader:
        g.members.add(leader)
        if leader == server or g.leader is None:
            g.leader = leader
        if leader == server:
            g.replicas = {r["name"]: r for r in cl.get("replicas") or []}


class NatsAdapter(SweptStatuses, ClusterAdapter):
    kind = "nats"
    service = "nats-server"
    supports_campaign = False
    supports_log_digests = False
    supports_faults = False  # no network partitions; kill/stop/continue on local servers
    supports_state_history = False
    supports_groups = True
    supports_step_down = True
    supports_transfer_target = False
    supports_learners = False
    joins_by_starting = True
    snapshot_whole_group = True

    def __init__(
        self,
        *,
        servers: list[str] | None = None,
        monitor: list[str] | None = None,
        processes: NatsProcesses | None = None,
        username: str | None = None,
        password: str | None = None,
        backup_dir: str | Path | None = None,
        group: str = META,
    ) -> None:
        if not monitor and processes is None:
            raise ValueError("a NATS cluster needs monitor URLs (or a local dir)")
        self.processes: NatsProcesses | None = processes
        self.can_control_processes = processes is not None
        self.server_urls = list(servers or [])
        self.monitor_urls = list(monitor or [])
        self.username, self.password = username, password
        self.backup_dir = Path(backup_dir) if backup_dir else None
        self.group = group
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="nats-adapter")
        self._conns: dict[str, NatsConnection] = {}
        self._lock = threading.Lock()
        self._version = "2.9"
        self._names: dict[str, str] = {}  # monitor URL -> server name, once seen
        self._bucket_ok = False

    def for_group(self, group: str | None) -> NatsAdapter:
        """This adapter seen through one Raft group (the operations' ``group``)."""
        if group is None or group == self.group:
            return self
        if group != META and not re.match(r"^(stream:[^/]+|consumer:[^/]+/[^/]+)$", group):
            raise InputError(
                f"bad group {group!r}",
                "name `meta`, `stream:NAME` or `consumer:STREAM/NAME` (see cluster_status)",
            )
        scoped = copy.copy(self)
        scoped.group = group
        return scoped

    def close(self) -> None:
        with self._lock:
            for c in self._conns.values():
                c.close()
            self._conns.clear()
        self._pool.shutdown(wait=False)

    # -- where the servers are -------------------------------------------------------------

    def _monitors(self) -> dict[str, str]:
        """Monitor URL -> the name to use while the server does not answer."""
        out = {u.rstrip("/"): self._names.get(u.rstrip("/"), u) for u in self.monitor_urls}
        if self.processes is not None:
            out.update(self.processes.monitors())
        return out

    def _client_urls(self) -> list[str]:
        urls = list(self.server_urls)
        if self.processes is not None:
            urls += self.processes.client_urls()
        return list(dict.fromkeys(urls))

    def _fetch(self, url: str, fallback: str) -> Server:
        s = Server(url, fallback)
        try:
            varz = get_json(f"{url}/varz", STATUS_TIMEOUT)
            s.name = varz.get("server_name") or fallback
            s.version = varz.get("version")
            s.jsz = get_json(f"{url}{JSZ}", STATUS_TIMEOUT)
            s.reachable = True
        except (OSError, ValueError) as e:
            s.error = f"monitoring port {url} does not answer ({getattr(e, 'reason', e)})"
            return s
        try:
            health = get_json(f"{url}/healthz", STATUS_TIMEOUT)
            if health.get("status") != "ok":
                s.health = str(health.get("error") or health)
        except (OSError, ValueError) as e:
            s.health = f"/healthz: {getattr(e, 'reason', e)}"
        return s

    def servers(self) -> dict[str, Server]:
        monitors = self._monitors()
        found = list(self._pool.map(lambda kv: self._fetch(*kv), monitors.items()))
        out = {}
        for s in found:
            out[s.name] = s
            if s.reachable:
                self._names[s.url] = s.name
                self._version = s.version or self._version
        return out

    def groups(self) -> dict[str, Group]:
        """Every Raft group, as the servers report it now."""
        return scan_groups(self.servers())

    # -- observation -----------------------------------------------------------------------------

    def statuses(self) -> dict[str, MemberStatus]:
        servers = self.servers()
        groups = scan_groups(servers)
        g = groups.get(self.group)
        if g is None:
            known = ", ".join(sorted(groups))
            raise ManagerError(
                f"no Raft group {self.group!r} in this cluster",
                f"groups: {known} (see `raft-manager status`)",
            )
        return self._decorate(group_statuses(g, servers))

    def group_statuses_all(self) -> dict[str, dict[str, MemberStatus]]:
        servers = self.servers()
        out = {n: group_statuses(g, servers) for n, g in scan_groups(servers).items()}
        self._decorate(out[META])
        return out

    def state_digest(self, node: str, at: int | None = None) -> StateDigest:
        """A stream replica's state as its own server reports it (first and last
        sequence, message and byte counts); the index is its last sequence."""
        kind = group_kind(self.group)
        if kind != "stream":
            raise NotSupported(
                f"the {self.group} group's replicated state is not exposed by the servers",
                "verify a stream group (group `stream:NAME`)",
            )
        servers = self.servers()
        s = servers.get(node)
        g = scan_groups(servers).get(self.group)
        view = g.views.get(node) if g else None
        if s is None or not s.reachable or view is None:
            raise Unreachable(f"{node} does not report {self.group}")
        st = view.get("state") or {}
        facts = {k: st.get(k) for k in ("first_seq", "last_seq", "messages", "bytes")}
        if at is not None and at != facts["last_seq"]:
            raise NotSupported(f"{node} stands at sequence {facts['last_seq']}, not {at}")
        text = json.dumps(facts, sort_keys=True)
        return StateDigest(int(facts["last_seq"] or 0), None, text, _sha(text.encode()))

    def current_state_notes(self, revision: int) -> list[str]:
        notes = [
            f"compared each replica's first and last sequence, message and byte counts as "
            f"its own server reported them at last sequence {revision}"
        ]
        if self.group == f"stream:{KV_STREAM}":
            try:
                rev, digest, keys = self.kv_hash()
                notes.append(
                    f"KV bucket {KV_BUCKET}: {keys} key(s) at revision {rev} hash to "
                    f"{digest} (read through the stream leader)"
                )
            except ManagerError as e:
                notes.append(f"KV bucket {KV_BUCKET} could not be hashed: {e.reason}")
        notes.append(
            "NATS cannot prove more: the JetStream API reads a message only from the stream "
            "leader (or any replica, unnamed, for direct gets), so no replica's contents can "
            "be hashed on their own, and it exposes no Raft log or terms; equal counts and "
            "sequences at one point are the evidence, not a proof of equal contents"
        )
        return notes

    # -- the JetStream API over NATS ------------------------------------------------------------

    def _conn(self, system: bool = False) -> NatsConnection:
        """A connection to any server that answers (the system account's when asked)."""
        key = "sys" if system else "app"
        with self._lock:
            c = self._conns.get(key)
            if c is not None:
                return c
        if system and self.username is None:
            raise InputError(
                "this operation needs the NATS system account",
                "set `username` and `password_file` (or `password_env`) for a system-account "
                "user in clusters.yaml",
            )
        last: ManagerError | None = None
        for url in self._client_urls():
            try:
                c = (
                    NatsConnection(url, user=self.username, password=self.password)
                    if system
                    else NatsConnection(url)
                )
            except ManagerError as e:
                last = e
                continue
            with self._lock:
                self._conns[key] = c
            return c
        raise Unreachable(
            "no NATS server accepted a connection"
            + (f" (last error: {last.reason})" if last else ""),
            "check `servers` in clusters.yaml and that nats-server runs",
        )

    def _drop(self, system: bool) -> None:
        with self._lock:
            c = self._conns.pop("sys" if system else "app", None)
        if c is not None:
            c.close()

    def _retrying(self, call: Callable[[NatsConnection], T], *, system: bool, wait_s: float) -> T:
        """``call`` on a connection, retried on another server while none answers or the
        group has no leader yet (503: no responders), for up to ``wait_s``. A publish
        retried after a lost answer carries the same ``Nats-Msg-Id``, which JetStream
        deduplicates."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return call(self._conn(system))
            except Unreachable:
                self._drop(system)
                if time.monotonic() >= deadline:
                    raise
            except NodeRequestError as e:
                if e.status != 503 or time.monotonic() >= deadline:
                    raise
            time.sleep(0.2)

    def api(
        self,
        subject: str,
        body: dict | None = None,
        *,
        system: bool = False,
        wait_s: float = LEADER_WAIT_S,
    ) -> dict:
        """One JetStream API call (``$JS.API.<subject>``), retried as ``_retrying`` says."""
        return self._retrying(
            lambda c: c.api(subject, body, timeout=min(5.0, wait_s)), system=system, wait_s=wait_s
        )

    # -- data: the KV bucket ----------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the KV bucket's stream on first use (asked once per adapter)."""
        if self._bucket_ok:
            return
        try:
            self.api(f"STREAM.INFO.{KV_STREAM}")
            self._bucket_ok = True
            return
        except NodeRequestError as e:
            if e.status != 404:
                raise
        size = max(1, len([s for s in self.servers().values() if s.reachable]))
        self.api(
            f"STREAM.CREATE.{KV_STREAM}",
            {
                "name": KV_STREAM,
                "subjects": [f"$KV.{KV_BUCKET}.>"],
                "num_replicas": min(3, size),
                "max_msgs_per_subject": 1,
                "discard": "new",
                "deny_delete": True,
                "allow_rollup_hdrs": True,
                "allow_direct": True,
                "storage": "file",
                "duplicate_window": 120_000_000_000,
            },
        )
        self._bucket_ok = True

    def _publish(self, key: str, value: bytes, headers: dict[str, str] | None) -> WriteResult:
        _check_key(key)
        self.ensure_bucket()
        msg = self._retrying(
            lambda c: c.request(f"$KV.{KV_BUCKET}.{key}", value, headers=headers),
            system=False,
            wait_s=LEADER_WAIT_S,
        )
        ack = msg.json()
        if "error" in ack:
            err = ack["error"]
            raise NodeRequestError(f"the KV put was refused: {err.get('description', err)}")
        return WriteResult(int(ack["seq"]), 0, self._leader_of(f"stream:{KV_STREAM}"))

    def _leader_of(self, group: str) -> str | None:
        g = self.groups().get(group)
        return g.leader if g else None

    def put(self, key: str, value: str, *, client_id: str, seq: int) -> WriteResult:
        # A retry after a lost ack may store the value twice (two revisions, same
        # value): harmless for a put. JetStream's Nats-Msg-Id would deduplicate, but
        # the KV bucket's history of one makes that the same outcome.
        return self._publish(key, value.encode(), {"Nats-Msg-Id": f"{client_id}-{seq}"})

    def delete(self, key: str, *, client_id: str, seq: int) -> WriteResult:
        existed = self.get(key, "linearizable").value is not None
        r = self._publish(key, b"", {"KV-Operation": "DEL", "Nats-Msg-Id": f"{client_id}-{seq}"})
        r.deleted = existed
        return r

    def get(self, key: str, consistency: str, node: str | None = None) -> ReadOutcome:
        """``linearizable``: ``STREAM.MSG.GET`` (answered by the stream leader);
        ``stale``: ``DIRECT.GET`` (any replica). See docs/design.md for the limits."""
        _check_key(key)
        if node is not None:
            raise NotSupported("NATS cannot direct a read to a named server")
        subj = f"$KV.{KV_BUCKET}.{key}"
        self.ensure_bucket()
        if consistency != "linearizable":
            msg = self._conn().request(
                f"$JS.API.DIRECT.GET.{KV_STREAM}", json.dumps({"last_by_subj": subj}).encode()
            )
            if msg.status and msg.status >= 400:
                return ReadOutcome(None, None, None)
            if msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
                return ReadOutcome(None, int(msg.headers.get("Nats-Sequence", 0)), None)
            return ReadOutcome(
                msg.data.decode(), int(msg.headers.get("Nats-Sequence", 0)) or None, None
            )
        try:
            doc = self.api(f"STREAM.MSG.GET.{KV_STREAM}", {"last_by_subj": subj})
        except NodeRequestError as e:
            if e.status == 404:
                return ReadOutcome(None, None, self._leader_of(f"stream:{KV_STREAM}"))
            raise
        m = doc.get("message") or {}
        hdrs = base64.b64decode(m.get("hdrs") or "").decode(errors="replace")
        deleted = "KV-Operation: DEL" in hdrs or "KV-Operation: PURGE" in hdrs
        value = None if deleted else base64.b64decode(m.get("data") or "").decode()
        return ReadOutcome(value, int(m.get("seq") or 0), self._leader_of(f"stream:{KV_STREAM}"))

    def kv_hash(self, tries: int = 5) -> tuple[int, str, int]:
        """(revision, hash, keys): every live key and value of the bucket, read through
        the stream leader while the stream stands at one last sequence."""
        for _ in range(tries):
            info = self.api(f"STREAM.INFO.{KV_STREAM}", {"subjects_filter": ">"})
            state = info.get("state") or {}
            rev = int(state.get("last_seq") or 0)
            h = hashlib.sha256()
            keys = 0
            moved = False
            prefix = f"$KV.{KV_BUCKET}."
            for subj in sorted(state.get("subjects") or {}):
                try:
                    m = self.api(f"STREAM.MSG.GET.{KV_STREAM}", {"last_by_subj": subj})["message"]
                except NodeRequestError as e:
                    if e.status == 404:
                        continue
                    raise
                if int(m["seq"]) > rev:
                    moved = True
                    break
                hdrs = base64.b64decode(m.get("hdrs") or "").decode(errors="replace")
                if "KV-Operation:" in hdrs:
                    continue  # a delete marker: the key is absent
                key = subj.removeprefix(prefix)
                h.update(json.dumps([key, m.get("data") or ""]).encode())
                keys += 1
            if not moved:
                return rev, h.hexdigest()[:16], keys
        raise ManagerError(
            "the KV bucket kept changing while it was read", "retry when writes pause"
        )

    # -- leadership ------------------------------------------------------------------------------

    def transfer_refusal(self) -> str:
        return NO_TARGET.format(version=self._version)

    def transfer_leadership(self, target: str) -> tuple[str, int]:
        raise NotSupported(self.transfer_refusal())

    def step_down(self) -> None:
        """Ask this group's leader to step down; the group elects another current peer."""
        kind = group_kind(self.group)
        if kind == "meta":
            self.api("META.LEADER.STEPDOWN", system=self.username is not None)
        elif kind == "stream":
            self.api(f"STREAM.LEADER.STEPDOWN.{self.group.split(':', 1)[1]}")
        else:
            stream, consumer = self.group.split(":", 1)[1].split("/", 1)
            self.api(f"CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}")

    # -- membership ------------------------------------------------------------------------------

    def add_learner(self, node: str, peer_address: str, api_address: str | None) -> ConfResult:
        raise NotSupported(
            "NATS has no learners: a server joins by starting with routes to the others"
        )

    def promote(self, node: str) -> ConfResult:
        raise NotSupported("NATS has no learners to promote")

    def remove(self, node: str) -> ConfResult:
        """Take ``node`` out of the meta group's peer set (``$JS.API.SERVER.REMOVE``)."""
        self.api("SERVER.REMOVE", {"peer": node}, system=True)
        deadline = time.monotonic() + LEADER_WAIT_S
        while time.monotonic() < deadline:
            meta = self.for_group(META).groups()[META]
            if node not in meta.members and meta.leader:
                return ConfResult(None, sorted(meta.members), [])
            time.sleep(0.2)
        raise ManagerError(
            f"{node} is still in the meta group {LEADER_WAIT_S:.0f}s after its removal",
            "check `raft-manager status`; the meta leader may have changed meanwhile",
        )

    def removal_blockers(self, node: str) -> list[str]:
        """Groups whose quorum the removal of ``node`` would break (besides the meta
        group, which the generic plan checks)."""
        from ..core.view import ClusterView

        servers = self.servers()
        reasons = []
        for name, g in sorted(scan_groups(servers).items()):
            if name == META or node not in g.members:
                continue
            view = ClusterView.build(group_statuses(g, servers))
            others = [m for m in view.voters if m != node and view.available(m)]
            if len(others) < view.quorum():
                reasons.append(
                    f"removing {node} would leave {name} with {len(others)} available replica(s) "
                    f"of {len(view.voters)}, fewer than its quorum of {view.quorum()}"
                )
        return reasons

    # -- maintenance -----------------------------------------------------------------------------

    def snapshot(self, node: str) -> tuple[int, int]:
        """Back up this group's stream: every message, read through the stream leader,
        as JSON lines in the backup directory; (last sequence, bytes written)."""
        if group_kind(self.group) != "stream":
            raise NotSupported(
                f"only a stream can be backed up, not the {self.group} group",
                "name a group `stream:NAME` (see cluster_status)",
            )
        stream = self.group.split(":", 1)[1]
        info = self.api(f"STREAM.INFO.{stream}")
        state = info.get("state") or {}
        first, last = int(state.get("first_seq") or 0), int(state.get("last_seq") or 0)
        out_dir = self.backup_dir or Path.home() / ".local/state/agent-raft-manager/nats-backups"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{stream}-{last}-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
        size = 0
        with open(path, "w") as f:
            f.write(json.dumps({"stream": stream, "config": info.get("config"), "state": state}))
            f.write("\n")
            for seq in range(first, last + 1) if last else ():
                try:
                    m = self.api(f"STREAM.MSG.GET.{stream}", {"seq": seq})["message"]
                except NodeRequestError as e:
                    if e.status == 404:
                        continue  # deleted or superseded (KV history of one)
                    raise
                line = json.dumps(m) + "\n"
                f.write(line)
                size += len(line)
        return last, size

    def restart_instructions(self, node: str, where: str) -> list[str]:
        return [
            f"{node} ({where}) does not answer and raft-manager does not run its process",
            f"restart nats-server for {node} on its host with the same config and JetStream "
            "store_dir (systemctl restart nats-server, or your orchestrator)",
            f"if its store is lost: `raft-manager member remove {node}`, then start a server "
            "with a new server_name and routes to the others (`member add-voter NAME`)",
            f"then run `raft-manager recover {node}` again to wait until it is current",
        ]


def group_statuses(g: Group, servers: dict[str, Server]) -> dict[str, MemberStatus]:
    """One group's members as the generic model sees them: role in this group, the
    leader each names, its replica's index, and (on the leader) each follower's
    progress from ``current``/``lag``."""
    kind = group_kind(g.name)
    members = sorted(g.members)
    leader_view = g.views.get(g.leader or "") or {}
    lags = [int(r.get("lag") or 0) for r in g.replicas.values()]
    top = leader_view.get("index")
    if top is None:
        top = max(lags, default=0)
    out: dict[str, MemberStatus] = {}
    for m in sorted(set(members) | ({k for k, s in servers.items()} if kind == "meta" else set())):
        s = servers.get(m)
        view = g.views.get(m)
        rep = g.replicas.get(m) or {}
        st = MemberStatus(id=m, reachable=False, voters=members, version=s.version if s else None)
        if s is not None:
            st.api_address = s.url
            st.addresses = {k: v.url for k, v in servers.items()}
        if s is None or not s.reachable:
            st.error = (s.error if s else None) or "its server is not among the monitored ones"
        elif view is None:
            st.error = (
                "JetStream is off on this server (removed from the peer set?)"
                if kind == "meta"
                else f"its server does not report a replica of {g.name}"
            )
        elif rep.get("offline"):
            st.error = f"the {g.name} leader reports this replica offline"
        else:
            st.reachable = True
            st.leader = view.get("leader")
            st.role = "leader" if st.leader == m else "follower"
            idx = view.get("index")
            st.last_index = st.commit_index = st.applied_index = idx
        if s is not None and s.health:
            st.alarms = [f"healthz: {s.health}"]
        out[m] = st
    ld = out.get(g.leader or "")
    if ld is not None and ld.reachable and ld.role == "leader":
        ld.last_index = top
        ld.progress = {}
        for name, rep in g.replicas.items():
            lag = int(rep.get("lag") or 0)
            match = max(0, (top or 0) - lag)
            ld.progress[name] = ProgressStatus(
                match=match,
                next=match + 1,
                state="replicate" if rep.get("current") else "probe",
                learner=False,
                recent_active=not rep.get("offline"),
                # JetStream reports none of these.
                ticks_since_heard=None,
                inflight=0,
                snapshot_bytes_acked=None,
            )
    return out


def _check_key(key: str) -> None:
    if not KEY_RE.match(key):
        raise InputError(
            f"bad key {key!r} for a NATS KV bucket",
            "use letters, digits and - / _ = separated by single dots",
        )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
