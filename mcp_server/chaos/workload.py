"""Chaos clients: concurrent writes, compare-and-swap and linearizable reads, recorded.

Every logical operation becomes one :class:`Op` in the :class:`History`, whatever
happened to its attempts:

* ``ok``: a 200 answer (``ret`` is when it arrived);
* ``fail``: definitely not applied (421 before proposing, connection refused, a 503 that
  says it is not indeterminate, 4xx), and no earlier attempt of it may have applied;
* ``info``: indeterminate: some attempt timed out, lost its connection mid-request or
  got a 503 with ``indeterminate: true``, and no later attempt settled it. ``ret`` is
  None, so the checker treats the op as possibly applied at any time after its call.

Writes carry a client session (``client_id``/``seq``) and every retry of one op reuses
its ``seq``, so a retry after an indeterminate attempt is exactly-once: if the first
attempt committed, the retry answers with its result. Clients follow 421 leader hints,
rotate over the members otherwise, and never reuse a value (``<client>-<n>``), so every
value read names the write that produced it. Writes go to the leader they know;
linearizable reads go to a member drawn at random (both systems serve them on
followers, ours through ReadIndex on the leader), so the checker judges follower
reads too, cut-off and stale-term followers included.

The wire protocol is a :class:`Dialect`: :class:`RaftNodeDialect` (``/v1/kv``, client
sessions, 421 hints) or :class:`EtcdDialect` (etcd's JSON gateway: ``kv/put``,
``kv/range``, ``kv/txn`` for compare-and-swap, base64 keys and values). etcd has no
client sessions, so a write whose attempt may have applied is never retried (a second
copy could land after a later write): it ends ``info`` at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx

from raft_core.checker import Operation

Status = Literal["ok", "fail", "info"]

# One HTTP attempt; below the node's own request timeout (5 s) so a stuck request is
# given up on by the client first, like an impatient user.
REQUEST_TIMEOUT_S = 1.5
# All attempts of one operation.
OP_DEADLINE_S = 4.0
# Keys rotate every KEY_EPOCH_S seconds (KEYS_PER_EPOCH at a time): short per-key
# histories keep the linearizability search cheap while keys stay contended.
KEY_EPOCH_S = 15.0
KEYS_PER_EPOCH = 3


@dataclass
class Op:
    """One logical client operation, as saved in the history (one JSON line)."""

    id: int
    client: str
    kind: Literal["put", "cas", "get"]
    key: str
    value: str | None = None
    expected: str | None = None
    call: float = 0.0
    ret: float | None = None  # when the answer arrived; None unless ok
    end: float | None = None  # when the client stopped waiting (every status)
    status: Status = "info"
    output: dict[str, Any] | None = None
    node: str | None = None
    attempts: int = 0
    error: str | None = None

    def to_checker(self) -> Operation | None:
        """The checker's view: failed ops never happened; ``info`` ops may have."""
        if self.status == "fail":
            return None
        ret = self.ret if self.status == "ok" else None
        return Operation(
            self.client,
            self.key,
            self.kind,
            self.value,
            self.expected,
            call=self.call,
            ret=ret,
            output=self.output if ret is not None else None,
        )


@dataclass
class History:
    """All operations of a run, on one clock (seconds since the run started)."""

    t0: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)
    # Every key of the run starts with it: a named cluster keeps the keys of earlier
    # runs, whose values no operation of this history wrote.
    prefix: str = ""

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def live_keys(self) -> list[str]:
        """The keys in use now."""
        return [self.prefix + k for k in epoch_keys(self.now())]

    def begin(self, client: str, kind: str, key: str, **args: Any) -> Op:
        op = Op(id=len(self.ops), client=client, kind=kind, key=key, call=self.now(), **args)  # type: ignore[arg-type]
        self.ops.append(op)
        return op

    def save(self, path: Path) -> None:
        with path.open("w") as f:
            for op in self.ops:
                f.write(json.dumps(asdict(op), separators=(",", ":")) + "\n")

    @staticmethod
    def load(path: Path) -> list[Op]:
        return [Op(**json.loads(line)) for line in path.read_text().splitlines() if line]


class Members:
    """The members' API addresses as the clients see them (the runner refreshes it
    after membership changes) and a shared guess of who leads."""

    def __init__(self, addresses: dict[str, str], scheme: str = "http") -> None:
        self.addresses = dict(addresses)
        self.scheme = scheme
        self.leader: str | None = None

    def update(self, addresses: dict[str, str]) -> None:
        self.addresses = dict(addresses)
        if self.leader not in self.addresses:
            self.leader = None

    def id_of(self, api: str | None) -> str | None:
        return next((n for n, a in self.addresses.items() if a == api), None)


@dataclass
class _Outcome:
    status: Status
    body: dict[str, Any] | None
    node: str | None
    attempts: int
    error: str | None


Verdict = Literal["ok", "hint", "retry", "maybe", "stop"]


@dataclass(frozen=True)
class Call:
    """One HTTP request of an operation: method, path (on a member's address), body."""

    method: str
    path: str
    body: dict[str, Any] | None


class Dialect(Protocol):
    """How one kind of cluster is asked to put, compare-and-swap and read linearizably."""

    sessions: bool  # retries of a write are exactly-once (so a maybe-applied one may retry)

    def put(self, key: str, value: str, session: str, seq: int) -> Call: ...
    def cas(self, key: str, expected: str | None, value: str, session: str, seq: int) -> Call: ...
    def get(self, key: str) -> Call: ...
    def output(self, kind: str, value: str | None, doc: dict[str, Any]) -> dict[str, Any]: ...
    def judge(self, status: int, doc: dict[str, Any], write: bool) -> Verdict: ...


class RaftNodeDialect:
    """raft-node's API: ``/v1/kv``, client sessions, 421 with the leader's id."""

    sessions = True

    def put(self, key: str, value: str, session: str, seq: int) -> Call:
        body = {"value": value, "client_id": session, "seq": seq}
        return Call("PUT", f"/v1/kv/{quote(key, safe='')}", body)

    def cas(self, key: str, expected: str | None, value: str, session: str, seq: int) -> Call:
        body = {"expected": expected, "value": value, "client_id": session, "seq": seq}
        return Call("POST", f"/v1/kv/{quote(key, safe='')}/cas", body)

    def get(self, key: str) -> Call:
        return Call("GET", f"/v1/kv/{quote(key, safe='')}?consistency=linearizable", None)

    def output(self, kind: str, value: str | None, doc: dict[str, Any]) -> dict[str, Any]:
        if kind == "cas":
            return {"ok": bool(doc.get("ok")), "value": doc.get("value")}
        return {"value": doc.get("value")} if kind == "get" else {}

    def judge(self, status: int, doc: dict[str, Any], write: bool) -> Verdict:
        if status == 200:
            return "ok"
        if status == 421:
            return "hint"
        if status == 503:
            return "maybe" if write and bool(doc.get("indeterminate")) else "retry"
        return "stop"  # 400/401/403/404/409: the request itself is refused


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(data: str | None) -> str | None:
    return None if data is None else base64.b64decode(data).decode()


class EtcdDialect:
    """etcd's JSON gateway (``/v3/...``): any member serves linearizable reads and
    forwards writes to its leader. Any error answer to a write may hide an applied
    proposal (a timeout, a lost leader), so it counts as maybe applied; reads retry."""

    sessions = False

    def put(self, key: str, value: str, session: str, seq: int) -> Call:
        return Call("POST", "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def cas(self, key: str, expected: str | None, value: str, session: str, seq: int) -> Call:
        if expected is None:  # absent: the key was never created (or was deleted)
            cmp = {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        else:
            cmp = {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(expected)}
        body = {
            "compare": [cmp],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            "failure": [{"request_range": {"key": _b64(key)}}],
        }
        return Call("POST", "/v3/kv/txn", body)

    def get(self, key: str) -> Call:
        return Call("POST", "/v3/kv/range", {"key": _b64(key)})

    def output(self, kind: str, value: str | None, doc: dict[str, Any]) -> dict[str, Any]:
        if kind == "put":
            return {}
        if kind == "get":
            return {"value": _first_value(doc)}
        if doc.get("succeeded"):  # proto3 JSON leaves a false "succeeded" out
            return {"ok": True, "value": value}
        ranged = (doc.get("responses") or [{}])[0].get("response_range") or {}
        return {"ok": False, "value": _first_value(ranged)}

    def judge(self, status: int, doc: dict[str, Any], write: bool) -> Verdict:
        if status == 200:
            return "ok"
        return "maybe" if write else "retry"


def _first_value(doc: dict[str, Any]) -> str | None:
    kvs = doc.get("kvs") or []
    return _unb64(kvs[0].get("value", "")) if kvs else None


RAFT_NODE = RaftNodeDialect()
ETCD = EtcdDialect()


class Client:
    """One sequential client: one operation at a time, retried within a deadline."""

    def __init__(
        self,
        name: str,
        history: History,
        members: Members,
        http: httpx.AsyncClient,
        rng: random.Random,
        *,
        session: str | None = None,
        pinned: str | None = None,
        dialect: Dialect = RAFT_NODE,
    ) -> None:
        self.name = name
        self.dialect = dialect
        # The session id must be new for every run: a node remembers the answers of a
        # session's recent sequence numbers and would replay them to a reused id.
        self.session = session or name
        self.history = history
        self.members = members
        self.http = http
        self.rng = rng
        self.pinned = pinned  # a probe: always this node, hints not followed
        self.seq = 0
        self.written = 0
        self.seen: dict[str, str | None] = {}  # key -> last value this client observed

    # -- operations --------------------------------------------------------------------

    async def put(self, key: str) -> Op:
        self.written += 1
        value = f"{self.name}-{self.written}"
        op = self.history.begin(self.name, "put", key, value=value)
        self.seq += 1
        out = await self._attempts(self.dialect.put(key, value, self.session, self.seq), True)
        self._finish(op, out, out.body and self.dialect.output("put", value, out.body))
        return op

    async def cas(self, key: str) -> Op:
        self.written += 1
        value = f"{self.name}-{self.written}"
        expected = self.seen.get(key)
        op = self.history.begin(self.name, "cas", key, value=value, expected=expected)
        self.seq += 1
        call = self.dialect.cas(key, expected, value, self.session, self.seq)
        return self._observed(op, "cas", key, value, await self._attempts(call, True))

    async def get(self, key: str) -> Op:
        op = self.history.begin(self.name, "get", key)
        return self._observed(
            op, "get", key, None, await self._attempts(self.dialect.get(key), False)
        )

    def _observed(self, op: Op, kind: str, key: str, value: str | None, out: _Outcome) -> Op:
        """Finish a cas or get, whose answer shows the key's value: remember it, since
        this client's next cas expects it."""
        result = None
        if out.body is not None:
            result = self.dialect.output(kind, value, out.body)
            self.seen[key] = result["value"]
        self._finish(op, out, result)
        return op

    def _finish(self, op: Op, out: _Outcome, output: dict[str, Any] | None) -> None:
        op.status, op.node, op.attempts, op.error = out.status, out.node, out.attempts, out.error
        op.end = self.history.now()
        if out.status == "ok":
            op.ret = op.end
            op.output = output

    # -- attempts ----------------------------------------------------------------------

    def _target(self, avoid: str | None = None, *, anyone: bool = False) -> str | None:
        """The pinned node, else the known leader (unless ``anyone`` will do), else a
        member drawn at random."""
        if self.pinned:
            return self.pinned
        lead = self.members.leader
        if not anyone and lead and lead != avoid and lead in self.members.addresses:
            return lead
        choices = sorted(n for n in self.members.addresses if n != avoid)
        return self.rng.choice(choices) if choices else None

    async def _attempts(self, call: Call, write: bool) -> _Outcome:
        deadline = time.monotonic() + OP_DEADLINE_S
        maybe_applied = False
        attempts = 0
        error: str | None = None
        node = self._target(anyone=not write)
        while time.monotonic() < deadline and node is not None:
            addr = self.members.addresses.get(node)
            if addr is None:
                node = self._target()
                continue
            attempts += 1
            timeout = max(0.05, min(REQUEST_TIMEOUT_S, deadline - time.monotonic()))
            try:
                r = await self.http.request(
                    call.method,
                    f"{self.members.scheme}://{addr}{call.path}",
                    json=call.body,
                    timeout=timeout,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
                # Never sent: nothing can have been applied by this attempt.
                error = f"{node}: {type(e).__name__}"
                node = await self._next(node, None)
                continue
            except httpx.HTTPError as e:
                # Sent, and the answer lost: a write may have been applied (a read that
                # was lost is recorded as indeterminate too; it constrains nothing).
                maybe_applied = True
                error = f"{node}: {type(e).__name__}"
                if write and not self.dialect.sessions:
                    break  # no session to make a retry exactly-once
                node = await self._next(node, None)
                continue
            doc = _json(r)
            verdict = self.dialect.judge(r.status_code, doc, write)
            if verdict == "ok":
                if write and not self.pinned:
                    self.members.leader = node  # a read may have been served by a follower
                return _Outcome("ok", doc, node, attempts, None)
            error = f"{node}: {r.status_code} {doc.get('error') or doc.get('message') or ''}"
            error = error.strip()
            if verdict == "hint":
                if self.pinned:
                    break  # a probe asks one node only: "not the leader" is its answer
                hint = doc.get("leader")
                if hint:
                    self.members.leader = hint
                node = await self._next(node, hint)
            elif verdict in ("retry", "maybe"):
                maybe_applied = maybe_applied or verdict == "maybe"
                if verdict == "maybe" and not self.dialect.sessions:
                    break
                node = await self._next(node, None)
            else:
                break
        return _Outcome("info" if maybe_applied else "fail", None, node, attempts, error)

    async def _next(self, node: str, hint: str | None) -> str | None:
        """The node to try next: the hinted leader, else another member after a pause."""
        if self.pinned:
            await asyncio.sleep(0.05)
            return self.pinned
        if hint and hint in self.members.addresses and hint != node:
            return hint
        if self.members.leader == node:
            self.members.leader = None  # it failed us: stop sending everyone there
        await asyncio.sleep(self.rng.uniform(0.02, 0.1))
        return self._target(avoid=node)


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        doc = r.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def epoch_keys(t: float) -> list[str]:
    """The keys in use at time ``t`` of the run."""
    epoch = int(t // KEY_EPOCH_S)
    return [f"e{epoch}-k{j}" for j in range(KEYS_PER_EPOCH)]


async def run_client(client: Client, stop: Callable[[], bool]) -> None:
    """Random operations (40% put, 30% cas, 30% read) until ``stop()``."""
    rng = client.rng
    while not stop():
        key = rng.choice(client.history.live_keys())
        r = rng.random()
        if r < 0.4:
            await client.put(key)
        elif r < 0.7:
            await client.cas(key)
        else:
            await client.get(key)
        await asyncio.sleep(rng.uniform(0.0, 0.02))
