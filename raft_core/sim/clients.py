"""Simulated clients: closed-loop put/get/delete/cas with sessions, and their history.

A client runs one logical operation at a time. Writes carry a session (client id,
sequence number) and are retried with the same sequence number until a node answers
with a result, so a write that is applied twice would show up as a linearizability
violation (and in the exactly-once scenario tests). An operation's outcome is
recorded as *unknown* when any attempt may have reached a leader and none returned a
result: it may or may not have taken effect, and the checker treats it so.

Linearizable reads go to a node drawn at random, followers and learners included
(they serve them through ReadIndex on the leader), so the checker sees reads served
by every kind of node, stale leaders and cut-off followers among them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..checker.linearizability import Operation
from .cluster import ClientRequest, ClientResponse, SimCluster


@dataclass
class _Attempt:
    req_id: int
    node: str


class SimClient:
    def __init__(
        self,
        cluster: SimCluster,
        name: str,
        rng: random.Random,
        *,
        keys: list[str],
        timeout_ms: float = 400.0,
        max_attempts: int = 8,
        think_ms: tuple[float, float] = (1.0, 20.0),
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.rng = rng
        self.keys = keys
        self.timeout_ms = timeout_ms
        self.max_attempts = max_attempts
        self.think_ms = think_ms
        self.history: list[Operation] = []
        self.session_seq = 0
        self.running = False
        self._req_ids = 0
        self._op: ClientRequest | None = None
        self._call_time = 0.0
        self._attempts = 0
        self._indeterminate = False
        self._current: _Attempt | None = None
        self._target: str | None = None
        self.completed = 0
        # Where reads go, from a stream of its own: the other draws stay as they were.
        self._read_rng = random.Random(f"{cluster.seed}:{name}:reads")
        cluster.net.attach(name, self._receive)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self.cluster.schedule(self.rng.uniform(*self.think_ms), self._next_op)

    def stop(self) -> None:
        """Issue no new operations; the one in flight finishes or times out."""
        self.running = False

    @property
    def idle(self) -> bool:
        return self._op is None

    def finish(self) -> None:
        """End of run: an operation still in flight has an unknown outcome."""
        if self._op is not None:
            self._record(None, None)

    # -- operations ----------------------------------------------------------

    def _next_op(self) -> None:
        if not self.running or self._op is not None:
            return
        key = self.rng.choice(self.keys)
        roll = self.rng.random()
        value = f"{self.name}-{self.completed}-{self.rng.randrange(1000)}"
        if roll < 0.35:
            op = ClientRequest(self.name, 0, "get", key)
        elif roll < 0.7:
            op = ClientRequest(self.name, 0, "put", key, value)
        elif roll < 0.8:
            op = ClientRequest(self.name, 0, "delete", key)
        else:
            expected = self.rng.choice([None, *self._recent_values(key)])
            op = ClientRequest(self.name, 0, "cas", key, value, expected)
        if op.kind != "get":
            self.session_seq += 1
            op.session = (self.name, self.session_seq)
        self._op = op
        self._call_time = self.cluster.now
        self._attempts = 0
        self._indeterminate = False
        self._send_attempt()

    def _recent_values(self, key: str) -> list[str]:
        vals = [
            op.value
            for op in self.history[-20:]
            if op.key == key and op.kind in ("put", "cas") and op.value is not None
        ]
        return vals[-3:]

    def _pick_node(self) -> str:
        assert self._op is not None
        if self._op.kind == "get" and self._attempts == 1:
            return self._read_rng.choice(sorted(self.cluster.nodes))
        if self._target is not None and self._target in self.cluster.nodes:
            return self._target
        return self.rng.choice(sorted(self.cluster.nodes))

    def _send_attempt(self) -> None:
        assert self._op is not None
        self._attempts += 1
        self._req_ids += 1
        node = self._pick_node()
        self._current = _Attempt(self._req_ids, node)
        req = ClientRequest(
            self.name,
            self._req_ids,
            self._op.kind,
            self._op.key,
            self._op.value,
            self._op.expected,
            self._op.session,
        )
        self.cluster.net.send(self.name, node, req, "client_request")
        req_id = self._req_ids
        self.cluster.schedule(self.timeout_ms, lambda: self._timeout(req_id))

    def _timeout(self, req_id: int) -> None:
        if self._current is None or self._current.req_id != req_id:
            return
        # The request may have reached a leader and may still commit.
        if self._op is not None and self._op.kind != "get":
            self._indeterminate = True
        self._target = None
        self._retry()

    def _retry(self) -> None:
        if self._attempts >= self.max_attempts:
            if self._indeterminate:
                self._record(None, None)
            else:
                self._abandon()
            return
        self._current = None
        self.cluster.schedule(self.rng.uniform(1.0, 10.0), self._send_attempt)

    def _receive(self, resp: object) -> None:
        if not isinstance(resp, ClientResponse):
            return
        if self._current is None or resp.req_id != self._current.req_id:
            return  # a late or duplicated answer to an earlier attempt
        if resp.ok:
            if self._op is not None and self._op.kind != "get":
                self._target = self._current.node  # the leader, for the next write
            self._record(self.cluster.now, resp.output)
            return
        if resp.error == "not_leader":
            self._target = resp.leader
        else:
            self._target = None
            if resp.error not in ("dropped", "lost"):
                # e.g. a session error: we cannot tell whether it was executed.
                self._indeterminate = self._op is not None and self._op.kind != "get"
        self._current = None
        self._retry()

    def _record(self, ret: float | None, output: dict | None) -> None:
        op = self._op
        assert op is not None
        self.history.append(
            Operation(
                client_id=self.name,
                key=op.key,
                kind=op.kind,  # type: ignore[arg-type]
                value=op.value,
                expected=op.expected,
                call=self._call_time,
                ret=ret,
                output=output,
            )
        )
        self.completed += 1
        self._done()

    def _abandon(self) -> None:
        # Every attempt was definitely refused: the operation never happened.
        self._done()

    def _done(self) -> None:
        self._op = None
        self._current = None
        if self.running:
            self.cluster.schedule(self.rng.uniform(*self.think_ms), self._next_op)
