"""Fault injection on the peer links: which peers' traffic is dropped (both ways, or
one way), and the delay lines that hold messages back in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raft_core.types import NodeId


@dataclass(frozen=True, slots=True)
class FaultSet:
    """What ``PeerTransport.set_faults`` took: ``drop`` both ways, ``drop_out`` only
    this node's messages to them, ``drop_in`` only theirs to this node; every message
    held ``delay`` seconds."""

    drop: frozenset[NodeId] = frozenset()
    drop_out: frozenset[NodeId] = frozenset()
    drop_in: frozenset[NodeId] = frozenset()
    delay: float = 0.0
    # Computed once here, read for every message.
    no_send: frozenset[NodeId] = field(init=False)
    no_recv: frozenset[NodeId] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "no_send", self.drop | self.drop_out)
        object.__setattr__(self, "no_recv", self.drop | self.drop_in)

    def to_dict(self) -> dict[str, Any]:
        """As the API reports it (ids sorted, the delay in milliseconds)."""
        return {
            "drop": sorted(self.drop),
            "drop_out": sorted(self.drop_out),
            "drop_in": sorted(self.drop_in),
            "delay_ms": round(self.delay * 1000),
        }


class DelayLine:
    """FIFO that releases items ``delay`` seconds after they were added, in order.

    Due times never decrease, so lowering the delay cannot let a later item overtake
    an earlier one.
    """

    __slots__ = ("deliver", "items", "last_due", "loop", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[Any], None]) -> None:
        self.loop = loop
        self.deliver = deliver
        self.items: deque[tuple[float, Any]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.last_due = 0.0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Any, delay: float) -> None:
        due = max(self.loop.time() + delay, self.last_due)
        self.last_due = due
        self.items.append((due, item))
        if self.timer is None:
            self.timer = self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        items = self.items
        # The timer was armed for the head, so it is due (the loop may fire timers up
        # to one clock resolution early); anything else due by now goes with it.
        _, item = items.popleft()
        self.deliver(item)
        now = self.loop.time()
        while items and items[0][0] <= now:
            _, item = items.popleft()
            self.deliver(item)
        if items and self.timer is None:
            self.timer = self.loop.call_at(items[0][0], self._fire)

    def cancel(self) -> list[Any]:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        dropped = [item for _, item in self.items]
        self.items.clear()
        return dropped
