"""Raft's safety properties, checked incrementally while a simulation runs.

Each check is fed by the simulator at the moment the relevant fact appears (an entry
persisted, a commit index observed, an entry applied, a leader elected), so checking
"at every step" costs little more than the step itself:

* election safety: at most one leader per term;
* log matching: two entries with the same index and term carry the same data and
  follow entries with the same term (by induction, identical prefixes);
* leader completeness: a new leader of term T holds every entry committed in a term
  before T (a candidate paused between its votes and counting them may lead a term
  that the cluster has left behind; it need not hold what later terms committed);
* state machine safety: no two nodes apply different entries at one index, and an
  applied entry is the committed one;
* monotonicity: a node's term and commit index never go backwards, not even across a
  crash and restart;
* honest answers: a configuration change the driver reported in force is the entry
  the cluster applied at its index, and one it reported replaced is not; a
  leadership transfer reported done names the node that won that term.
"""

from __future__ import annotations

import hashlib

from ..types import Entry, NodeId


class InvariantViolation(AssertionError):
    pass


def _fingerprint(e: Entry) -> tuple[int, bytes]:
    return int(e.type), hashlib.blake2b(e.data, digest_size=8).digest()


class SafetyChecker:
    def __init__(self) -> None:
        self.leaders: dict[int, NodeId] = {}
        # (index, term) -> (fingerprint, term of the previous entry or None if unknown)
        self.entries: dict[tuple[int, int], tuple[tuple[int, bytes], int | None]] = {}
        # index -> (term, fingerprint) for entries known committed
        self.committed: dict[int, tuple[int, tuple[int, bytes]]] = {}
        # index -> the lowest term of a node that saw it committed: it was committed
        # in that term or an earlier one
        self.committed_by_term: dict[int, int] = {}
        self.applied: dict[int, tuple[int, tuple[int, bytes]]] = {}
        self.last_term: dict[NodeId, int] = {}
        self.last_commit: dict[NodeId, int] = {}
        self.violations: list[str] = []

    def _fail(self, what: str) -> None:
        self.violations.append(what)
        raise InvariantViolation(what)

    def leader_elected(self, node: NodeId, term: int) -> None:
        other = self.leaders.get(term)
        if other is not None and other != node:
            self._fail(f"election safety: {other} and {node} both leaders in term {term}")
        self.leaders[term] = node

    def entries_persisted(self, node: NodeId, entries: list[Entry], prev_term: int | None) -> None:
        prev = prev_term
        for e in entries:
            key = (e.index, e.term)
            fp = _fingerprint(e)
            known = self.entries.get(key)
            if known is None:
                self.entries[key] = (fp, prev)
            else:
                kfp, kprev = known
                if kfp != fp:
                    self._fail(
                        f"log matching: {node} has a different entry at index {e.index} "
                        f"term {e.term} than another node"
                    )
                if kprev is not None and prev is not None and kprev != prev:
                    self._fail(
                        f"log matching: {node}'s entry {e.index}/{e.term} follows term {prev}, "
                        f"another node's follows term {kprev}"
                    )
                if kprev is None and prev is not None:
                    self.entries[key] = (kfp, prev)
            prev = e.term

    def commit_observed(self, node: NodeId, commit: int, entry_at) -> None:
        """``entry_at(i)`` gives the node's entry at i, or None if compacted."""
        last = self.last_commit.get(node, 0)
        if commit < last:
            self._fail(f"commit index of {node} went back from {last} to {commit}")
        for i in range(last + 1, commit + 1):
            e = entry_at(i)
            if e is None:
                continue
            fp = (e.term, _fingerprint(e))
            known = self.committed.get(i)
            seen_in = self.last_term.get(node, 0)
            if seen_in < self.committed_by_term.get(i, seen_in + 1):
                self.committed_by_term[i] = seen_in
            if known is None:
                self.committed[i] = fp
            elif known != fp:
                self._fail(
                    f"state machine safety: {node} committed {e.index}/{e.term} but "
                    f"{i}/{known[0]} was committed before"
                )
        self.last_commit[node] = max(last, commit)

    def term_observed(self, node: NodeId, term: int) -> None:
        last = self.last_term.get(node, 0)
        if term < last:
            self._fail(f"term of {node} went back from {last} to {term}")
        self.last_term[node] = term

    def entry_applied(self, node: NodeId, e: Entry) -> None:
        fp = (e.term, _fingerprint(e))
        known = self.applied.get(e.index)
        if known is None:
            self.applied[e.index] = fp
        elif known != fp:
            self._fail(
                f"state machine safety: {node} applied {e.index}/{e.term}, another node "
                f"applied {e.index}/{known[0]}"
            )
        c = self.committed.get(e.index)
        if c is not None and c != fp:
            self._fail(f"{node} applied {e.index}/{e.term}, which is not the committed entry")

    def conf_change_answered(self, node: NodeId, index: int, term: int, took_effect: bool) -> None:
        """``node``'s driver answered the change it proposed at ``index`` in ``term``;
        by then ``node`` had applied that index, so the applied entry is known."""
        known = self.applied.get(index)
        if known is None:
            self._fail(f"{node} answered the configuration change at {index} before applying it")
        elif (known[0] == term) != took_effect:
            said = "in force" if took_effect else "replaced"
            self._fail(
                f"{node} reported its configuration change {index}/{term} {said}, but "
                f"{index}/{known[0]} was applied"
            )

    def transfer_answered(self, node: NodeId, leader: NodeId, term: int) -> None:
        """``node``'s driver reported its transfer done: ``leader`` leads ``term``."""
        elected = self.leaders.get(term)
        if elected != leader:
            self._fail(
                f"{node} reported leadership moved to {leader} in term {term}, but "
                f"{elected or 'no one'} was elected in that term"
            )

    def leader_complete(self, node: NodeId, term: int, first_index: int, entry_at) -> None:
        """A new leader must hold every entry committed in an earlier term (or have it
        compacted). An entry first seen committed by a node already in ``term`` or later
        may have been committed in a later term: not required of this leader."""
        for i, (t, fp) in self.committed.items():
            if i < first_index or self.committed_by_term.get(i, 0) >= term:
                continue
            e = entry_at(i)
            if e is None or (e.term, _fingerprint(e)) != (t, fp):
                have = f"{e.index}/{e.term}" if e is not None else "nothing"
                self._fail(
                    f"leader completeness: {node} became leader of term {term} with "
                    f"{have} at committed index {i} (committed {i}/{t})"
                )
