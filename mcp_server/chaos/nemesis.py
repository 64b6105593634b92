"""The nemesis: injects the scheduled faults into a local cluster's real processes.

* kill: SIGKILL the leader, a follower or every member (``kill-all``: what was
  acknowledged must survive), restart after the hold (every one before waiting for any).
* pause: SIGSTOP, then SIGCONT. ``pause-isolated-leader`` first cuts the leader off
  from every peer, pauses it while the others elect a new leader, wakes it while it is
  still cut off (it still believes in its old term) and sends it linearizable reads,
  the first ones while it is still stopped, so they are waiting for it when it wakes; a
  paused leader woken normally is probed the same way. Those reads go into the history
  (client ``probe``), so a stale answer is a linearizability violation.
* partition (raft-node only): the node fault API (``POST /v1/admin/faults``): isolated leader,
  minority, split (no majority with an even count), bridge (two sides that only one
  node hears both of), one-way (the leader's messages to everyone dropped while it still
  hears them, or a follower that hears nothing from the leader while the leader hears it).
  With ``--network nft`` (``nft.NftTarget``) the same cuts are nftables rules in the
  members' network namespaces instead, plus ``flap``: a leader-follower link cut and
  restored every fraction of a second while held.
* disk (raft-node only): every WAL sync of the leader or of a follower made slower by
  100, 250 or 500 ms (``disk_delay_ms``), then healed.
* membership and transfer: through the manager's guarded operations
  (``Manager.change_membership`` add_voter / remove, ``Manager.elect_leader``), so the
  chaos run also exercises their plans and safety checks; a plan the manager refuses is
  recorded as a refused step, not forced.

After every step everything is healed (processes resumed or restarted, fault sets
cleared), so each fault is judged on its own. A ``required`` step (the schedule's first
round, one of each kind) is never skipped for running late, and is retried up to
``RETRIES`` times when it could not be applied, so every kind asked for is injected.
The :class:`~.target.Target` re-reads the cluster's state file before every action: the
manager rewrites it when it starts or retires a member.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx

from ..core import ManagerError
from ..local import ClusterError
from ..manager import Manager
from .models import FaultEvent
from .schedule import FaultStep
from .target import Target
from .workload import Client, History, Members

PROBE_S = 1.5
RETRIES = 2
DISK_DELAYS_MS = (100, 250, 500)
FLAP_PERIOD_S = (0.3, 1.0)
MIN_VOTERS, MAX_VOTERS = 3, 5
Undo = Callable[[], Awaitable[None]]


class Nemesis:
    def __init__(
        self,
        target: Target,
        manager: Manager,
        members: Members,
        http: httpx.AsyncClient,
        history: History,
        log: Callable[[str], None],
    ) -> None:
        self.target = target
        self.mgr = manager
        self.members = members
        self.http = http
        self.history = history
        self.log = log
        self.events: list[FaultEvent] = []
        self.paused: set[int] = set()
        self.flapping: asyncio.Task[None] | None = None
        self.last_id = 0
        self.probe = Client(
            "probe", history, members, http, random.Random(0), dialect=target.dialect
        )

    # -- the cluster as it is now ------------------------------------------------------

    def refresh_members(self) -> None:
        self.members.update(self.target.addresses())

    async def statuses(self) -> dict[str, dict[str, Any]]:
        return await self.target.statuses(self.http)

    async def leader(self, wait_s: float = 5.0) -> str | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            sts = await self.statuses()
            leaders = [(st["term"], n) for n, st in sts.items() if st.get("role") == "leader"]
            if leaders:
                return max(leaders)[1]
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.1)

    async def settle(self, wait_s: float = 5.0) -> None:
        """Wait (bounded) until every member follows one leader, so that each fault
        starts from a healthy cluster and the manager's guards judge the fault, not the
        previous one's aftermath."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            sts = await self.statuses()
            leaders = {st.get("leader") for st in sts.values()}
            if (
                len(sts) == len(self.members.addresses)
                and len(leaders) == 1
                and None not in leaders
            ):
                return
            await asyncio.sleep(0.1)

    async def voters(self) -> list[str]:
        lead = await self.leader()
        sts = await self.statuses()
        st = sts.get(lead or "", None) or next(iter(sts.values()), {})
        return sorted(st.get("voters", []))

    # -- the run -----------------------------------------------------------------------

    async def run(self, schedule: list[FaultStep], stop_at: float) -> None:
        for step in schedule:
            wait = step.at - self.history.now()
            if wait > 0:
                await asyncio.sleep(wait)
            if not step.required and self.history.now() + step.hold > stop_at:
                self.log(f"{self.history.now():7.1f}s  skipping {step.variant}: past the end")
                break
            event = await self.apply(step)
            self.events.append(event)
            for attempt in range(1, RETRIES + 1 if step.required else 1):
                if event.applied:
                    break
                self.log(f"{self.history.now():7.1f}s  retrying {step.kind} ({attempt})")
                event = await self.apply(replace(step, pick=step.pick + attempt))
                self.events.append(event)

    async def apply(self, step: FaultStep) -> FaultEvent:
        rng = random.Random(step.pick)
        await self.settle()
        start = self.history.now()
        targets: list[str] = []
        applied = False
        detail = ""
        try:
            targets, detail, undo = await getattr(self, "_" + step.kind)(step.variant, rng)
            applied = True
            self.log(f"{start:7.1f}s  {step.variant}: {detail}")
            await asyncio.sleep(step.hold)
            await undo()
        except (ManagerError, ClusterError, httpx.HTTPError, OSError, LookupError) as e:
            why = e.reason if isinstance(e, ManagerError) else str(e)
            detail = f"{detail}; undoing it failed: {why}" if applied else f"not applied: {why}"
            self.log(f"{start:7.1f}s  {step.variant}: {detail}")
        finally:
            await self.heal()
        return FaultEvent(
            kind=step.kind,
            variant=step.variant,
            targets=targets,
            start=start,
            end=self.history.now(),
            applied=applied,
            detail=detail,
        )

    async def heal(self) -> None:
        """Stop a flapping link, resume paused processes, restart dead ones, clear every
        fault set."""
        with contextlib.suppress(ManagerError, httpx.HTTPError, OSError):  # the step reports it
            await self._stop_flapping()
        for pid in sorted(self.paused):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused.clear()
        dead = self.target.dead()
        if dead:
            with contextlib.suppress(ClusterError):
                await asyncio.to_thread(self.target.start_all, dead, 15.0)
        self.refresh_members()
        await self.set_faults({n: {} for n in self.members.addresses})

    async def set_faults(self, faults: dict[str, dict[str, Any]]) -> None:
        await self.target.set_faults(self.http, faults)

    async def _cut(self, side_a: list[str], side_b: list[str]) -> None:
        drops: dict[str, set[str]] = {n: set() for n in self.members.addresses}
        for a in side_a:
            for b in side_b:
                drops[a].add(b)
                drops[b].add(a)
        await self.set_faults({n: {"drop": sorted(d)} for n, d in drops.items() if d})

    async def _pick_target(self, variant: str, rng: random.Random) -> tuple[str, str | None]:
        lead = await self.leader()
        nodes = sorted(self.members.addresses)
        if "leader" in variant:
            if lead is None:
                raise LookupError("no leader to target")
            return lead, lead
        followers = [n for n in nodes if n != lead]
        return rng.choice(followers or nodes), lead

    async def _probe(self, node: str) -> str:
        """Linearizable reads sent to ``node`` alone for PROBE_S (recorded as ``probe``)."""
        self.probe.pinned = node
        loop = asyncio.get_running_loop()
        end = loop.time() + PROBE_S
        answered = 0
        while loop.time() < end:
            for key in self.history.live_keys():
                op = await self.probe.get(key)
                answered += op.status == "ok"
        return f"{answered} probe read(s) answered by {node}"

    # -- the faults --------------------------------------------------------------------

    async def _kill(self, variant: str, rng: random.Random) -> tuple[list[str], str, Undo]:
        if variant == "kill-all":
            nodes = sorted(self.members.addresses)  # acknowledged writes must survive this
        else:
            nodes = [(await self._pick_target(variant, rng))[0]]
        for node in nodes:
            await asyncio.to_thread(self.target.kill, node)

        async def undo() -> None:
            await asyncio.to_thread(self.target.start_all, nodes, 15.0)

        return nodes, f"killed {','.join(nodes)} (SIGKILL)", undo

    async def _pause(self, variant: str, rng: random.Random) -> tuple[list[str], str, Undo]:
        node, lead = await self._pick_target(variant, rng)
        isolated = variant == "pause-isolated-leader"
        if isolated:
            await self._cut([node], [n for n in self.members.addresses if n != node])
        pid = self.target.pid(node)
        if pid is None:
            raise LookupError(f"{node} has no process")
        os.kill(pid, signal.SIGSTOP)
        self.paused.add(pid)

        async def undo() -> None:
            probe = None
            if node == lead:
                # The first probe reads are sent while it is still stopped: they wait in
                # its socket and are the first thing it sees on waking, in its old term.
                probe = asyncio.create_task(self._probe(node))
                await asyncio.sleep(0.2)
            os.kill(pid, signal.SIGCONT)
            self.paused.discard(pid)
            if probe is not None:
                self.log(f"{self.history.now():7.1f}s  woke {node}: {await probe}")

        how = "cut off from its peers, then paused" if isolated else "paused"
        return [node], f"{node} {how} (SIGSTOP)", undo

    async def _partition(self, variant: str, rng: random.Random) -> tuple[list[str], str, Undo]:
        nodes = sorted(self.members.addresses)
        lead = await self.leader()
        if variant == "isolate-leader":
            if lead is None:
                raise LookupError("no leader to isolate")
            a, b = [lead], [n for n in nodes if n != lead]
            detail = f"leader {lead} isolated from {','.join(b)}"
        elif variant == "bridge":
            rest = list(nodes)
            rng.shuffle(rest)
            bridge = rest.pop()
            a, b = rest[: len(rest) // 2], rest[len(rest) // 2 :]
            detail = f"{','.join(a)} | {','.join(b)} cut apart; {bridge} hears both sides"
        elif variant == "one-way":
            return await self._one_way(nodes, lead, rng)
        elif variant == "flap":
            return await self._flap(nodes, lead, rng)
        else:
            shuffled = list(nodes)
            rng.shuffle(shuffled)
            k = (len(nodes) - 1) // 2 if variant == "minority" else len(nodes) // 2
            a, b = sorted(shuffled[: max(k, 1)]), sorted(shuffled[max(k, 1) :])
            detail = f"{','.join(a)} | {','.join(b)}"
        await self._cut(a, b)
        return sorted(a), detail, self._clear_all

    async def _one_way(
        self, nodes: list[str], lead: str | None, rng: random.Random
    ) -> tuple[list[str], str, Undo]:
        """A one-way cut: the leader goes mute (its messages to everyone are dropped,
        theirs still reach it), or a follower goes deaf to the leader (it hears the
        others; the leader still hears it)."""
        if lead is None:
            raise LookupError("no leader to cut one way")
        rest = [n for n in nodes if n != lead]
        if rng.random() < 0.5:
            await self.set_faults({lead: {"drop_out": rest}})
            to = ",".join(rest)
            detail = f"leader {lead}'s messages to {to} dropped (it still hears them)"
            return [lead], detail, self._clear_all
        deaf = rng.choice(rest)
        await self.set_faults({deaf: {"drop_in": [lead]}})
        detail = f"{deaf} hears nothing from leader {lead} (which still hears {deaf})"
        return [deaf], detail, self._clear_all

    async def _flap(
        self, nodes: list[str], lead: str | None, rng: random.Random
    ) -> tuple[list[str], str, Undo]:
        """A flapping link: the leader and one follower cut apart and joined again every
        ``period`` seconds while the fault is held (their connections keep dying and
        coming back, elections may start and stop)."""
        if lead is None:
            raise LookupError("no leader whose link could flap")
        other = rng.choice([n for n in nodes if n != lead])
        period = round(rng.uniform(*FLAP_PERIOD_S), 2)
        await self._cut([lead], [other])

        async def flap() -> None:
            cut = True
            while True:
                await asyncio.sleep(period)
                cut = not cut
                await (self._cut([lead], [other]) if cut else self._clear_all())

        self.flapping = asyncio.create_task(flap())

        async def undo() -> None:
            await self._stop_flapping()
            await self._clear_all()

        detail = f"link {lead} <-> {other} flapping: cut and restored every {period}s"
        return [lead, other], detail, undo

    async def _stop_flapping(self) -> None:
        task, self.flapping = self.flapping, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _clear_all(self) -> None:
        await self.set_faults({n: {} for n in self.members.addresses})

    async def _disk(self, variant: str, rng: random.Random) -> tuple[list[str], str, Undo]:
        node, lead = await self._pick_target(variant, rng)
        delay = rng.choice(DISK_DELAYS_MS)
        await self.set_faults({node: {"disk_delay_ms": delay}})
        role = "leader" if node == lead else "follower"
        return [node], f"slow disk on {role} {node}: every WAL sync +{delay} ms", self._clear_all

    async def _membership(self, variant: str, rng: random.Random) -> tuple[list[str], str, Undo]:
        voters = await self.voters()
        if variant == "remove-voter" and len(voters) <= MIN_VOTERS:
            variant = "add-voter"
        if variant != "remove-voter" and len(voters) >= MAX_VOTERS:
            variant = "remove-voter"
        done: list[str] = []
        targets: list[str] = []
        if variant in ("add-voter", "replace"):
            # Never reuse an id: a removed member's id coming back is a different node.
            ids = [*self.target.addresses(), *voters]
            self.last_id = max([self.last_id, *(int(x[1:]) for x in ids if x[1:].isdigit())])
            self.last_id += 1
            new = f"n{self.last_id}"
            await asyncio.to_thread(
                self.mgr.change_membership,
                "add_voter",
                new,
                dry_run=False,
                catch_up_timeout_s=15.0,
            )
            self.refresh_members()
            done.append(f"added voter {new}")
            targets.append(new)
        if variant in ("remove-voter", "replace"):
            victim = rng.choice([v for v in voters if v not in targets])
            await asyncio.to_thread(self.mgr.change_membership, "remove", victim, dry_run=False)
            self.refresh_members()
            done.append(f"removed {victim}")
            targets.append(victim)

        async def undo() -> None:
            return None

        return targets, f"{variant} via the manager: {'; '.join(done)}", undo

    async def _transfer(self, variant: str, rng: random.Random) -> tuple[list[str], str, Undo]:
        lead = await self.leader()
        voters = [v for v in await self.voters() if v != lead]
        if not voters:
            raise LookupError("no other voter to transfer to")
        target = rng.choice(voters)
        r = await asyncio.to_thread(self.mgr.elect_leader, target)
        previous = getattr(r, "previous_leader", lead)

        async def undo() -> None:
            return None

        return [target], f"leadership {previous} -> {getattr(r, 'leader', target)}", undo
