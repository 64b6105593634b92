"""Failover time: kill -9 the leader under light load; seconds until a write commits.

One method for every HTTP system: a single writer keeps writing to the leader for a
moment (the light load), the leader is killed, and from then on a fresh write is sent
every ``PROBE_EVERY_S`` to each survivor in turn, each with its own deadline. The first
acknowledged write ends the round. Probes overlap on purpose: a write sent while there
is no leader may hang until the server's own timeout (etcd queues it), and a probe
sent just after the election should not wait behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

PROBE_EVERY_S = 0.01
PROBE_TIMEOUT_S = 5.0
LIGHT_LOAD_S = 0.5
ROUND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WriteProbe:
    """How to send one write to a member: method, URL path, JSON body; success codes."""

    method: str
    path: str
    body: Callable[[int], dict]
    ok: frozenset[int] = frozenset({200})


async def _write(client: httpx.AsyncClient, api: str, probe: WriteProbe, seq: int) -> bool:
    try:
        r = await client.request(
            probe.method, f"http://{api}{probe.path}", json=probe.body(seq), timeout=PROBE_TIMEOUT_S
        )
    except httpx.HTTPError:
        return False
    return r.status_code in probe.ok


async def _round(
    leader: str, survivors: list[str], kill: Callable[[], None], probe: WriteProbe
) -> float:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1000)) as client:
        seq = 0
        until = time.monotonic() + LIGHT_LOAD_S
        while time.monotonic() < until:
            seq += 1
            await _write(client, leader, probe, seq)
        kill()
        t0 = time.monotonic()
        done: asyncio.Queue[float] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def attempt(api: str, n: int) -> None:
            if await _write(client, api, probe, n):
                done.put_nowait(time.monotonic() - t0)

        try:
            i = 0
            while time.monotonic() - t0 < ROUND_TIMEOUT_S:
                if not done.empty():
                    return done.get_nowait()
                seq += 1
                t = asyncio.create_task(attempt(survivors[i % len(survivors)], seq))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                i += 1
                await asyncio.sleep(PROBE_EVERY_S)
            raise RuntimeError(f"no write committed within {ROUND_TIMEOUT_S:.0f}s of the kill")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def measure_failover(
    leader: str, survivors: list[str], kill: Callable[[], None], probe: WriteProbe
) -> float:
    """One round: ``leader`` and ``survivors`` are API addresses; ``kill`` sends SIGKILL."""
    return asyncio.run(_round(leader, survivors, kill, probe))
