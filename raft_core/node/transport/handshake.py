"""The peer connection's handshake and framing: HELLO, WELCOME, AUTH, OK or REJECT
(the package docstring describes the exchange), the HMAC over both nonces and both
ids, and the length-prefixed frames everything travels in.

``dial`` and ``accept`` run one side each on a fresh connection and raise
``HandshakeError`` (configuration), ``AuthError`` (secret or certificate),
``ProtocolError`` (garbage) or ``ConnectionError``; the transport decides what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import socket
from collections.abc import Callable
from typing import Any

import msgpack

from raft_core.codec import MAX_NODE_ID_LEN
from raft_core.node.tls import cert_names
from raft_core.types import NodeId

PROTOCOL_VERSION = 1
HANDSHAKE_MAX_FRAME = 4096
NONCE_BYTES = 32

HELLO, WELCOME, AUTH, OK, REJECT = 1, 2, 3, 4, 5
REJECT_CONFIG, REJECT_AUTH = 1, 2  # REJECT codes
STREAM_LIMIT = 1 << 20  # StreamReader buffer high-water mark
HEADER_LEN = 4


class ProtocolError(Exception):
    """The remote end broke the protocol (garbage, over-size frame, bad message)."""


class HandshakeError(Exception):
    """The handshake failed for a configuration reason (ids, cluster, version)."""


class AuthError(HandshakeError):
    """Authentication failed or the two ends disagree on whether to authenticate."""


class Rejected(HandshakeError):
    """The acceptor sent REJECT with a reason."""


def fmt_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peername(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return fmt_addr(str(peer[0]), int(peer[1]))
    return str(peer)


def cert_ids(writer: asyncio.StreamWriter) -> set[str]:
    """Node ids the other side's (verified) TLS certificate names."""
    return cert_names(writer.get_extra_info("peercert"))


def wrong_cert(claimed: str, names: set[str], who: str) -> str:
    """Why a certificate from the cluster's CA is still refused: it is another node's
    (copied to the wrong host, or a host posing as another member)."""
    return (
        f"{who} claims to be {claimed!r} but its TLS certificate names "
        f"{', '.join(sorted(names)) or 'nothing'}: a certificate issued for another node; "
        f"give {claimed} its own (raft-manager certs issue {claimed})"
    )


def valid_id(v: Any) -> bool:
    return type(v) is str and 0 < len(v) <= MAX_NODE_ID_LEN


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(HEADER_LEN, "big") + payload


def mac(
    secret: bytes,
    role: str,
    cluster_id: str | None,
    dialer: str,
    acceptor: str,
    nonce_d: bytes,
    nonce_a: bytes,
) -> bytes:
    transcript = msgpack.packb(
        [role, PROTOCOL_VERSION, cluster_id, dialer, acceptor, nonce_d, nonce_a],
        use_bin_type=True,
    )
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def set_keepalive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def close_writer(writer: asyncio.StreamWriter | None, *, abort: bool = False) -> None:
    if writer is None:
        return
    with contextlib.suppress(Exception):
        if abort:
            writer.transport.abort()
        else:
            writer.close()


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    """Read one frame. ``IncompleteReadError`` on EOF; ``ProtocolError`` if over ``limit``."""
    header = await reader.readexactly(HEADER_LEN)
    n = int.from_bytes(header, "big")
    if n > limit:
        raise ProtocolError(f"frame of {n} bytes exceeds the limit of {limit}")
    return await reader.readexactly(n)


def unpack_handshake(payload: bytes, expected: int, shape: tuple[Any, ...]) -> list:
    """Decode a handshake frame of kind ``expected`` whose fields match ``shape`` types.

    A REJECT frame raises :class:`Rejected`; anything malformed raises
    :class:`ProtocolError`.
    """
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            max_str_len=4 * 256,
            max_bin_len=64,
            max_array_len=8,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:
        raise ProtocolError(f"malformed handshake frame ({type(exc).__name__})") from None
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise ProtocolError("malformed handshake frame")
    if (
        obj[0] == REJECT
        and expected != HELLO
        and len(obj) == 3
        and type(obj[1]) is int
        and type(obj[2]) is str
    ):
        cls = AuthError if obj[1] == REJECT_AUTH else Rejected
        raise cls(f"rejected by peer: {obj[2][:200]}")
    if obj[0] != expected or len(obj) != len(shape) + 1:
        raise ProtocolError(f"expected handshake frame kind {expected}, got {obj[0]}")
    for value, kinds in zip(obj[1:], shape, strict=True):
        if type(value) not in kinds:
            raise ProtocolError(f"malformed handshake frame kind {expected}")
    return obj


HELLO_SHAPE = ((int,), (str, type(None)), (str,), (str,), (bytes,))
WELCOME_SHAPE = ((int,), (str, type(None)), (str,), (bytes,), (bytes,))
AUTH_SHAPE = ((bytes,),)
OK_SHAPE: tuple[Any, ...] = ()


async def read_handshake(reader: asyncio.StreamReader, kind: int, shape: tuple[Any, ...]) -> list:
    try:
        payload = await read_frame(reader, HANDSHAKE_MAX_FRAME)
    except asyncio.IncompleteReadError:
        raise ConnectionError("connection closed during handshake") from None
    return unpack_handshake(payload, kind, shape)


async def dial(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    node_id: NodeId,
    peer_id: NodeId,
    cluster_id: str | None,
    secret: bytes | None,
    tls: bool,
) -> None:
    """The dialer's side: prove who we are to ``peer_id`` and check it is who we meant."""
    nonce_d = os.urandom(NONCE_BYTES) if secret else b""
    hello = [HELLO, PROTOCOL_VERSION, cluster_id, node_id, peer_id, nonce_d]
    writer.write(frame(msgpack.packb(hello, use_bin_type=True)))
    await writer.drain()
    _, version, cluster, acceptor, nonce_a, mac_a = await read_handshake(
        reader, WELCOME, WELCOME_SHAPE
    )
    if version != PROTOCOL_VERSION:
        raise HandshakeError(f"peer speaks protocol version {version}")
    if cluster != cluster_id:
        raise HandshakeError(f"cluster id mismatch (peer {cluster!r}, ours {cluster_id!r})")
    if acceptor != peer_id:
        raise HandshakeError(f"reached node {acceptor!r}, expected {peer_id!r}")
    if tls and peer_id not in (names := cert_ids(writer)):
        raise AuthError(wrong_cert(peer_id, names, f"the peer at {peername(writer)}"))
    if secret is None:
        if nonce_a or mac_a:
            raise AuthError("peer requires a cluster secret; none configured here")
        mac_d = b""
    else:
        if not nonce_a or len(nonce_a) != NONCE_BYTES:
            raise AuthError("peer has no cluster secret configured")
        args = (cluster_id, node_id, peer_id, nonce_d, nonce_a)
        expected = mac(secret, "acceptor", *args)
        if not hmac.compare_digest(expected, mac_a):
            raise AuthError("peer failed authentication (cluster secret mismatch?)")
        mac_d = mac(secret, "dialer", *args)
    writer.write(frame(msgpack.packb([AUTH, mac_d], use_bin_type=True)))
    await writer.drain()
    await read_handshake(reader, OK, OK_SHAPE)


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    addr: str,
    *,
    node_id: NodeId,
    cluster_id: str | None,
    secret: bytes | None,
    tls: bool,
    knows: Callable[[NodeId], bool],
) -> NodeId | None:
    """The acceptor's side: the authenticated dialer's id, or None if it closed before
    saying hello. A dialer refused for a reason is told it (REJECT) before the error is
    raised; ``knows`` says whether a dialer id may connect at all."""
    try:
        payload = await read_frame(reader, HANDSHAKE_MAX_FRAME)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("truncated handshake frame") from None
        return None
    _, version, cluster, dialer, target, nonce_d = unpack_handshake(payload, HELLO, HELLO_SHAPE)
    if not valid_id(dialer):
        raise ProtocolError("hello carries an invalid node id")

    async def reject(reason: str, exc_type: type[HandshakeError] = HandshakeError) -> None:
        code = REJECT_AUTH if issubclass(exc_type, AuthError) else REJECT_CONFIG
        writer.write(frame(msgpack.packb([REJECT, code, reason], use_bin_type=True)))
        with contextlib.suppress(Exception):
            await writer.drain()
        raise exc_type(f"{dialer!r}: {reason}")

    if version != PROTOCOL_VERSION:
        await reject(f"unsupported protocol version {version} (this node speaks 1)")
    if cluster != cluster_id:
        await reject(f"cluster id mismatch (this node is in {cluster_id!r})")
    if target != node_id:
        await reject(f"wrong node: this is {node_id!r}, not {target!r}")
    if dialer == node_id:
        await reject("dialer claims this node's own id")
    if not knows(dialer):
        await reject("unknown peer (not in this node's peer set)")
    if tls and dialer not in (names := cert_ids(writer)):
        await reject(wrong_cert(dialer, names, "the dialer"), AuthError)
    if secret is None and nonce_d:
        await reject("authentication offered but no cluster secret configured here", AuthError)
    if secret is not None and len(nonce_d) != NONCE_BYTES:
        await reject("authentication required (cluster secret)", AuthError)
    nonce_a = os.urandom(NONCE_BYTES) if secret else b""
    args = (cluster_id, dialer, node_id, nonce_d, nonce_a)
    mac_a = mac(secret, "acceptor", *args) if secret else b""
    welcome = [WELCOME, PROTOCOL_VERSION, cluster_id, node_id, nonce_a, mac_a]
    writer.write(frame(msgpack.packb(welcome, use_bin_type=True)))
    await writer.drain()
    try:
        payload = await read_frame(reader, HANDSHAKE_MAX_FRAME)
    except asyncio.IncompleteReadError:
        raise ConnectionError(f"{dialer!r} closed the connection during handshake") from None
    (_, mac_d) = unpack_handshake(payload, AUTH, AUTH_SHAPE)
    if secret is None:
        if mac_d:
            await reject("authentication failed", AuthError)
    elif not hmac.compare_digest(mac(secret, "dialer", *args), mac_d):
        await reject("authentication failed", AuthError)
    writer.write(frame(msgpack.packb([OK], use_bin_type=True)))
    await writer.drain()
    return dialer


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    if isinstance(exc, HandshakeError | ProtocolError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
