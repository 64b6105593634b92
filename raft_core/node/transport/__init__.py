"""Asyncio TCP transport carrying Raft messages between nodes.

Model
-----
Every node dials one *outbound* connection to each peer and sends its messages over
it; connections a node *accepts* are read-only from its point of view (node A talks to
B over A's connection to B, B answers over B's connection to A). Nothing here blocks
or raises into the Raft node: :meth:`PeerTransport.send` only encodes and queues, and
per-peer tasks connect, reconnect with exponential backoff and jitter, and write.

Framing: a 4-byte big-endian length, then the payload. After the handshake every
payload is one :func:`raft_core.codec.encode_message` encoding. Handshake frames are
msgpack arrays (``bin`` for byte strings), at most ``HANDSHAKE_MAX_FRAME`` bytes::

    dialer   -> acceptor  HELLO   [1, version, cluster_id|nil, dialer_id, target_id, nonce_d]
    acceptor -> dialer    WELCOME [2, version, cluster_id|nil, acceptor_id, nonce_a, mac_a]
    dialer   -> acceptor  AUTH    [3, mac_d]
    acceptor -> dialer    OK      [4]
    acceptor -> dialer    REJECT  [5, code, reason]   (instead of WELCOME/OK; then close;
                                                       code 1 = configuration, 2 = auth)

With a cluster secret, nonces are 32 random bytes and
``mac_x = HMAC-SHA256(secret, msgpack([role_x, version, cluster_id, dialer_id,
acceptor_id, nonce_d, nonce_a]))`` with ``role_x`` ``"acceptor"``/``"dialer"``, so each
side proves knowledge of the secret over both fresh nonces and both ids, and a proof
cannot be reflected back. Without a secret the nonces and MACs are empty, and a node
with a secret refuses a peer without one (and vice versa). The acceptor checks the
dialer means to reach *it* (``target_id``) and the dialer checks it reached the peer it
meant (``acceptor_id``): a stale address cannot deliver messages to the wrong node.

Note: the challenge-response authenticates connection set-up only; frames after it are
not individually authenticated or encrypted. For that, use mutual TLS (``tls=``, see
:mod:`raft_core.node.tls`): every connection is then TLS with certificates from the
cluster's CA on both sides, a dialer without one is refused in the TLS handshake before
any frame is read, and after HELLO each side checks that the other's certificate names
the node id it claims. The secret handshake still runs inside TLS if both are set.
:attr:`PeerTransport.peer_auth` says which protection is on: ``"tls"``, ``"secret"``
or ``"none"`` (anything that can reach the port can then speak Raft).

Inbound messages whose ``frm`` differs from the connection's authenticated id, or whose
``to`` is not this node, are dropped with a warning (once per connection). A peer that
sends garbage (bad frame, over-size frame, undecodable message) has its connection
closed with a single warning naming its address; nothing else is affected.

The package, one module per seam: ``handshake`` (framing, the handshake and its MAC),
``faults`` (dropped links and delay lines), ``pump`` (each peer's queue and the task
that writes it), ``stats`` (the counters) and ``core`` (``PeerTransport``, which ties
them together and reads inbound connections).
"""

from ..address import parse_address
from .core import DEFAULT_MAX_FRAME, PeerTransport
from .handshake import HANDSHAKE_MAX_FRAME, PROTOCOL_VERSION
from .stats import TransportStats

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HANDSHAKE_MAX_FRAME",
    "PROTOCOL_VERSION",
    "PeerTransport",
    "TransportStats",
    "parse_address",
]
