"""The raft-node adapter: drives a cluster of ``raft-node`` processes over their HTTP API.

Any member will do as an entry point: the status of one names every member and its
API address (``members``), writes follow ``421`` leader hints, and a leaderless moment
(an election) is waited out for a bounded time. Linearizable reads go to the leader
when it is known (one hop less) but any member may serve them (followers and learners
use ReadIndex on the leader), so a read asked of a node goes to that node. The API
token comes from the cluster's config (environment variable or file) and is only ever
put in the Authorization header. A cluster given by ``dir`` is a local cluster: its
``cluster.yaml`` lists the processes, which this adapter can kill, start, add and
retire through its ``LocalProcesses`` (process control stays out of the protocol
code).
"""

from __future__ import annotations

import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from raft_core.node.status import NodeStatus, StatusFormatError

from ..clients.http import exchange
from ..clients.tls import ssl_context
from ..core.errors import ManagerError, NodeRequestError, Refused, Unreachable
from ..core.port import (
    ClusterAdapter,
    ConfResult,
    LogEntryDigest,
    LogSlice,
    MemberStatus,
    NewProcess,
    ReadOutcome,
    StateDigest,
    WriteResult,
)
from .processes import LocalProcesses

STATUS_TIMEOUT = httpx.Timeout(2.0, connect=1.0)
WRITE_TIMEOUT = httpx.Timeout(10.0, connect=1.0)
CONF_TIMEOUT = httpx.Timeout(15.0, connect=1.0)
LEADER_WAIT_S = 6.0


class RaftNodeAdapter(ClusterAdapter):
    kind = "raft_core"
    service = "raft-node"
    supports_campaign = True
    supports_log_digests = True
    supports_faults = True
    supports_state_history = True

    def __init__(
        self,
        *,
        endpoints: list[str] | None = None,
        processes: LocalProcesses | None = None,
        token: str | None = None,
        tls: Any = None,
    ) -> None:
        """``processes``: the local cluster's process control, when raft-manager runs its
        members (it also names them); None for a cluster known only by ``endpoints``."""
        if not endpoints and processes is None:
            raise ValueError("a raft_core cluster needs endpoints or a local cluster")
        self.processes: LocalProcesses | None = processes
        self.endpoints = list(endpoints or [])
        self.can_control_processes = self.processes is not None
        self._tls = tls
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http: httpx.Client | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="raft-manager")
        self._addr: dict[str, str] = {}  # node id -> API address (learned)
        self._leader_addr: str | None = None

    def auth_headers(self) -> dict[str, str]:
        return dict(self._headers)

    def api_ssl_context(self) -> ssl.SSLContext | None:
        if self.scheme != "https":
            return None
        ctx = ssl_context(self._tls)
        if isinstance(ctx, ssl.SSLContext):
            return ctx
        plain = ssl.create_default_context()
        if ctx is False:  # clusters.yaml: tls.verify false
            plain.check_hostname = False
            plain.verify_mode = ssl.CERT_NONE
        return plain

    @property
    def scheme(self) -> str:
        self._connect()  # settles ``_tls``
        return "https" if self._tls else "http"

    def _tls_config(self) -> Any:
        """``tls`` from clusters.yaml, else a local cluster's own CA (its cluster.yaml)."""
        if self._tls is None and self.processes is not None:
            return self.processes.api_tls()
        return self._tls

    @property
    def _client(self) -> httpx.Client:
        return self._connect()

    def _connect(self) -> httpx.Client:
        """One client for every request, built on first use (a local cluster's TLS
        settings exist only once it was started): connections, and their TLS
        sessions, are kept alive and reused."""
        if self._http is None:
            self._tls = self._tls_config()
            self._http = httpx.Client(
                headers=self._headers, timeout=STATUS_TIMEOUT, verify=ssl_context(self._tls)
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        self._pool.shutdown(wait=False)

    # -- processes (local clusters only): the base class delegates to LocalProcesses -------

    def new_process(self, node: str) -> NewProcess:
        np = super().new_process(node)
        self._addr[node] = np.api_address
        return np

    def retire_process(self, node: str) -> None:
        super().retire_process(node)
        self._addr.pop(node, None)

    # -- HTTP ------------------------------------------------------------------------------

    def _url(self, addr: str, path: str) -> str:
        return f"{self.scheme}://{addr}{path}"

    def _call(
        self,
        method: str,
        addr: str,
        path: str,
        *,
        body: dict | None = None,
        params: dict | None = None,
        timeout: httpx.Timeout = STATUS_TIMEOUT,
    ) -> dict:
        node = self._id_of(addr)
        r, doc = exchange(
            self._client,
            method,
            self._url(addr, path),
            member=f"{node or addr} ({addr})",
            what=f"{method} {path}",
            reads_only=method == "GET",
            node=node,
            json=body,
            params=params,
            timeout=timeout,
        )
        if r.status_code == 200:
            return doc
        message = doc.get("message") or r.reason_phrase
        raise NodeRequestError(
            f"{node or addr}: {message}",
            _next_step(r.status_code),
            status=r.status_code,
            error=doc.get("error"),
            indeterminate=bool(doc.get("indeterminate")),
            node=node,
            body=doc,
        )

    def _id_of(self, addr: str) -> str | None:
        for n, a in self._addr.items():
            if a == addr:
                return n
        return None

    def _addresses(self) -> list[str]:
        addrs = list(dict.fromkeys([*self._addr.values(), *self.endpoints]))
        if self.processes is not None:
            for node, api in self.processes.api_addresses().items():
                self._addr.setdefault(node, api)
                if api not in addrs:
                    addrs.append(api)
        return addrs

    def _leader_call(
        self,
        method: str,
        path: str,
        *,
        body: dict | None = None,
        params: dict | None = None,
        timeout: httpx.Timeout = WRITE_TIMEOUT,
        wait_s: float = LEADER_WAIT_S,
        any_member: bool = False,
    ) -> tuple[dict, str | None]:
        """Send to the leader, following 421 hints and waiting out elections.

        ``any_member``: whoever answers will do (a linearizable read), so the node
        that answered is not taken for the leader."""
        deadline = time.monotonic() + wait_s
        last: ManagerError | None = None
        while True:
            order = self._addresses()
            if self._leader_addr in order:
                order.remove(self._leader_addr)
                order.insert(0, self._leader_addr)
            tried: set[str] = set()
            while order:
                addr = order.pop(0)
                if addr in tried:
                    continue
                tried.add(addr)
                try:
                    doc = self._call(method, addr, path, body=body, params=params, timeout=timeout)
                    if not any_member:
                        self._leader_addr = addr
                    return doc, self._id_of(addr)
                except Unreachable as e:
                    last = e
                except NodeRequestError as e:
                    if e.status == 421:
                        hint = e.body.get("leader_api")
                        leader = e.body.get("leader")
                        if leader and hint:
                            self._addr.setdefault(leader, hint)
                        if hint and hint not in tried:
                            order.insert(0, hint)
                        last = e
                    elif e.status == 503 and not e.indeterminate:
                        last = e  # leader stepping down, transfer in progress: retry
                    else:
                        raise
            self._leader_addr = None
            if time.monotonic() >= deadline:
                if isinstance(last, NodeRequestError) and last.status == 503:
                    raise last
                raise Unreachable(
                    f"no leader answered within {wait_s:.0f}s"
                    + (f" (last error: {last.reason})" if last else ""),
                    "check `raft-manager status`: an election may be stuck without a quorum",
                )
            time.sleep(0.1)

    # -- observation -------------------------------------------------------------------------

    def _fetch(self, node: str | None, addr: str) -> MemberStatus:
        try:
            st = self._call("GET", addr, "/v1/status")
        except ManagerError as e:
            return MemberStatus(id=node or addr, reachable=False, api_address=addr, error=e.reason)
        return _to_status(st, addr)

    def status(self, node: str) -> MemberStatus:
        self._addresses()
        addr = self._addr.get(node)
        if addr is None:
            self.statuses()
            addr = self._addr.get(node)
        if addr is None:
            return MemberStatus(id=node, reachable=False, error="address unknown")
        return self._decorate(self._fetch(node, addr))

    def statuses(self) -> dict[str, MemberStatus]:
        pending = {a: self._id_of(a) for a in self._addresses()}
        out: dict[str, MemberStatus] = {}
        seen: set[str] = set()
        for _ in range(3):  # a round may discover members no one listed before
            jobs = {
                a: self._pool.submit(self._fetch, n, a) for a, n in pending.items() if a not in seen
            }
            seen |= set(jobs)
            for addr, fut in jobs.items():
                st = fut.result()
                if st.reachable:
                    self._addr[st.id] = addr
                if st.id not in out or st.reachable:
                    out[st.id] = st
            pending = {}
            for st in list(out.values()):
                for member, addr in st.addresses.items():
                    if addr and addr not in seen:
                        self._addr.setdefault(member, addr)
                        pending[addr] = member
            if not pending:
                break
        # Members named by the configuration but with no address we could reach.
        config = _reference(out)
        if config is not None:
            for m in [*config.voters, *config.learners, *config.voters_outgoing]:
                if m not in out:
                    out[m] = MemberStatus(
                        id=m, reachable=False, api_address=self._addr.get(m), error="unreachable"
                    )
        # Unknown seeds that were unreachable: keep them only if nothing else is known.
        if any(s.reachable for s in out.values()):
            out = {k: v for k, v in out.items() if v.reachable or not _looks_like_address(k)}
        for st in out.values():
            self._decorate(st)
        return out

    def _decorate(self, st: MemberStatus) -> MemberStatus:
        return self.processes.decorate(st) if self.processes is not None else st

    def state_digest(self, node: str, at: int | None = None) -> StateDigest:
        addr = self._need_addr(node)
        d = self._call(
            "GET", addr, "/v1/admin/digest", params={"at": at} if at is not None else None
        )
        return StateDigest(
            d["applied_index"], d.get("applied_term"), d["chain"], d.get("state_hash")
        )

    def log_digests(self, node: str, start: int, end: int) -> LogSlice:
        addr = self._need_addr(node)
        d = self._call("GET", addr, "/v1/admin/log", params={"start": start, "end": end})
        return LogSlice(
            d["first_index"],
            d["last_index"],
            [LogEntryDigest(e["index"], e["term"], e["type"], e["digest"]) for e in d["entries"]],
        )

    def _need_addr(self, node: str) -> str:
        if node not in self._addr:
            self._addresses()
        if node not in self._addr:
            self.statuses()
        try:
            return self._addr[node]
        except KeyError:
            raise Unreachable(f"no API address known for {node}") from None

    # -- data ----------------------------------------------------------------------------------

    def put(self, key: str, value: str, *, client_id: str, seq: int) -> WriteResult:
        doc, node = self._leader_call(
            "PUT", _kv(key), body={"value": value, "client_id": client_id, "seq": seq}
        )
        return WriteResult(doc["index"], doc["term"], node)

    def delete(self, key: str, *, client_id: str, seq: int) -> WriteResult:
        doc, node = self._leader_call("DELETE", _kv(key), body={"client_id": client_id, "seq": seq})
        return WriteResult(doc["index"], doc["term"], node, doc.get("deleted"))

    def get(self, key: str, consistency: str, node: str | None = None) -> ReadOutcome:
        params = {"consistency": consistency}
        if consistency == "linearizable" and node is None:
            doc, served = self._leader_call("GET", _kv(key), params=params, any_member=True)
            return ReadOutcome(doc.get("value"), doc.get("applied_index"), served)
        candidates = [self._need_addr(node)] if node else self._addresses()
        last: ManagerError | None = None
        for addr in candidates:
            try:
                doc = self._call("GET", addr, _kv(key), params=params)
                return ReadOutcome(doc.get("value"), doc.get("applied_index"), self._id_of(addr))
            except Unreachable as e:
                last = e
        raise last or Unreachable("no member answered")

    # -- leadership ----------------------------------------------------------------------------

    def transfer_leadership(self, target: str) -> tuple[str, int]:
        doc, _ = self._leader_call(
            "POST", "/v1/admin/transfer-leadership", body={"target": target}, wait_s=2.0
        )
        return doc["leader"], doc["term"]

    def campaign(self, node: str) -> int:
        doc = self._call("POST", self._need_addr(node), "/v1/admin/campaign")
        return doc["term"]

    # -- membership ------------------------------------------------------------------------------

    def _conf(self, body: dict) -> ConfResult:
        doc, _ = self._leader_call("POST", "/v1/admin/membership", body=body, timeout=CONF_TIMEOUT)
        return ConfResult(doc.get("index"), doc.get("voters", []), doc.get("learners", []))

    def add_learner(self, node: str, peer_address: str, api_address: str | None) -> ConfResult:
        body = {"action": "add_learner", "id": node, "peer_address": peer_address}
        if api_address:
            body["api_address"] = api_address
            self._addr[node] = api_address
        return self._conf(body)

    def promote(self, node: str) -> ConfResult:
        return self._conf({"action": "promote", "id": node})

    def remove(self, node: str) -> ConfResult:
        return self._conf({"action": "remove", "id": node})

    # -- maintenance ------------------------------------------------------------------------------

    def snapshot(self, node: str) -> tuple[int, int]:
        doc = self._call("POST", self._need_addr(node), "/v1/admin/snapshot", timeout=WRITE_TIMEOUT)
        return doc["snapshot_index"], doc["bytes"]

    def set_faults(
        self, node: str, *, drop: list[str] | None = None, clear: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"clear": True} if clear else {"drop": sorted(drop or [])}
        try:
            return self._call("POST", self._need_addr(node), "/v1/admin/faults", body=body)
        except NodeRequestError as e:
            if e.status == 403:
                raise Refused(
                    f"{node} does not allow fault injection",
                    "start the cluster with `raft-manager cluster up --allow-fault-injection`",
                ) from None
            raise


# -- helpers ---------------------------------------------------------------------------------------


def _kv(key: str) -> str:
    from urllib.parse import quote

    return "/v1/kv/" + quote(key, safe="")


def _looks_like_address(s: str) -> bool:
    return ":" in s


def _next_step(status: int) -> str | None:
    return {
        400: "check the arguments",
        401: "set the cluster's API token (token_env or token_file in clusters.yaml)",
        403: "the node forbids this; see its configuration",
        409: "wait for the change in progress to finish, then retry",
        503: "the cluster has no quorum or timed out; check `raft-manager status`",
    }.get(status)


def _to_status(doc: dict, addr: str) -> MemberStatus:
    """The member status for the node at ``addr`` from the status it served, read with
    the node's own schema (``NodeStatus.from_json``)."""
    try:
        node = NodeStatus.from_json(doc)
    except StatusFormatError as e:
        return MemberStatus(
            id=str(doc.get("id") or addr),
            reachable=False,
            api_address=addr,
            error=f"its status does not follow this manager's schema ({e}): run raft-node "
            "from the same agent-raft-manager version as raft-manager",
        )
    r = node.engine
    return MemberStatus(
        id=r.id,
        reachable=True,
        api_address=addr,
        role=r.role.value,
        term=r.term,
        leader=r.leader,
        commit_index=r.commit_index,
        applied_index=r.applied_index,
        last_index=r.last_index,
        last_term=r.last_term,
        first_index=r.first_index,
        snapshot_index=r.snapshot_index,
        voters=list(r.voters),
        voters_outgoing=list(r.voters_outgoing),
        learners=list(r.learners),
        joint=r.joint,
        pending_conf_index=r.pending_conf_index,
        transferring_to=r.transferring_to,
        progress=r.progress,
        faults=node.faults,
        peer_auth=node.peer_auth,
        addresses={m: a.api for m, a in node.members.items()},
    )


def _reference(statuses: dict[str, MemberStatus]) -> MemberStatus | None:
    """The member whose view of the configuration counts: the leader, else the newest."""
    up = [s for s in statuses.values() if s.reachable]
    leaders = [s for s in up if s.role == "leader"]
    if leaders:
        return max(leaders, key=lambda s: s.term or 0)
    if not up:
        return None
    return max(up, key=lambda s: (s.term or 0, s.commit_index or 0))
