"""Which asyncio event loop runs a node: uvloop where it is installed, else asyncio.

uvloop (a dependency where it has wheels) does the socket work of the loop in C.
Measured on a 2-core machine, 3 nodes on loopback, no fsync: about 17 % more writes
per second at 64 clients, and a slightly lower median at one client; README
"Performance" has the numbers. ``asyncio`` stays available with ``--event-loop
asyncio``, and is what runs when uvloop is not installed (``auto``).

With peer TLS, ``auto`` picks asyncio: an accepted peer connection is upgraded to TLS
by ``start_tls`` (so that a failed handshake is logged and counted), and on uvloop
0.21-0.23 that server-side upgrade hangs until its timeout on a fair share of
connections (measured: about one in three). ``--event-loop uvloop`` with peer TLS is
refused for the same reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

CHOICES = ("auto", "uvloop", "asyncio")

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


UVLOOP_WITH_PEER_TLS = (
    "--event-loop uvloop cannot serve peer TLS (uvloop's server-side TLS upgrade hangs "
    "intermittently); use --event-loop auto or asyncio"
)


class EventLoopUnavailable(RuntimeError):
    """``uvloop`` was asked for by name and is not installed."""


def loop_runner(choice: str = "auto", *, peer_tls: bool = False) -> tuple[str, Runner]:
    """The loop's name and an ``asyncio.run``-like function for ``choice``."""
    if choice not in CHOICES:
        raise ValueError(f"event loop must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "uvloop" and peer_tls:
        raise EventLoopUnavailable(UVLOOP_WITH_PEER_TLS)
    if choice == "uvloop" or (choice == "auto" and not peer_tls):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise EventLoopUnavailable(
                    "--event-loop uvloop: uvloop is not installed (pip install uvloop, "
                    "or use --event-loop asyncio)"
                ) from None
        else:
            return "uvloop", uvloop.run
    return "asyncio", asyncio.run
