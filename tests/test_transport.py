"""PeerTransport over real loopback sockets.

Everything waits on conditions (short polling with a deadline), never on fixed sleeps,
except where the test is about time passing (delay faults) and a short "nothing more
arrives" window after a positive barrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest
from testkit import free_port

from raft_core.codec import encode_message
from raft_core.node.transport import PeerTransport, parse_address
from raft_core.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    SnapshotChunk,
    SnapshotMeta,
)
from raft_core.types import MessageType as MT

LOGGER = "raft_core.node.transport"
SECRET = b"correct horse battery staple"
OTHER_SECRET = b"incorrect donkey battery staple"
FAST = dict(backoff_initial=0.02, backoff_max=0.2, handshake_timeout=2.0)


def run(coro: Awaitable[Any], timeout: float = 60.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


async def eventually(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)


class Node:
    """A transport plus everything it delivered."""

    def __init__(self, node_id: str, **kw: Any) -> None:
        self.id = node_id
        self.inbox: list[Message] = []
        self.unreachable: list[str] = []
        self.kw = {**FAST, **kw}
        self.t = self._make(self.kw.pop("listen_port", 0))

    def _make(self, port: int) -> PeerTransport:
        return PeerTransport(
            self.id,
            "127.0.0.1",
            port,
            on_message=self.inbox.append,
            on_unreachable=self.unreachable.append,
            **self.kw,
        )

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.t.bound_port}"

    def frm(self, peer: str) -> list[Message]:
        return [m for m in self.inbox if m.frm == peer]

    async def restart(self) -> None:
        port = self.t.bound_port
        await self.t.close()
        self.t = self._make(port)
        await self.t.start()


@contextlib.asynccontextmanager
async def cluster(ids: list[str], **kw: Any) -> AsyncIterator[dict[str, Node]]:
    """Started transports for ``ids``, each knowing the others as peers; all closed at
    the end, with any node the test adds to the dict meanwhile."""
    nodes = {i: Node(i, **kw) for i in ids}
    try:
        for n in nodes.values():
            await n.t.start()
        for n in nodes.values():
            n.t.set_peers({o.id: o.addr for o in nodes.values() if o is not n})
        yield nodes
    finally:
        await close_all(nodes)


async def close_all(nodes: dict[str, Node] | list[Node]) -> None:
    for n in nodes.values() if isinstance(nodes, dict) else nodes:
        await n.t.close()


def hb(frm: str, to: str, i: int, term: int = 1) -> Message:
    return Message(MT.HEARTBEAT, to, frm, term=term, commit=i)


def warnings_about(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and needle in r.getMessage()
    ]


# ---------------------------------------------------------------- raw protocol client
# An independent implementation of the documented handshake, to play a hostile or
# broken peer byte by byte.


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


async def read_frame(reader: asyncio.StreamReader) -> Any:
    n = int.from_bytes(await reader.readexactly(4), "big")
    return msgpack.unpackb(await reader.readexactly(n), raw=False)


def mac(secret: bytes, role: str, cluster, dialer, acceptor, nd: bytes, na: bytes) -> bytes:
    t = msgpack.packb([role, 1, cluster, dialer, acceptor, nd, na], use_bin_type=True)
    return hmac.new(secret, t, hashlib.sha256).digest()


async def raw_dial(
    port: int,
    me: str,
    target: str,
    *,
    secret: bytes | None = None,
    cluster: str | None = None,
    bad_mac: bool = False,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list]:
    """Handshake as ``me``; returns the acceptor's final frame (OK or REJECT)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    nd = os.urandom(32) if secret else b""
    w.write(frame(msgpack.packb([1, 1, cluster, me, target, nd], use_bin_type=True)))
    welcome = await read_frame(r)
    if welcome[0] != 2:
        return r, w, welcome
    _, _version, _cluster, acceptor, na, mac_a = welcome
    if secret:
        assert hmac.compare_digest(mac_a, mac(secret, "acceptor", cluster, me, acceptor, nd, na))
        mac_d = mac(secret, "dialer", cluster, me, acceptor, nd, na)
    else:
        assert na == b"" and mac_a == b""
        mac_d = b""
    if bad_mac:
        mac_d = bytes(32)
    w.write(frame(msgpack.packb([3, mac_d], use_bin_type=True)))
    return r, w, await read_frame(r)


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True once the other end closes (EOF or reset); False on timeout."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False
    return True


# ------------------------------------------------------------------------ basics


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:7000") == ("::1", 7000)
    assert parse_address("node-1.local:1") == ("node-1.local", 1)
    for bad in ["", "host", ":80", "host:", "host:0", "host:70000", "host:8a"]:
        with pytest.raises(ValueError):
            parse_address(bad)


@pytest.mark.parametrize("secret", [None, SECRET], ids=["plain", "authenticated"])
def test_three_nodes_exchange_in_order(secret: bytes | None) -> None:
    n_msgs = 200

    async def main() -> None:
        async with cluster(["a", "b", "c"], cluster_secret=secret, cluster_id="c1") as nodes:
            # All types, both directions, including entries, chunks and conf states.
            conf = ConfState(voters=frozenset("abc"), learners=frozenset({"d"}))
            chunk = SnapshotChunk(SnapshotMeta(9, 2, conf), 0, 3, b"abc", True)
            for n in nodes.values():
                for o in nodes:
                    if o == n.id:
                        continue
                    msgs = [hb(n.id, o, i) for i in range(n_msgs)]
                    msgs[5] = Message(
                        MT.APP,
                        o,
                        n.id,
                        term=2,
                        log_term=1,
                        index=4,
                        entries=[Entry(5, 2, EntryType.CONF_CHANGE, b"cc"), Entry(6, 2)],
                        commit=5,
                    )
                    msgs[6] = Message(MT.SNAP, o, n.id, term=2, chunk=chunk)
                    n.t.send(msgs[:100])
                    n.t.send(msgs[100:])
            await eventually(lambda: all(len(n.inbox) == 2 * n_msgs for n in nodes.values()))
            for n in nodes.values():
                for o in nodes:
                    if o == n.id:
                        continue
                    got = n.frm(o)
                    assert [m.commit for m in got if m.type == MT.HEARTBEAT] == [
                        i for i in range(n_msgs) if i not in (5, 6)
                    ]
                    assert got[5].entries[0] == Entry(5, 2, EntryType.CONF_CHANGE, b"cc")
                    assert got[6].chunk == chunk
                    assert all(m.to == n.id for m in got)
                st = n.t.stats.snapshot()
                assert st["sent_messages_total"] == st["received_messages_total"] == 2 * n_msgs
                assert st["sent_messages"]["SNAP"] == 2 and st["received_messages"]["APP"] == 2
                assert st["dropped_total"] == 0 and st["auth_failures"] == 0
                assert all(p["connected"] for p in n.t.peer_status().values())
                assert n.t.inbound_peers() == {o: 1 for o in nodes if o != n.id}

    run(main())


@pytest.fixture
def writes(monkeypatch) -> list[int]:
    """How many buffers each ``StreamWriter.writelines`` call wrote, in order."""
    calls: list[int] = []
    original = asyncio.StreamWriter.writelines

    def spy(self, data):
        data = list(data)
        calls.append(len(data))
        return original(self, data)

    monkeypatch.setattr(asyncio.StreamWriter, "writelines", spy)
    return calls


def test_a_send_call_leaves_in_one_write_at_once(writes: list[int]) -> None:
    """On an idle connection, each ``send`` call is one write, made before ``send``
    returns: a leader's appends are on the wire before it blocks in its own fsync."""
    calls = writes

    async def main() -> None:
        async with cluster(["a", "b"]) as nodes:
            a, b = nodes["a"], nodes["b"]
            a.t.send([hb("a", "b", 0)])
            await eventually(lambda: len(b.inbox) == 1)
            calls.clear()
            for k in range(3):  # three separate send() calls, same loop iteration
                a.t.send([hb("a", "b", 1 + 10 * k + i) for i in range(10)])
                assert len(calls) == k + 1, "the frames were not written from send()"
            await eventually(lambda: len(b.inbox) == 31)
            assert calls == [20, 20, 20]  # 10 x (header, payload) per call
            assert [m.commit for m in b.inbox] == list(range(31))

    run(main())


def test_frames_queued_behind_back_pressure_leave_together(monkeypatch, writes: list[int]) -> None:
    """While the socket buffer holds unsent bytes, frames queue and the pump sends
    them in one write once the buffer drains, in order."""
    calls = writes
    backlog = {"on": False}
    original_size = asyncio.WriteTransport.get_write_buffer_size

    async def main() -> None:
        async with cluster(["a", "b"]) as nodes:
            a, b = nodes["a"], nodes["b"]
            a.t.send([hb("a", "b", 0)])
            await eventually(lambda: len(b.inbox) == 1)
            transport = a.t._peers["b"].writer.transport
            cls = type(transport)
            monkeypatch.setattr(
                cls,
                "get_write_buffer_size",
                lambda self: 1 if backlog["on"] else original_size(self),
                raising=False,
            )
            calls.clear()
            backlog["on"] = True
            for k in range(3):
                a.t.send([hb("a", "b", 1 + 10 * k + i) for i in range(10)])
            assert calls == [], "frames were written despite a non-empty buffer"
            backlog["on"] = False
            await eventually(lambda: len(b.inbox) == 31)
            assert calls == [60]  # the pump: everything queued, one write
            assert [m.commit for m in b.inbox] == list(range(31))

    run(main())


def _app_of_size(frm: str, to: str, size: int) -> Message:
    """An APP message whose encoding is exactly ``size`` bytes."""
    m = Message(MT.APP, to, frm, term=1, index=0, entries=[Entry(1, 1, data=b"")])
    overhead = len(encode_message(m))
    # bin8/16/32 headers differ in length: search the data length that hits the size.
    for n in range(max(0, size - overhead - 8), size):
        m.entries[0].data = b"\x5a" * n
        if len(encode_message(m)) == size:
            return m
    raise AssertionError("no exact size")


def test_frame_limit_near_and_over(caplog) -> None:
    limit = 1 << 20

    async def main() -> None:
        async with cluster(["a", "b"], max_frame=limit) as nodes:
            a, b = nodes["a"], nodes["b"]
            at_limit = _app_of_size("a", "b", limit)
            over = _app_of_size("a", "b", limit + 1)
            a.t.send([at_limit, over, hb("a", "b", 7)])
            await eventually(lambda: len(b.inbox) == 2)
            assert b.inbox[0] == at_limit and b.inbox[1].commit == 7
            assert a.t.stats.dropped["oversize"] == 1  # refused at the sender
            assert warnings_about(caplog, "exceeds max frame")

            # A peer with a larger limit: the receiver refuses the frame itself.
            big = Node("c", max_frame=4 * limit)
            nodes["c"] = big
            await big.t.start()
            big.t.set_peers({"b": b.addr})
            b.t.set_peers({"a": a.addr, "c": big.addr})
            big.t.send([_app_of_size("c", "b", 2 * limit)])
            await eventually(lambda: b.t.stats.protocol_errors == 1)
            (warning,) = warnings_about(caplog, "exceeds the limit")
            assert "closing connection from c at 127.0.0.1:" in warning
            assert b.frm("c") == []
            # ...the sender notices, reconnects, and normal traffic continues.
            await eventually(lambda: big.t.stats.connections_established == 2)
            assert "b" in big.unreachable
            big.t.send([hb("c", "b", 1)])
            await eventually(lambda: len(b.frm("c")) == 1)
            assert b.frm("c")[0].commit == 1

    run(main())


# ------------------------------------------------------------------ reconnects, queues


def test_reconnect_after_restart_delivers_queued_up_to_limit() -> None:
    async def main() -> None:
        async with cluster(["a", "b"], queue_limit=50) as nodes:
            a, b = nodes["a"], nodes["b"]
            a.t.send([hb("a", "b", 0)])
            await eventually(lambda: len(b.inbox) == 1)
            await b.t.close()
            await eventually(lambda: not a.t.peer_status()["b"]["connected"])
            a.t.send([hb("a", "b", 1000 + i) for i in range(80)])
            assert a.t.peer_status()["b"]["queued"] == 50
            assert a.t.stats.dropped["queue_full"] == 30
            await eventually(lambda: a.t.stats.connect_failures >= 2, what="failed redials")
            assert "b" in a.unreachable
            b.inbox.clear()
            await b.restart()
            b.t.set_peers({"a": a.addr})
            await eventually(lambda: len(b.inbox) == 50)
            assert [m.commit for m in b.inbox] == list(range(1000, 1050))
            a.t.send([hb("a", "b", 2000)])
            b.t.send([hb("b", "a", 1)])
            await eventually(lambda: len(b.inbox) == 51 and len(a.inbox) == 1)
            assert a.t.peer_status()["b"] == {
                "address": b.addr,
                "connected": True,
                "queued": 0,
                "queued_bytes": 0,
                "last_error": None,
            }

    run(main())


def test_queue_is_bounded_while_peer_is_down() -> None:
    async def main() -> None:
        a = Node("a", queue_limit=100, queue_max_bytes=1 << 30)
        await a.t.start()
        a.t.set_peers({"b": f"127.0.0.1:{free_port()}"})
        try:
            payload = b"p" * 1000
            mk = lambda i: Message(  # noqa: E731
                MT.APP, "b", "a", term=1, index=i, entries=[Entry(i + 1, 1, data=payload)]
            )
            a.t.send([mk(i) for i in range(1000)])
            st = a.t.peer_status()["b"]
            assert st["queued"] == 100 and st["queued_bytes"] < 100 * 1100
            assert a.t.stats.dropped["queue_full"] == 900
            # Memory stays flat however much more is thrown at a dead peer.
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for chunk in range(20):
                a.t.send([mk(i) for i in range(chunk * 1000, chunk * 1000 + 1000)])
            grown = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            assert grown < 1 << 20, grown
            assert a.t.stats.dropped["queue_full"] == 20_900
            await eventually(lambda: a.t.stats.connect_failures >= 2)
            assert a.unreachable.count("b") >= 2  # reported while messages wait
        finally:
            await a.t.close()
        assert a.t.stats.dropped["closed"] == 100

    run(main())


def test_queue_byte_limit() -> None:
    async def main() -> None:
        a = Node("a", queue_limit=10_000, queue_max_bytes=10_000)
        await a.t.start()
        a.t.set_peers({"b": f"127.0.0.1:{free_port()}"})
        try:
            big = Message(MT.APP, "b", "a", index=0, entries=[Entry(1, 0, data=b"x" * 3000)])
            a.t.send([big] * 10)
            st = a.t.peer_status()["b"]
            assert st["queued"] == 3 and st["queued_bytes"] <= 10_000
            a.t.send([hb("a", "b", 1)])  # small ones still fit
            assert a.t.peer_status()["b"]["queued"] == 4
        finally:
            await a.t.close()

    run(main())


def test_backoff_is_bounded_and_jittered_by_injected_rng() -> None:
    async def main() -> None:
        rng = random.Random(7)
        a = Node("a", backoff_initial=0.05, backoff_max=0.2, rng=rng)
        await a.t.start()
        a.t.set_peers({"b": f"127.0.0.1:{free_port()}"})
        try:
            await asyncio.sleep(1.0)
            attempts = a.t.stats.connect_attempts
            # sleeps: [.025,.05] [.05,.1] then [.1,.2] each => at most ~12 in 1 s
            assert 2 <= attempts <= 14, attempts
            assert a.t.stats.connect_failures in (attempts, attempts - 1)
        finally:
            await a.t.close()
        assert rng.random() != random.Random(7).random()  # the injected rng was used

    run(main())


# ------------------------------------------------------------------------ garbage


def test_garbage_closes_only_that_connection(caplog) -> None:
    caplog.set_level(logging.INFO, LOGGER)

    async def main() -> None:
        async with cluster(["a", "b"], allow_unknown_peers=True) as nodes:
            a, b = nodes["a"], nodes["b"]
            port = b.t.bound_port
            rnd = random.Random(1234)
            cases: list[tuple[str, bytes]] = [
                ("random bytes", rnd.randbytes(512)),
                ("garbage frame", frame(rnd.randbytes(40))),
                ("huge length prefix", b"\xff\xff\xff\xff" + b"x" * 16),
                ("message instead of hello", frame(encode_message(hb("a", "b", 1)))),
                ("empty frame", frame(b"")),
            ]
            for label, data in cases:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                local = f"127.0.0.1:{w.get_extra_info('sockname')[1]}"
                w.write(data)
                assert await closed_by_peer(r), label
                w.close()
                await eventually(lambda local=local: warnings_about(caplog, local), what=label)
                assert len(warnings_about(caplog, local)) == 1, label

            # Authenticated (no secret: the hello is the identity), then garbage.
            for label, data in [
                ("undecodable message", frame(b"\x93\x01\x02")),
                ("local message type", frame(msgpack.packb([0, "b", "m"] + [0] * 9))),
                ("frame over max_frame", (b.t.max_frame + 1).to_bytes(4, "big")),
            ]:
                r, w, ok = await raw_dial(port, "mallory", "b")
                assert ok == [4]
                local = f"127.0.0.1:{w.get_extra_info('sockname')[1]}"
                w.write(data)
                assert await closed_by_peer(r), label
                w.close()
                await eventually(lambda local=local: warnings_about(caplog, local), what=label)
                (line,) = warnings_about(caplog, local)
                assert "mallory" in line, line

            # A silent client is dropped at the handshake timeout (info, not warning).
            r, w = await asyncio.open_connection("127.0.0.1", port)
            assert await closed_by_peer(r, timeout=5.0)
            w.close()

            assert b.t.stats.protocol_errors == 8
            assert not any(m.frm == "mallory" for m in b.inbox)
            # The real peer is unaffected.
            a.t.send([hb("a", "b", 42)])
            await eventually(lambda: [m.commit for m in b.frm("a")] == [42])

    run(main())


def test_on_message_exception_does_not_break_the_connection(caplog) -> None:
    async def main() -> None:
        async with cluster(["a", "b"]) as nodes:
            a, b = nodes["a"], nodes["b"]

            def flaky(m: Message) -> None:
                if m.commit == 1:
                    raise RuntimeError("boom")
                b.inbox.append(m)

            b.t.on_message = flaky
            a.t.send([hb("a", "b", i) for i in range(3)])
            await eventually(lambda: [m.commit for m in b.inbox] == [0, 2])
            assert a.t.stats.connections_established == 1

    run(main())
    assert any("on_message raised" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------ auth


def test_mismatched_secrets_are_rejected_both_ways(caplog) -> None:
    async def main() -> None:
        a, b = Node("a", cluster_secret=SECRET), Node("b", cluster_secret=OTHER_SECRET)
        for n in (a, b):
            await n.t.start()
        a.t.set_peers({"b": b.addr})
        b.t.set_peers({"a": a.addr})
        try:
            a.t.send([hb("a", "b", 1)])
            b.t.send([hb("b", "a", 1)])
            await eventually(lambda: a.t.stats.auth_failures >= 2 and b.t.stats.auth_failures >= 2)
            assert a.inbox == [] and b.inbox == []
            assert a.t.inbound_peers() == {} and b.t.inbound_peers() == {}
            assert "authentication" in a.t.peer_status()["b"]["last_error"]
            assert a.t.stats.snapshot()["received_messages_total"] == 0
        finally:
            await close_all([a, b])

    run(main())
    assert warnings_about(caplog, "authentication")
    text = "\n".join(r.getMessage() for r in caplog.records)
    for s in (SECRET, OTHER_SECRET):
        assert s.decode() not in text and repr(s) not in text and s.hex() not in text


@pytest.mark.parametrize("who_has_secret", ["dialer", "acceptor"])
def test_node_without_secret_cannot_talk_to_node_with_one(who_has_secret: str, caplog) -> None:
    async def main() -> None:
        sa = SECRET if who_has_secret == "dialer" else None
        sb = SECRET if who_has_secret == "acceptor" else None
        a, b = Node("a", cluster_secret=sa), Node("b", cluster_secret=sb)
        for n in (a, b):
            await n.t.start()
        b.t.set_peers({"a": a.addr})  # b never dials: only a -> b is exercised
        b.t.set_faults(drop={"a"})
        a.t.set_peers({"b": b.addr})
        try:
            a.t.send([hb("a", "b", 1)])
            await eventually(lambda: a.t.stats.auth_failures >= 2 and b.t.stats.auth_failures >= 2)
            assert b.t.stats.snapshot()["received_messages_total"] == 0 and b.inbox == []
            assert a.t.peer_status()["b"]["queued"] == 1  # still waiting, never sent
        finally:
            await close_all([a, b])

    run(main())
    assert warnings_about(caplog, "rejected connection from 127.0.0.1")
    assert warnings_about(caplog, "secret")


def test_wrong_mac_from_a_raw_dialer_is_rejected() -> None:
    async def main() -> None:
        b = Node("b", cluster_secret=SECRET)
        await b.t.start()
        b.t.set_peers({"a": f"127.0.0.1:{free_port()}"})
        try:
            r, w, resp = await raw_dial(b.t.bound_port, "a", "b", secret=SECRET, bad_mac=True)
            assert resp[0] == 5 and resp[1] == 2 and "authentication failed" in resp[2]
            w.write(frame(encode_message(hb("a", "b", 1))))  # must never be delivered
            assert await closed_by_peer(r)
            w.close()
            assert b.t.stats.auth_failures == 1 and b.inbox == []
            # The right secret works, through the same independent implementation.
            r, w, resp = await raw_dial(b.t.bound_port, "a", "b", secret=SECRET)
            assert resp == [4]
            w.write(frame(encode_message(hb("a", "b", 2))))
            await eventually(lambda: [m.commit for m in b.inbox] == [2])
            w.close()
        finally:
            await b.t.close()

    run(main())


def test_handshake_checks_identity_cluster_and_membership() -> None:
    async def main() -> None:
        b = Node("b", cluster_id="blue")
        await b.t.start()
        b.t.set_peers({"a": f"127.0.0.1:{free_port()}"})
        port = b.t.bound_port
        try:
            cases = [
                (dict(me="a", target="b", cluster="green"), "cluster id mismatch"),
                (dict(me="a", target="z", cluster="blue"), "wrong node"),
                (dict(me="zed", target="b", cluster="blue"), "unknown peer"),
                (dict(me="b", target="b", cluster="blue"), "own id"),
            ]
            for kw, reason in cases:
                r, w, resp = await raw_dial(port, **kw)
                assert resp[0] == 5 and resp[1] == 1 and reason in resp[2], (kw, resp)
                assert await closed_by_peer(r)
                w.close()
            # The dialer side checks it reached the node it meant (stale address).
            a = Node("a", cluster_id="blue")
            await a.t.start()
            a.t.set_peers({"c": b.addr})  # b's address, believed to be c's
            a.t.send([hb("a", "c", 1)])
            await eventually(lambda: a.t.stats.connect_failures >= 1)
            assert "wrong node" in (a.t.peer_status()["c"]["last_error"] or "")
            assert b.inbox == []
            await a.t.close()
        finally:
            await b.t.close()

    run(main())


def test_spoofed_sender_is_dropped(caplog) -> None:
    async def main() -> None:
        b = Node("b", cluster_secret=SECRET)
        await b.t.start()
        b.t.set_peers({"a": f"127.0.0.1:{free_port()}", "c": f"127.0.0.1:{free_port()}"})
        try:
            r, w, resp = await raw_dial(b.t.bound_port, "a", "b", secret=SECRET)
            assert resp == [4]
            w.write(frame(encode_message(hb("c", "b", 1))))  # a speaking for c
            w.write(frame(encode_message(hb("c", "b", 2))))
            w.write(frame(encode_message(hb("a", "z", 3))))  # not for b
            w.write(frame(encode_message(hb("a", "b", 4))))
            await eventually(lambda: len(b.inbox) == 1)
            assert b.inbox[0].frm == "a" and b.inbox[0].commit == 4
            assert b.t.stats.dropped["spoofed"] == 2 and b.t.stats.dropped["misaddressed"] == 1
            assert not r.at_eof()  # spoofing drops the message, not the connection
            w.close()
        finally:
            await b.t.close()

    run(main())
    assert len(warnings_about(caplog, "claiming frm='c'")) == 1  # once per connection
    assert len(warnings_about(caplog, "addressed to 'z'")) == 1


def test_sender_refuses_local_and_foreign_messages() -> None:
    async def main() -> None:
        async with cluster(["a", "b"]) as nodes:
            a, b = nodes["a"], nodes["b"]
            a.t.send(
                [
                    Message(MT.HUP, "b", "a"),
                    hb("x", "b", 1),  # not from a
                    hb("a", "nobody", 1),
                    hb("a", "a", 1),
                    Message(MT.APP, "b", "a", index=0, entries=[Entry(5, 1)]),  # gap
                    hb("a", "b", 9),
                ]
            )
            await eventually(lambda: len(b.inbox) == 1)
            assert b.inbox[0].commit == 9
            assert dict(a.t.stats.dropped) == {
                "unencodable": 2,
                "bad_sender": 1,
                "unknown_peer": 2,
            }

    run(main())


# ------------------------------------------------------------------------ faults


def test_drop_fault_blocks_both_directions_and_clears() -> None:
    async def main() -> None:
        async with cluster(["a", "b", "c"]) as nodes:
            a, b, c = nodes["a"], nodes["b"], nodes["c"]
            a.t.set_faults(drop={"b"})
            a.t.send([hb("a", "b", 1), hb("a", "c", 1)])
            b.t.send([hb("b", "a", 1), hb("b", "c", 1)])
            c.t.send([hb("c", "a", 1)])
            # Barriers: b's message reached a (and was discarded); others delivered.
            await eventually(lambda: a.t.stats.dropped["fault"] == 2)
            await eventually(lambda: len(c.inbox) == 2 and len(a.frm("c")) == 1)
            assert a.frm("b") == [] and b.frm("a") == []
            assert a.t.faults == {"drop": ["b"], "drop_out": [], "drop_in": [], "delay_ms": 0}
            a.t.set_faults()
            a.t.send([hb("a", "b", 2)])
            b.t.send([hb("b", "a", 2)])
            await eventually(lambda: len(a.frm("b")) == 1 and len(b.frm("a")) == 1)
            assert a.frm("b")[0].commit == 2 and b.frm("a")[0].commit == 2

    run(main())


def test_drop_out_fault_blocks_only_what_this_node_sends() -> None:
    async def main() -> None:
        async with cluster(["a", "b", "c"]) as nodes:
            a, b, c = nodes["a"], nodes["b"], nodes["c"]
            a.t.set_faults(drop_out={"b"})
            assert a.t.faults == {"drop": [], "drop_out": ["b"], "drop_in": [], "delay_ms": 0}
            b.t.send([hb("b", "a", 1)])  # b -> a still flows
            a.t.send([hb("a", "b", 1), hb("a", "c", 1)])
            await eventually(lambda: len(a.frm("b")) == 1 and len(c.frm("a")) == 1)
            assert a.t.stats.dropped["fault"] == 1  # the one a -> b, dropped on sending
            # Cleared: what a sends b flows again.
            a.t.set_faults()
            a.t.send([hb("a", "b", 2)])
            await eventually(lambda: len(b.frm("a")) == 1)
            assert [m.commit for m in b.frm("a")] == [2]
            assert b.t.stats.dropped["fault"] == 0

    run(main())


def test_drop_in_fault_blocks_only_what_this_node_receives() -> None:
    async def main() -> None:
        async with cluster(["a", "b", "c"]) as nodes:
            a, b, c = nodes["a"], nodes["b"], nodes["c"]
            a.t.set_faults(drop_in={"b"})
            a.t.send([hb("a", "b", 1)])  # a -> b still flows
            b.t.send([hb("b", "a", 1)])
            c.t.send([hb("c", "a", 1)])
            await eventually(lambda: len(b.frm("a")) == 1 and len(a.frm("c")) == 1)
            # b's message reached a (counted as received) and was discarded there.
            await eventually(lambda: a.t.stats.dropped["fault"] == 1)
            assert a.frm("b") == [] and b.t.stats.dropped["fault"] == 0
            a.t.set_faults()
            b.t.send([hb("b", "a", 2)])
            await eventually(lambda: len(a.frm("b")) == 1)
            assert a.frm("b")[0].commit == 2

    run(main())


def test_one_way_faults_compose_with_drop_and_delay() -> None:
    async def main() -> None:
        async with cluster(["a", "b", "c"]) as nodes:
            a, b, c = nodes["a"], nodes["b"], nodes["c"]
            loop = asyncio.get_running_loop()
            # Out to b and in from c are cut; both other directions are delayed.
            a.t.set_faults(drop_out={"b"}, drop_in={"c"}, delay_ms=150)
            t0 = loop.time()
            a.t.send([hb("a", "b", 1), hb("a", "c", 1)])
            b.t.send([hb("b", "a", 1)])
            c.t.send([hb("c", "a", 1)])
            await eventually(lambda: len(c.frm("a")) == 1 and len(a.frm("b")) == 1)
            assert loop.time() - t0 >= 0.14
            await eventually(lambda: a.t.stats.dropped["fault"] == 2)
            assert b.frm("a") == [] and a.frm("c") == []
            # A delayed message to a peer that becomes cut is dropped when it comes due.
            a.t.set_faults(delay_ms=300)
            a.t.send([hb("a", "b", 2)])
            a.t.set_faults(drop_out={"b"})
            await eventually(lambda: a.t.stats.dropped["fault"] == 3)
            assert b.frm("a") == []

    run(main())


@pytest.mark.parametrize("cut", ["drop", "drop_out"])
def test_cutting_outbound_discards_already_queued_messages_and_drop_in_does_not(
    cut: str,
) -> None:
    async def main() -> None:
        a = Node("a")
        await a.t.start()
        a.t.set_peers({"b": f"127.0.0.1:{free_port()}"})
        try:
            a.t.send([hb("a", "b", i) for i in range(5)])
            a.t.set_faults(drop_in={"b"})
            assert a.t.peer_status()["b"]["queued"] == 5
            a.t.set_faults(**{cut: {"b"}})
            assert a.t.peer_status()["b"]["queued"] == 0
            assert a.t.stats.dropped["fault"] == 5
        finally:
            await a.t.close()

    run(main())


def test_delay_fault_delays_both_directions_and_keeps_order() -> None:
    async def main() -> None:
        async with cluster(["a", "b"]) as nodes:
            a, b = nodes["a"], nodes["b"]
            loop = asyncio.get_running_loop()
            arrivals: dict[int, float] = {}
            b.t.on_message = lambda m: (
                b.inbox.append(m),
                arrivals.setdefault(m.commit, loop.time()),
            )
            a.t.send([hb("a", "b", 0)])
            b.t.send([hb("b", "a", 0)])
            await eventually(lambda: len(b.inbox) == 1 and len(a.inbox) == 1)

            a.t.set_faults(delay_ms=300)
            t0 = loop.time()
            a.t.send([hb("a", "b", i) for i in range(1, 11)])  # delayed 300 ms
            a.t.set_faults(delay_ms=0)
            a.t.send([hb("a", "b", i) for i in range(11, 21)])  # must not overtake
            await asyncio.sleep(0.15)
            assert len(b.inbox) == 1  # nothing overtook the delayed batch
            await eventually(lambda: len(b.inbox) == 21)
            assert [m.commit for m in b.inbox] == list(range(21))
            assert arrivals[1] - t0 >= 0.29 and arrivals[20] >= arrivals[10]

            a.t.set_faults(delay_ms=200)  # inbound to a is delayed too
            t1 = loop.time()
            b.t.send([hb("b", "a", 1)])
            await eventually(lambda: len(a.inbox) == 2)
            assert loop.time() - t1 >= 0.19

    run(main())


# ------------------------------------------------------------------------ membership


def test_set_peers_adds_removes_and_moves_peers() -> None:
    async def main() -> None:
        a, b, c = Node("a"), Node("b"), Node("c")
        for n in (a, b, c):
            await n.t.start()
        try:
            a.t.set_peers({"b": b.addr})
            b.t.set_peers({"a": a.addr})
            c.t.set_peers({"a": a.addr, "b": b.addr})
            a.t.send([hb("a", "b", 1), hb("a", "c", 1)])
            await eventually(lambda: len(b.inbox) == 1)
            assert a.t.stats.dropped["unknown_peer"] == 1  # c was not a peer yet

            a.t.set_peers({"b": b.addr, "c": c.addr})  # add c at runtime
            a.t.send([hb("a", "c", 2)])
            await eventually(lambda: [m.commit for m in c.inbox] == [2])
            assert c.t.inbound_peers() == {"a": 1}

            a.t.set_peers({"c": c.addr})  # remove b: its connections close
            await eventually(lambda: "a" not in b.t.inbound_peers(), what="b sees a's close")
            a.t.send([hb("a", "b", 3)])
            assert a.t.stats.dropped["unknown_peer"] == 2
            assert set(a.t.peers()) == {"c"}
            b.t.send([hb("b", "a", 1)])  # a no longer accepts b
            await eventually(lambda: b.t.stats.connect_failures >= 1)
            assert a.inbox == [] and "unknown peer" in b.t.peer_status()["a"]["last_error"]

            # c moves to a new port: same id, new address, queue kept.
            old_port = c.t.bound_port
            await c.t.close()
            c2 = Node("c")
            await c2.t.start()
            assert c2.t.bound_port != old_port
            c2.t.set_peers({"a": a.addr})
            a.t.send([hb("a", "c", 4)])
            a.t.set_peers({"c": c2.addr})
            await eventually(lambda: [m.commit for m in c2.inbox] == [4])
            await c2.t.close()
            with pytest.raises(ValueError):
                a.t.set_peers({"c": "no-port"})
            assert a.t.peers() == {"c": c2.addr}  # unchanged by the failed call
        finally:
            await close_all([a, b, c])

    run(main())
