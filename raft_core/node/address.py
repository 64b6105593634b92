"""One rule for ``host:port`` addresses (peers, listeners, member addresses)."""

from __future__ import annotations


def parse_address(text: object, what: str = "address", *, listen: bool = False) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; ``ValueError`` if malformed.

    Port 0 (any free port) is accepted only where we ``listen``: a peer cannot be
    reached there.
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a 'host:port' string, got {type(text).__name__}")
    host, sep, port_s = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"{what} {text!r} is not HOST:PORT")
    port = int(port_s)
    if not (0 if listen else 1) <= port < 65536:
        raise ValueError(f"{what} {text!r}: port out of range")
    return host, port
