"""A seeded, lossy network for the simulator.

Every message gets a delivery time drawn from the seeded RNG, which reorders them
naturally; some are dropped or duplicated. Partitions are sets of blocked directed
links, so asymmetric partitions (A hears B, B does not hear A) are expressible.
Endpoints are node ids and client ids alike.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Endpoint = str


@dataclass(slots=True)
class LinkProfile:
    min_delay_ms: float = 0.5
    max_delay_ms: float = 5.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    # With this probability a message is delayed much longer (a slow path): the
    # main source of reordering across heartbeats.
    spike_rate: float = 0.0
    spike_ms: float = 60.0


@dataclass
class NetworkStats:
    sent: Counter = field(default_factory=Counter)
    delivered: Counter = field(default_factory=Counter)
    dropped: int = 0
    duplicated: int = 0


class SimNetwork:
    def __init__(
        self,
        rng: random.Random,
        schedule: Callable[[float, Callable[[], None]], None],
        profile: LinkProfile | None = None,
    ) -> None:
        self.rng = rng
        self.schedule = schedule
        self.profile = profile or LinkProfile()
        self.blocked: set[tuple[Endpoint, Endpoint]] = set()
        self.receivers: dict[Endpoint, Callable[[object], None]] = {}
        self.stats = NetworkStats()
        # Optional test hook: return False to drop a specific message.
        self.filter: Callable[[Endpoint, Endpoint, object], bool] | None = None
        # Bumped by lose_in_flight: messages sent in an earlier epoch are not delivered.
        self._epochs: dict[Endpoint, int] = {}

    def attach(self, endpoint: Endpoint, receive: Callable[[object], None]) -> None:
        self.receivers[endpoint] = receive

    # -- partitions ----------------------------------------------------------

    def partition(self, *groups: Iterable[Endpoint]) -> None:
        """Split the given endpoints into groups that cannot reach each other."""
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for j, b in enumerate(sets):
                if i != j:
                    self.blocked.update((x, y) for x in a for y in b)

    def block(self, src: Endpoint, dst: Endpoint) -> None:
        """Block one direction only."""
        self.blocked.add((src, dst))

    def isolate(self, endpoint: Endpoint, others: Iterable[Endpoint]) -> None:
        for o in others:
            if o != endpoint:
                self.blocked.add((endpoint, o))
                self.blocked.add((o, endpoint))

    def heal(self) -> None:
        self.blocked.clear()

    def reachable(self, src: Endpoint, dst: Endpoint) -> bool:
        return (src, dst) not in self.blocked

    def lose_in_flight(self, src: Endpoint) -> None:
        """Everything ``src`` sent that has not arrived yet is lost (a process that
        dies with its socket buffers)."""
        self._epochs[src] = self._epochs.get(src, 0) + 1

    # -- delivery ------------------------------------------------------------

    def send(self, src: Endpoint, dst: Endpoint, msg: object, kind: str) -> None:
        self.stats.sent[kind] += 1
        if (src, dst) in self.blocked:
            self.stats.dropped += 1
            return
        if self.filter is not None and not self.filter(src, dst, msg):
            self.stats.dropped += 1
            return
        p = self.profile
        rng = self.rng
        if p.drop_rate and rng.random() < p.drop_rate:
            self.stats.dropped += 1
            return
        copies = 1
        if p.duplicate_rate and rng.random() < p.duplicate_rate:
            copies = 2
            self.stats.duplicated += 1
        epoch = self._epochs.get(src, 0)
        for _ in range(copies):
            delay = rng.uniform(p.min_delay_ms, p.max_delay_ms)
            if p.spike_rate and rng.random() < p.spike_rate:
                delay += rng.uniform(0, p.spike_ms)
            self.schedule(delay, lambda: self._deliver(src, dst, msg, kind, epoch))

    def _deliver(self, src: Endpoint, dst: Endpoint, msg: object, kind: str, epoch: int) -> None:
        # A partition that started while the message was in flight also stops it.
        if (src, dst) in self.blocked or epoch != self._epochs.get(src, 0):
            self.stats.dropped += 1
            return
        receive = self.receivers.get(dst)
        if receive is None:
            self.stats.dropped += 1
            return
        self.stats.delivered[kind] += 1
        receive(msg)
