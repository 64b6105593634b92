"""verify_consistency: do the members' applied state and committed logs agree?

1. *Applied state.* Every raft_core member keeps a running hash (``chain``) over each
   entry it applied. Take the lowest applied index N among the reachable members and
   compare everyone's chain at N. Members that do not agree with the largest group
   (ties go to the leader's group) diverge; a binary search over retained chains finds
   the first index where they differ. Members at the same applied index also compare
   their state-machine hashes.
2. *Committed logs.* Over the committed prefix every member still retains, compare
   each entry's (term, digest) -- all of them when the range is small, a sample of
   indexes otherwise.

Clusters that can hash only their current state (etcd: ``supports_state_history`` is
false) compare the hashes of members standing at the same revision instead, and say
what that cannot prove.

``consistent`` is true when at least two members were compared and nothing diverged,
false when something diverged (each divergence names the member and index), and null
when fewer than two members could be compared.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..core.context import OperationContext
from ..core.errors import ManagerError, NotSupported
from ..core.models import Divergence, VerifyReport
from ..core.port import ClusterAdapter, StateDigest
from ..core.view import ClusterView

OPERATION = "verify_consistency"

FULL_LOG_LIMIT = 1000
LOG_SAMPLES = 64
SAME_REVISION_TRIES = 10


def verify(ctx: OperationContext) -> VerifyReport:
    """The verify_consistency answer for the cluster as it is now."""
    return check(ctx.adapter, ctx.view(), ctx.name)


@dataclass
class _Run:
    """What one verification found so far."""

    pool: list[str]
    unchecked: list[str]
    reasons: list[str]
    divergences: list[Divergence] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def report(self, cluster: str, consistent: bool | None, **kw: Any) -> VerifyReport:
        return VerifyReport(
            cluster=cluster,
            consistent=consistent,
            checked=sorted(self.pool),
            unchecked=sorted(self.unchecked),
            divergences=self.divergences,
            reasons=self.reasons,
            seconds=round(time.monotonic() - self.t0, 3),
            **{"common_index": None, **kw},
        )


def check(adapter: ClusterAdapter, view: ClusterView, cluster: str) -> VerifyReport:
    members = [m for m in view.members() if view.is_voter(m) or view.is_learner(m)]
    pool = [m for m in members if view.reachable(m)]
    unchecked = [m for m in members if m not in pool]
    run = _Run(pool, unchecked, [f"{m} is unreachable: not compared" for m in unchecked])
    if len(pool) < 2:
        run.reasons.insert(
            0, f"only {len(pool)} member(s) reachable: at least two are needed to compare"
        )
        return run.report(cluster, None)
    if not adapter.supports_state_history:
        return _check_current_state(adapter, view, cluster, run)
    n, digests = _common_digests(adapter, view, run)
    if len(run.pool) < 2:
        run.reasons.insert(0, "no common applied index that two or more members still retain")
        return run.report(cluster, None)
    leader = view.leader.id if view.leader else None
    ref, ref_chain = _compare_chains(adapter, digests, leader, n, run)
    _compare_state_hashes(adapter, leader, run)
    log_range, checked = _compare_committed_logs(adapter, view, ref, run)
    return run.report(
        cluster,
        not run.divergences,
        common_index=n,
        chain=ref_chain,
        log_range=log_range,
        log_indexes_checked=checked,
    )


def _check_current_state(
    adapter: ClusterAdapter, view: ClusterView, cluster: str, run: _Run
) -> VerifyReport:
    """Members whose state can only be hashed now (etcd): compare hashes taken while
    every compared member stands at the same revision, retrying while writes move them."""
    digests = _same_revision_digests(adapter, run)
    if digests is None:
        return run.report(cluster, None)
    if len(digests) < 2:
        run.reasons.insert(0, "fewer than two members answered a hash request")
        return run.report(cluster, None)
    revision = next(iter(digests.values())).index
    groups: dict[str, list[str]] = defaultdict(list)
    for m, d in digests.items():
        groups[d.chain].append(m)
    leader = view.leader.id if view.leader else None
    ref = max(groups, key=lambda h: (len(groups[h]), leader in groups[h]))
    for h, ms in groups.items():
        if h == ref:
            continue
        for m in sorted(ms):
            run.divergences.append(
                Divergence(
                    member=m,
                    index=revision,
                    kind="state_hash",
                    expected=ref,
                    found=h,
                    detail=f"{m}'s key space hashes differently from "
                    f"{', '.join(sorted(groups[ref]))} at revision {revision}",
                )
            )
    applied = {m: view.statuses[m].applied_index for m in digests if m in view.statuses}
    first, *rest = adapter.current_state_notes(revision)
    run.reasons.append(
        f"{first} (applied indexes when read: "
        + ", ".join(f"{m} {a}" for m, a in sorted(applied.items()))
        + ")"
    )
    run.reasons += rest
    return run.report(cluster, not run.divergences, common_index=revision, chain=ref)


def _same_revision_digests(adapter: ClusterAdapter, run: _Run) -> dict[str, StateDigest] | None:
    """Each member's current hash, once all of them answer at one revision; None (with
    the reason) when writes kept them apart for every try."""
    digests: dict[str, StateDigest] = {}
    for _ in range(SAME_REVISION_TRIES):
        digests = {}
        for m in list(run.pool):
            try:
                digests[m] = adapter.state_digest(m)
            except ManagerError as e:
                run.pool.remove(m)
                run.unchecked.append(m)
                run.reasons.append(f"{m} did not answer a hash request: {e.reason}")
        if len({d.index for d in digests.values()}) <= 1:
            return digests
        time.sleep(0.2)
    revs = ", ".join(f"{m} {d.index}" for m, d in sorted(digests.items()))
    run.reasons.insert(0, f"the members never stood at one revision (writes kept coming): {revs}")
    return None


def _common_digests(
    adapter: ClusterAdapter, view: ClusterView, run: _Run
) -> tuple[int, dict[str, StateDigest]]:
    """Everyone's chain at the lowest applied index; members whose history at that index
    is gone (others compacted past it) are dropped from the comparison."""
    pool = run.pool
    digests: dict[str, StateDigest] = {}
    n = 0
    while len(pool) >= 2:
        applied = {m: view.statuses[m].applied_index or 0 for m in pool}
        n = min(applied.values())
        digests, missing = {}, []
        for m in pool:
            try:
                digests[m] = adapter.state_digest(m, at=n)
            except ManagerError:
                missing.append(m)
        if not missing:
            break
        for m in [m for m in pool if applied[m] == n]:
            pool.remove(m)
            run.unchecked.append(m)
            run.reasons.append(
                f"{m} (applied {n}) is behind the state history others retain: not compared"
            )
    return n, digests


def _compare_chains(
    adapter: ClusterAdapter,
    digests: dict[str, StateDigest],
    leader: str | None,
    n: int,
    run: _Run,
) -> tuple[str, str]:
    """Group members by chain at ``n``; the largest group (ties: the leader's) is right."""
    groups: dict[str, list[str]] = defaultdict(list)
    for m, d in digests.items():
        groups[d.chain].append(m)
    ref_chain = max(groups, key=lambda c: (len(groups[c]), leader in groups[c], -len(c)))
    ref_members = sorted(groups[ref_chain])
    ref = leader if leader in ref_members else ref_members[0]
    for chain, ms in groups.items():
        if chain == ref_chain:
            continue
        for m in sorted(ms):
            index, exact = _first_difference(adapter, ref, m, n)
            where = f"first at index {index}" if exact else f"at or before index {index}"
            run.divergences.append(
                Divergence(
                    member=m,
                    index=index,
                    kind="applied_state",
                    expected=ref_chain[:16],
                    found=chain[:16],
                    detail=f"{m}'s applied state differs from {', '.join(ref_members)} {where}",
                )
            )
    return ref, ref_chain


def _compare_state_hashes(adapter: ClusterAdapter, leader: str | None, run: _Run) -> None:
    """Members now at the same applied index (and chain) must hold the same state."""
    current: dict[str, StateDigest] = {}
    for m in run.pool:
        with contextlib.suppress(ManagerError):
            current[m] = adapter.state_digest(m)
    by_index: dict[tuple[int, str], list[str]] = defaultdict(list)
    for m, d in current.items():
        by_index[(d.index, d.chain)].append(m)
    for (idx, _), ms in by_index.items():
        counts: dict[str | None, list[str]] = defaultdict(list)
        for m in ms:
            if current[m].state_hash:
                counts[current[m].state_hash].append(m)
        if len(counts) < 2:
            continue
        good = max(counts, key=lambda h: (len(counts[h]), leader in counts[h]))
        for h, bad in counts.items():
            if h == good:
                continue
            for m in bad:
                run.divergences.append(
                    Divergence(
                        member=m,
                        index=idx,
                        kind="state_hash",
                        expected=(good or "")[:16],
                        found=(h or "")[:16],
                        detail=f"{m}'s state machine differs at index {idx} although it "
                        "applied the same entries",
                    )
                )


def _compare_committed_logs(
    adapter: ClusterAdapter, view: ClusterView, ref: str, run: _Run
) -> tuple[list[int] | None, int]:
    if not adapter.supports_log_digests:
        run.reasons.append(
            f"{adapter.kind} does not expose log digests: compared state hashes only"
        )
        return None, 0
    lo = max(view.statuses[m].first_index or 1 for m in run.pool)
    hi = min(view.statuses[m].commit_index or 0 for m in run.pool)
    if hi < lo:
        run.reasons.append("no committed log range is retained by every compared member")
        return None, 0
    checked, log_div = _compare_logs(adapter, run.pool, ref, lo, hi)
    run.divergences.extend(log_div)
    return [lo, hi], checked


def _first_difference(adapter: ClusterAdapter, ref: str, m: str, n: int) -> tuple[int, bool]:
    """First index where ``m``'s chain differs from ``ref``'s (exact if history allows)."""
    lo, hi = 0, n  # chains agree at lo (empty), differ at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            a = adapter.state_digest(ref, at=mid).chain
            b = adapter.state_digest(m, at=mid).chain
        except ManagerError:
            return hi, False
        if a == b:
            lo = mid
        else:
            hi = mid
    return hi, True


def _compare_logs(
    adapter: ClusterAdapter, pool: list[str], ref: str, lo: int, hi: int
) -> tuple[int, list[Divergence]]:
    if hi - lo + 1 <= FULL_LOG_LIMIT:
        indexes = list(range(lo, hi + 1))
        ranges = [(lo, hi)]
    else:
        step = (hi - lo) / (LOG_SAMPLES - 1)
        indexes = sorted({lo + round(i * step) for i in range(LOG_SAMPLES)} | {hi})
        ranges = [(i, i) for i in indexes]
    entries: dict[str, dict[int, tuple[int, str]]] = {}
    for m in pool:
        got: dict[int, tuple[int, str]] = {}
        try:
            for a, b in ranges:
                for e in adapter.log_digests(m, a, b).entries:
                    got[e.index] = (e.term, e.digest)
        except NotSupported:
            return 0, []
        except ManagerError:
            continue
        entries[m] = got
    base = entries.get(ref, {})
    out: list[Divergence] = []
    compared = 0
    for i in indexes:
        if i not in base:
            continue
        compared += 1
    for m in pool:
        if m == ref or m not in entries:
            continue
        for i in indexes:
            if i not in base or i not in entries[m]:
                continue
            if entries[m][i] != base[i]:
                (t1, d1), (t2, d2) = base[i], entries[m][i]
                out.append(
                    Divergence(
                        member=m,
                        index=i,
                        kind="log_entry",
                        expected=f"term {t1} digest {d1}",
                        found=f"term {t2} digest {d2}",
                        detail=f"{m}'s committed log entry {i} differs from {ref}'s",
                    )
                )
                break
    return compared, out
