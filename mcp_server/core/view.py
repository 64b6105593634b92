"""One consistent reading of a cluster: leader, configuration, quorum, lag, warnings.

Built from the adapter's member statuses by pure functions, so the safety rules here
can be unit-tested without a cluster and every operation reasons about the same view.

Definitions used throughout:

- the *leader* is the member claiming leadership with the highest term;
- the *configuration* (voters, learners, joint) is the leader's, else the newest
  reachable member's;
- a member is *available* when its API answers and, if there is a leader, it is the
  leader or follows it in the leader's term (a partitioned member answers the manager
  but does not follow anyone);
- *lag* is the leader's last index minus the member's match index (leader's view);
- *caught up* means the leader replicates to it in ``replicate`` state and its lag is
  at most ``CAUGHT_UP_LAG`` entries (or, in an idle cluster, it is in ``probe`` state
  with nothing missing and follows the leader).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from raft_core.quorum import VoteResult, joint_active, majority_vote
from raft_core.types import ConfState

from .audit import now_iso
from .models import ClusterStatus, Member, RaftGroup, StatusRequest
from .port import ClusterAdapter, MemberStatus

CAUGHT_UP_LAG = 10
GROUP_PAGE = 10  # groups per cluster_status page: 50 streams stay within a tool result
ROLES = {"leader", "follower", "candidate", "pre_candidate", "learner"}


def quorum_of(voters: Collection[str]) -> int:
    """How many of ``voters`` it takes to elect and commit, as ``raft_core.quorum`` counts.

    The manager asks the engine's own quorum rule rather than restating the arithmetic:
    the smallest number of granted votes that wins.
    """
    ordered = sorted(voters)
    for k in range(1, len(ordered) + 1):
        if majority_vote(ordered, dict.fromkeys(ordered[:k], True)) is VoteResult.WON:
            return k
    return 1  # no known voters: at least one member is always needed


def is_quorum(
    voters: Collection[str], nodes: Collection[str], outgoing: Collection[str] = ()
) -> bool:
    """Do ``nodes`` form a quorum of ``voters`` (and of ``outgoing`` while joint)?"""
    if not voters:
        return False
    conf = ConfState(voters=frozenset(voters), voters_outgoing=frozenset(outgoing))
    return joint_active(conf, frozenset(nodes))


@dataclass
class ClusterView:
    statuses: dict[str, MemberStatus]
    leader: MemberStatus | None = None
    leaders: list[MemberStatus] = field(default_factory=list)
    reference: MemberStatus | None = None

    @classmethod
    def build(cls, statuses: dict[str, MemberStatus]) -> ClusterView:
        up = [s for s in statuses.values() if s.reachable]
        leaders = sorted(
            (s for s in up if s.role == "leader"), key=lambda s: s.term or 0, reverse=True
        )
        leader = leaders[0] if leaders else None
        if leader is not None:
            ref: MemberStatus | None = leader
        elif up:
            ref = max(up, key=lambda s: (s.term or 0, s.commit_index or 0, s.last_index or 0))
        else:
            ref = None
        return cls(statuses, leader, leaders, ref)

    # -- configuration ----------------------------------------------------------------

    @property
    def voters(self) -> list[str]:
        return sorted(self.reference.voters) if self.reference else []

    @property
    def voters_outgoing(self) -> list[str]:
        return sorted(self.reference.voters_outgoing) if self.reference else []

    @property
    def learners(self) -> list[str]:
        return sorted(self.reference.learners) if self.reference else []

    @property
    def joint(self) -> bool:
        return bool(self.reference and self.reference.joint)

    @property
    def term(self) -> int | None:
        if self.leader is not None:
            return self.leader.term
        terms = [s.term for s in self.statuses.values() if s.reachable and s.term is not None]
        return max(terms) if terms else None

    @property
    def last_known_leader(self) -> str | None:
        """The leader, else the one most reachable members still name (e.g. just killed)."""
        if self.leader is not None:
            return self.leader.id
        named = [s.leader for s in self.statuses.values() if s.reachable and s.leader]
        return max(set(named), key=named.count) if named else None

    @property
    def change_in_flight(self) -> bool:
        ld = self.leader
        if self.joint:
            return True
        if ld is None or ld.pending_conf_index is None or ld.applied_index is None:
            return False
        return ld.pending_conf_index > ld.applied_index

    def members(self) -> list[str]:
        ids = set(self.statuses) | set(self.voters) | set(self.learners)
        ids |= set(self.voters_outgoing)
        return sorted(ids, key=_natural)

    # -- per member ------------------------------------------------------------------------

    def is_voter(self, node: str) -> bool:
        return node in self.voters or node in self.voters_outgoing

    def is_learner(self, node: str) -> bool:
        return node in self.learners

    def reachable(self, node: str) -> bool:
        st = self.statuses.get(node)
        return bool(st and st.reachable)

    def available(self, node: str) -> bool:
        st = self.statuses.get(node)
        if st is None or not st.reachable:
            return False
        ld = self.leader
        if ld is None or st.id == ld.id:
            return True
        return st.leader == ld.id and st.term == ld.term

    def progress(self, node: str):
        ld = self.leader
        if ld is None or not ld.progress:
            return None
        return ld.progress.get(node)

    def match_index(self, node: str) -> int | None:
        pr = self.progress(node)
        return pr.match if pr else None

    def lag(self, node: str) -> int | None:
        ld = self.leader
        if ld is not None and node == ld.id:
            return 0
        pr = self.progress(node)
        if pr is not None and ld is not None and ld.last_index is not None:
            return max(0, ld.last_index - pr.match)
        st = self.statuses.get(node)
        ref = self.reference
        if ref and st and st.reachable and ref.commit_index is not None and st.applied_index:
            return max(0, ref.commit_index - st.applied_index)
        return None

    def caught_up(self, node: str) -> bool | None:
        if self.leader is None:
            return None
        if node == self.leader.id:
            return True
        pr = self.progress(node)
        lag = self.lag(node)
        if pr is None or lag is None or lag > CAUGHT_UP_LAG:
            return False
        if pr.state == "replicate":
            return True
        # An idle leader has nothing to send a follower in probe state, so it stays there
        # although it holds the whole log: count it when it demonstrably follows.
        return pr.state == "probe" and lag == 0 and self.available(node)

    def lag_reason(self, node: str) -> str:
        pr = self.progress(node)
        lag = self.lag(node)
        if pr is None:
            return f"{node} has no replication progress on the leader"
        return (
            f"{node} is {lag} entries behind the leader (match {pr.match}, "
            f"replication {pr.state}; caught up means replicating and <= {CAUGHT_UP_LAG} behind)"
        )

    # -- quorum ---------------------------------------------------------------------------

    def quorum(self) -> int:
        return quorum_of(self.voters)

    def available_voters(self, voters: list[str] | None = None) -> list[str]:
        return [v for v in (self.voters if voters is None else voters) if self.available(v)]

    def has_quorum(self) -> bool:
        available = [m for m in self.members() if self.available(m)]
        return is_quorum(self.voters, available, self.voters_outgoing)

    def no_quorum_reason(self) -> str:
        return (
            f"quorum lost: {len(self.available_voters())} of {len(self.voters)} voters "
            f"available, {self.quorum()} needed; recover members first (raft-manager recover NODE)"
        )

    def most_up_to_date(self, candidates: list[str]) -> str | None:
        best = [
            self.statuses[c]
            for c in candidates
            if c in self.statuses and self.statuses[c].reachable
        ]
        if not best:
            return None
        return max(
            best, key=lambda s: (s.last_term or 0, s.last_index or 0, s.commit_index or 0)
        ).id

    def most_caught_up(self, candidates: list[str]) -> str | None:
        ok = [c for c in candidates if self.available(c) and self.caught_up(c)]
        if not ok:
            return None
        return max(ok, key=lambda c: (self.match_index(c) or 0, c))

    # -- warnings ----------------------------------------------------------------------------

    def _peer_auth(self, m: str) -> str | None:
        st = self.statuses.get(m)
        return st.peer_auth if st is not None and st.reachable else None

    def warnings(self) -> list[str]:
        w: list[str] = []
        up = [s for s in self.statuses.values() if s.reachable]
        if not up:
            return ["no member answered: the cluster is down or unreachable from here"]
        if len(self.leaders) > 1:
            claims = ", ".join(f"{s.id} (term {s.term})" for s in self.leaders)
            w.append(
                f"{len(self.leaders)} members claim leadership: {claims}; only the highest "
                "term can commit, the others are stale (partitioned?)"
            )
        if self.leader is None:
            w.append("no leader: an election may be in progress, or no quorum can elect one")
        # Older nodes do not report peer_auth (None): no warning for them.
        open_peers = [m for m in self.members() if self._peer_auth(m) == "none"]
        if open_peers:
            w.append(
                f"no peer authentication on {', '.join(open_peers)}: any process that reaches "
                "a peer port can speak Raft to it (start clusters without --insecure, or give "
                "the nodes peer TLS certificates or a cluster secret)"
            )
        for m in self.members():
            st = self.statuses.get(m)
            role = "voter" if self.is_voter(m) else ("learner" if self.is_learner(m) else None)
            if role is None:
                continue
            if st is None or not st.reachable:
                why = (st.error if st else None) or "no status"
                w.append(f"{role} {m} is unreachable ({why})")
                continue
            if self.leader is not None and m != self.leader.id:
                if not self.available(m):
                    w.append(
                        f"{role} {m} does not follow leader {self.leader.id} in term "
                        f"{self.leader.term} (its role: {st.role}, its leader: {st.leader}); "
                        "partitioned?"
                    )
                elif self.caught_up(m) is False:
                    w.append(f"{role} {m} is lagging: {self.lag_reason(m)}")
        if self.joint:
            w.append(
                "a joint configuration is in force (old voters "
                f"{','.join(self.voters_outgoing)}, new {','.join(self.voters)}); wait for it "
                "to be left before another change"
            )
        elif self.change_in_flight:
            w.append("a configuration change is in flight (proposed, not yet applied)")
        if self.voters:
            avail, q = len(self.available_voters()), self.quorum()
            if not self.has_quorum():
                w.append(f"quorum lost: {avail} of {len(self.voters)} voters available, {q} needed")
            elif avail == q and len(self.voters) > 1:
                w.append(
                    f"quorum at risk: exactly {q} of {len(self.voters)} voters available; "
                    "losing one more stops the cluster"
                )
        for s in up:
            if s.faults and any(s.faults.values()):
                active = {k: v for k, v in s.faults.items() if v}
                w.append(f"{s.id} has injected faults: {active}")
        for s in self.statuses.values():
            if s.alarms:
                w.append(f"{s.id} has active alarms: {', '.join(s.alarms)}")
        return w


def status_model(view: ClusterView, *, cluster: str, kind: str, mode: str) -> ClusterStatus:
    """The ``cluster_status`` answer for this view."""
    members = []
    for m in view.members():
        st = view.statuses.get(m)
        reachable = bool(st and st.reachable)
        pr = view.progress(m)
        in_config = view.is_voter(m) or view.is_learner(m)
        role = st.role if st and reachable and st.role in ROLES else "unknown"
        members.append(
            Member(
                id=m,
                role=role,  # type: ignore[arg-type]
                reachable=reachable,
                voter=view.is_voter(m),
                learner=view.is_learner(m),
                term=st.term if st else None,
                leader=st.leader if st else None,
                commit_index=st.commit_index if st else None,
                applied_index=st.applied_index if st else None,
                last_index=st.last_index if st else None,
                snapshot_index=st.snapshot_index if st else None,
                match_index=pr.match if pr else None,
                lag=view.lag(m) if in_config else None,
                replication=pr.state if pr else None,
                caught_up=view.caught_up(m) if in_config else None,
                api_address=st.api_address if st else None,
                process=st.process if st else None,  # type: ignore[arg-type]
                pid=st.pid if st else None,
                error=None if reachable else (st.error if st else "no status"),
                **_kind_facts(st),
            )
        )
    return ClusterStatus(
        cluster=cluster,
        kind=kind,
        mode=mode,  # type: ignore[arg-type]
        leader=view.leader.id if view.leader else None,
        term=view.term,
        commit_index=view.leader.commit_index if view.leader else None,
        voters=view.voters,
        learners=view.learners,
        voters_outgoing=view.voters_outgoing,
        joint=view.joint,
        change_in_flight=view.change_in_flight,
        quorum=view.quorum(),
        reachable_voters=len(view.available_voters()),
        members=members,
        warnings=view.warnings(),
        checked_at=now_iso(),
    )


def status_with_groups(
    adapter: ClusterAdapter, req: StatusRequest, *, cluster: str, kind: str, mode: str
) -> ClusterStatus:
    """The status of ``adapter``'s group with one page of every group's summary (the
    named group alone when the request names one)."""
    if req.group is not None or not adapter.supports_groups:
        view = ClusterView.build(adapter.statuses())
        st = status_model(view, cluster=cluster, kind=kind, mode=mode)
        st.group, st.groups_total = adapter.group, 1
        st.groups = [group_summary(adapter.group, view)]
        return st
    every = adapter.group_statuses_all()
    view = ClusterView.build(every[adapter.group])
    st = status_model(view, cluster=cluster, kind=kind, mode=mode)
    names = sorted(every, key=lambda n: (n != adapter.group, n))
    page = names[req.group_offset : req.group_offset + req.group_limit]
    st.group = adapter.group
    st.groups = [group_summary(n, ClusterView.build(every[n])) for n in page]
    st.groups_total = len(names)
    end = req.group_offset + len(page)
    st.next_group_offset = end if end < len(names) else None
    return st


def group_summary(name: str, view: ClusterView) -> RaftGroup:
    """One line's worth of a Raft group: leader, members, quorum, who lags, warnings."""
    members = view.voters or view.members()
    lagging = [m for m in members if view.leader is not None and view.caught_up(m) is False]
    return RaftGroup(
        name=name,
        leader=view.leader.id if view.leader else None,
        members=members,
        quorum=view.quorum(),
        available=len(view.available_voters()),
        lagging=lagging,
        index=view.leader.last_index if view.leader else None,
        warnings=view.warnings(),
    )


def group_line(g: RaftGroup) -> str:
    """The summary line cluster_status shows for a group."""
    state = "ok" if not g.warnings else f"{len(g.warnings)} warning(s)"
    lag = f", lagging {','.join(g.lagging)}" if g.lagging else ""
    index = f", index {g.index}" if g.index is not None else ""
    return (
        f"{g.name}: leader {g.leader or 'NONE'}, {g.available}/{len(g.members)} available "
        f"(quorum {g.quorum}){lag}{index}: {state}"
    )


def _kind_facts(st: MemberStatus | None) -> dict:
    """The kind-specific member facts an adapter filled in (etcd's names, URLs, ...)."""
    if st is None:
        return {}
    facts = {
        "name": st.name,
        "member_id": st.member_id,
        "peer_urls": st.peer_urls or None,
        "db_size": st.db_size,
        "revision": st.revision,
        "version": st.version,
        "alarms": st.alarms or None,
    }
    return {k: v for k, v in facts.items() if v is not None}


def _natural(s: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))
