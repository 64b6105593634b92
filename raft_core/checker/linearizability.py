"""Linearizability checker for key-value client histories.

A history is a list of :class:`Operation` records, one per client request, as recorded
by the simulated clients. :func:`check_history` decides whether the history is
linearizable with respect to a map of independent registers (one per key), using:

* **P-compositionality**: a history of a map is linearizable iff the sub-history of
  every key is, so each key is checked on its own (:func:`check_key`).
* **Wing & Gong search with Lowe's just-in-time linearization**: the events of a key
  (calls and returns, sorted by time) form a doubly linked list. The search only
  considers linearizing an operation whose call comes before the first pending return,
  and must backtrack when it reaches a return whose operation is not yet linearized.
* **Memoization** (as in Porcupine): a configuration is the set of linearized
  operations (``int`` bitsets) plus the register state; configurations already
  explored are never explored again. With unknown outcomes the memo also uses
  subsumption: reaching an explored (completed ops, state) pair having spent *more*
  unknown-outcome operations is dominated and skipped.
* **Exact pruning rules** for the register model (see :func:`_search`): reads commit,
  unknown-outcome ops are applied lazily and only when the next op can observe them,
  interchangeable unknown ops are tried once, and values nobody can observe are
  merged into one state (:func:`_canonicalize`).

Real-time order and the tie rule
--------------------------------
Operation ``a`` precedes ``b`` in real time iff ``a.ret < b.call`` (strictly). If
``a.ret == b.call`` the two are treated as *concurrent*, so either order is accepted.
Equivalently, when events are sorted, calls sort before returns at equal timestamps.
This is the conservative choice: it can only accept more orders, never report a
violation that an observer with finer clocks could not confirm. An operation with
``call == ret`` is allowed and is instantaneous. ``client_id`` is informational only:
a client's next request called at the very tick its previous one returned is, by the
same rule, concurrent with it; use strictly increasing times to order them.

Unknown outcomes
----------------
``ret is None`` means the client never learned the outcome (timeout, lost reply). Such
an operation behaves as if it returned at +infinity with an unconstrained output: it may
take effect at any single point after its ``call``, or never. The search succeeds once
every operation with a known return is linearized; unknown ones are linearized only
when that helps. A ``get`` with an unknown outcome constrains nothing and is dropped.

Budget
------
The search is exponential in the worst case (in particular with many concurrent
unknown-outcome writes). Each key gets ``max_steps_per_key`` search steps, and the whole
check an optional wall-clock ``deadline_seconds``; when either runs out the verdict is
``"unknown"`` rather than a hang. Before giving up on a key, a cheap sufficient test for
non-linearizability is run (a read of a value that no operation called before the read
returned could have written, or an output that no state can produce); if it fires the
verdict is still ``"violation"``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

__all__ = [
    "CheckResult",
    "OpKind",
    "Operation",
    "Status",
    "check_history",
    "check_key",
]

OpKind = Literal["put", "get", "delete", "cas"]
Status = Literal["ok", "violation", "unknown"]

_KINDS = frozenset(("put", "get", "delete", "cas"))

DEFAULT_MAX_STEPS = 200_000
# How many operations of the linearizable prefix a violation message lists (the last ones).
_PREFIX_SHOWN = 25
# How many candidate operations a violation message lists.
_PENDING_SHOWN = 12


@dataclass(slots=True)
class Operation:
    """One client request against the replicated key-value store.

    Arguments (``value`` / ``expected``):

    * ``put``: ``value`` is the value written (``expected`` unused).
    * ``get``: no arguments.
    * ``delete``: no arguments.
    * ``cas``: compare-and-set; if the current value equals ``expected`` (``None`` means
      "key absent") it becomes ``value`` (``None`` means "delete the key").

    Timing: ``call`` is when the client sent the request, ``ret`` when it received the
    reply, both on the same clock. ``ret is None`` means the outcome is unknown (the
    client timed out): the operation may have taken effect at any point after ``call``,
    or never, and ``output`` is ignored.

    Output conventions (``output`` when ``ret`` is not ``None``; extra keys are ignored):

    * ``put``    -> ``{}`` (nothing is checked; ``None`` is accepted too).
    * ``get``    -> ``{"value": str | None}``: the value read, ``None`` if absent.
    * ``delete`` -> ``{"deleted": bool}``: whether the key existed before the delete.
    * ``cas``    -> ``{"ok": bool, "value": str | None}``: whether the swap happened, and
      the value current *after* the operation: the new ``value`` if ``ok``, otherwise the
      unchanged current value (which therefore differs from ``expected``).

    ``call``, ``ret`` and ``output`` are keyword-only.
    """

    client_id: str
    key: str
    kind: OpKind
    value: str | None = None
    expected: str | None = None
    _: KW_ONLY
    call: float
    ret: float | None
    output: dict[str, Any] | None

    def describe(self) -> str:
        """A one-line, human-readable rendering used in violation messages."""
        if self.kind == "put":
            args = repr(self.value)
        elif self.kind == "cas":
            args = f"expected={self.expected!r}, value={self.value!r}"
        else:
            args = ""
        if self.ret is None:
            out = "? (outcome unknown)"
            when = f"call={self.call}, ret=None"
        else:
            out = repr(self.output)
            when = f"call={self.call}, ret={self.ret}"
        return f"client {self.client_id}: {self.kind}({args}) -> {out} [{when}]"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Verdict of a check.

    * ``status``: ``"ok"`` (linearizable), ``"violation"`` (definitely not
      linearizable) or ``"unknown"`` (the search budget ran out first).
    * ``key``: the key a violation (or, failing that, the first budget exhaustion) was
      found on; ``None`` when ``status == "ok"``.
    * ``message``: human-readable explanation. For a violation it names the key, the
      longest linearizable prefix found, the register state after it, and the operation
      that could not be linearized next.
    * ``steps``: search steps spent (summed over keys for :func:`check_history`).
    """

    status: Status
    key: str | None
    message: str
    steps: int

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --------------------------------------------------------------------------- validation


def _is_time(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _validate(op: Operation) -> None:
    if not isinstance(op, Operation):
        raise TypeError(f"expected an Operation, got {type(op).__name__}")
    if op.kind not in _KINDS:
        raise ValueError(f"unknown operation kind {op.kind!r}: {op!r}")
    if not _is_time(op.call):
        raise ValueError(f"call must be a finite number: {op!r}")
    if op.ret is None:
        return
    if not _is_time(op.ret):
        raise ValueError(f"ret must be a finite number or None: {op!r}")
    if op.ret < op.call:
        raise ValueError(f"ret < call: {op!r}")
    if op.kind == "put":
        return
    out = op.output
    if not isinstance(out, dict):
        raise ValueError(f"a completed {op.kind} needs an output dict: {op!r}")
    if op.kind == "get":
        if "value" not in out:
            raise ValueError(f"get output needs 'value': {op!r}")
    elif op.kind == "delete":
        if not isinstance(out.get("deleted"), bool):
            raise ValueError(f"delete output needs a bool 'deleted': {op!r}")
    elif not isinstance(out.get("ok"), bool) or "value" not in out:
        raise ValueError(f"cas output needs a bool 'ok' and 'value': {op!r}")


# ----------------------------------------------------------------------------- encoding
#
# Every operation is reduced to (code, a, b) with a deterministic step function, so the
# search loop can branch on small ints:
#
#   _PUT      a=value            always ok,              state := a
#   _GET      a=observed value   ok iff state == a,      state unchanged   (read-only)
#   _DEL_TRUE                    ok iff state is not None, state := None
#   _CAS_OK   a=expected b=value ok iff state == a,      state := b
#   _NEVER                       never ok (output no state can produce)
#   _DEL_ANY  (unknown delete)   always ok,              state := None
#   _CAS_ANY  (unknown cas)      always ok,              state := b if state == a else state
#
# A failed cas is a read of its reported value (the model guarantees the value differs
# from `expected`; if it does not, the op is _NEVER); delete -> {"deleted": False} is a
# read of None; a successful cas with expected == value is a read of that value.

_PUT, _GET, _DEL_TRUE, _CAS_OK, _NEVER, _DEL_ANY, _CAS_ANY = range(7)


def _encode(op: Operation) -> tuple[int, Any, Any]:
    kind = op.kind
    if op.ret is None:
        if kind == "put":
            return _PUT, op.value, None
        if kind == "delete":
            return _DEL_ANY, None, None
        if kind == "cas":
            return _CAS_ANY, op.expected, op.value
        raise AssertionError("unknown-outcome gets are dropped before encoding")
    out = op.output or {}
    if kind == "put":
        return _PUT, op.value, None
    if kind == "get":
        return _GET, out["value"], None
    if kind == "delete":
        return (_DEL_TRUE, None, None) if out["deleted"] else (_GET, None, None)
    # cas
    seen = out["value"]
    if out["ok"]:
        if seen != op.value:
            return _NEVER, None, None
        if op.expected == op.value:
            return _GET, op.value, None
        return _CAS_OK, op.expected, op.value
    if seen == op.expected:
        return _NEVER, None, None
    return _GET, seen, None


class _Unobserved:
    """Stands for any non-None value that no operation of the key can observe."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unobserved value>"


_UNOBSERVED = _Unobserved()


def _canonicalize(codes: list[int], arg_a: list[Any], arg_b: list[Any]) -> None:
    """Replace written values that nothing can observe by one shared sentinel, in place.

    A value is observable if some op compares the state with it: a read (``_GET``,
    which covers completed gets and failed cas) or the ``expected`` of a cas. Two
    states that are both non-None and unobservable are indistinguishable by every op
    of the key (same success, equivalent result), so merging them is exact. It lets
    the memo table identify, e.g., all orders of concurrent writes of unread values.
    """
    observed = {arg_a[i] for i, c in enumerate(codes) if c in (_GET, _CAS_OK, _CAS_ANY)}
    for i, c in enumerate(codes):
        if c == _PUT:
            if arg_a[i] is not None and arg_a[i] not in observed:
                arg_a[i] = _UNOBSERVED
        elif c in (_CAS_OK, _CAS_ANY) and arg_b[i] is not None and arg_b[i] not in observed:
            arg_b[i] = _UNOBSERVED


# ------------------------------------------------------------------------------ search


def _search(
    known: list[Operation],
    unknown: list[Operation],
    max_steps: int,
    deadline: float | None,
) -> tuple[Status, int, tuple[list[int], Any, int] | None]:
    """Search for a linearization of ``known + unknown`` (op index = position there).

    Returns ``(status, steps, witness)``; for a violation the witness is
    ``(prefix op indices, state after prefix, index of the op that could not be
    linearized)`` taken at the most informative point where the search had to
    backtrack.

    Besides the memo table, the search prunes with exact rules; every configuration
    skipped is equivalent to, or dominated by, one that is explored anyway:

    1. A read-only op (``_GET``) that can go next can always go first, so when the
       search backtracks over one, it keeps backtracking.
    2. An unknown op that would not change the state is never linearized (leaving it
       pending keeps strictly more options).
    3. Right after an unknown op ``u``, an op that would succeed the same way without
       ``u`` (a put or unknown delete; a delete if the state before ``u`` was not
       absent) is skipped: the configuration before ``u`` tries it without spending
       ``u``. So an unknown op is only worth linearizing if the next op can observe
       its effect: a known candidate reading / expecting / deleting it, or an
       unknown cas expecting it.
    4. Unknown ops with the same effect are interchangeable once both are candidates
       (the candidate window only grows along a path), so only the first pending one
       of each effect group, in call order, is tried; consumed ops of a group are
       therefore always a prefix of it.
    5. If a write is useful only because a known delete needs the key to exist, a
       write of an unobservable value (see ``_canonicalize``) does the same job and
       wastes nothing, so when one is available it is the only such write tried.
    """
    n_known = len(known)
    n_unknown = len(unknown)
    if n_known == 0:
        return "ok", 0, None
    n_ops = n_known + n_unknown

    codes: list[int] = []
    arg_a: list[Any] = []
    arg_b: list[Any] = []
    for op in (*known, *unknown):
        c, a, b = _encode(op)
        codes.append(c)
        arg_a.append(a)
        arg_b.append(b)
    _canonicalize(codes, arg_a, arg_b)
    # Known ops are bits of `kbits`, unknown ones bits of `ubits`.
    bit = [1 << i for i in range(n_known)] + [1 << j for j in range(n_unknown)]
    call_time = [op.call for op in known] + [op.call for op in unknown]

    # Main list: call and return events of known ops. Calls sort before returns at
    # equal times (the tie rule), then by op index for determinism. A tail sentinel
    # with time +inf ends the list.
    events = [(op.call, 0, i) for i, op in enumerate(known)]
    events.extend((op.ret, 1, i) for i, op in enumerate(known))  # type: ignore[misc]
    events.sort()
    n_nodes = 2 * n_known
    head, tail = n_nodes, n_nodes + 1
    node_op = [0] * (n_nodes + 2)
    node_is_call = [False] * (n_nodes + 2)
    node_time = [math.inf] * (n_nodes + 2)
    match = [0] * (n_nodes + 2)
    call_node = [0] * n_known
    for n, (t, is_ret, i) in enumerate(events):
        node_op[n] = i
        node_time[n] = t
        if is_ret:
            match[call_node[i]] = n
        else:
            node_is_call[n] = True
            call_node[i] = n
    nxt = [n + 1 for n in range(n_nodes)] + [0, tail]
    nxt[n_nodes - 1] = tail
    prv = [n - 1 for n in range(n_nodes)] + [head, n_nodes - 1]
    prv[0] = head

    # Unknown ops have no return event, so they never force backtracking; one is a
    # candidate while its call is not after the first pending return (same tie
    # rule). They are grouped by effect (rule 4); g_ops[g] lists a group's ops in
    # call order and g_next[g] is the position of its first pending op.
    group_of: dict[tuple[int, Any, Any], int] = {}
    g_ops: list[list[int]] = []
    op_group = [0] * n_ops
    for op in sorted(range(n_known, n_ops), key=lambda i: (call_time[i], i)):
        effect = (codes[op], arg_a[op], arg_b[op])
        g = group_of.get(effect)
        if g is None:
            g = group_of[effect] = len(g_ops)
            g_ops.append([])
        g_ops[g].append(op)
        op_group[op] = g
    g_next = [0] * len(g_ops)
    g_len = [len(ops) for ops in g_ops]
    # Values some unknown cas compares the state with (it may observe a write of one).
    cas_expected = {a for (c, a, _), g in group_of.items() if c == _CAS_ANY}
    # Unconditional write groups (put/unknown delete) by the value they leave.
    write_group: dict[Any, int] = {}
    for (c, a, _), g in group_of.items():
        if c != _CAS_ANY:
            write_group[a if c == _PUT else None] = g
    always_useful = [(g, v) for v, g in write_group.items() if v in cas_expected]
    other_nonnull = [
        g
        for v, g in write_group.items()
        if v is not None and v is not _UNOBSERVED and v not in cas_expected
    ]
    unobserved_group = write_group.get(_UNOBSERVED, -1)
    cas_groups: dict[Any, list[int]] = {}  # by expected value
    for (c, a, _), g in group_of.items():
        if c == _CAS_ANY:
            cas_groups.setdefault(a, []).append(g)
    no_cas: list[int] = []

    # Search state. The stack is parallel lists; st_aux is None for a known op and
    # (blocker, candidate groups, next index) for an unknown one, to resume its level.
    # Memo with subsumption: (kbits, state) -> the ubits it was reached with. Reaching
    # it again with a superset of those unknown ops consumed is dominated: skip.
    cache: dict[tuple[int, Any], list[int]] = {}
    st_op: list[int] = []
    st_node: list[int] = []
    st_state: list[Any] = []
    st_aux: list[tuple[int, list[int], int] | None] = []
    kbits = 0
    ubits = 0
    state: Any = None
    remaining = n_known
    steps = 0
    best_rank = -1
    big = n_ops + 1
    best: tuple[list[int], Any, int] | None = None
    top_unknown = False  # is the last linearized op an unknown-outcome one?

    # Phase 1 walks the main list trying known candidates. On reaching the first
    # pending return (the "blocker") phase 2 tries the unknown candidates that the
    # next op could observe (lazily: an unknown op is only tried when no known op can
    # go next). When both are exhausted, backtrack.
    in_unknown = False
    node = nxt[head]
    blocker = 0
    cands: list[int] = []
    ci = 0
    monotonic = time.monotonic

    while True:
        steps += 1
        if steps > max_steps:
            return "unknown", steps, None
        if deadline is not None and not steps & 1023 and monotonic() > deadline:
            return "unknown", steps, None

        if not in_unknown:
            if node_is_call[node]:
                op = node_op[node]
                code = codes[op]
                if code == _GET:
                    good = state == arg_a[op]
                    new = state
                elif code == _PUT:
                    good = not top_unknown  # rule 3
                    new = arg_a[op]
                elif code == _CAS_OK:
                    good = state == arg_a[op]
                    new = arg_b[op]
                elif code == _DEL_TRUE:
                    # rule 3
                    good = state is not None and not (top_unknown and st_state[-1] is not None)
                    new = None
                else:
                    good = False
                    new = None
                if good:
                    nbits = kbits | bit[op]
                    fresh = True
                    seen = cache.get((nbits, new))
                    if seen is None:
                        cache[nbits, new] = [ubits]
                    else:
                        for u0 in seen:
                            if u0 | ubits == ubits:
                                fresh = False
                                break
                        else:
                            seen.append(ubits)
                    if fresh:
                        st_op.append(op)
                        st_node.append(node)
                        st_state.append(state)
                        st_aux.append(None)
                        top_unknown = False
                        # lift the call and its return out of the list
                        p = prv[node]
                        x = nxt[node]
                        nxt[p] = x
                        prv[x] = p
                        m = match[node]
                        p = prv[m]
                        x = nxt[m]
                        nxt[p] = x
                        prv[x] = p
                        kbits = nbits
                        state = new
                        remaining -= 1
                        if not remaining:
                            return "ok", steps, None
                        node = nxt[head]
                        continue
                node = nxt[node]
                continue
            # `node` is the first pending return: its op must be linearized before
            # anything called after it, so only ops called no later are candidates.
            blocker = node
            in_unknown = True
            ci = 0
            if not n_unknown:
                cands = no_cas
                continue
            limit = node_time[node]
            # What the known candidates could observe if an unknown op went next.
            wanted = set()
            del_wanted = False
            n = nxt[head]
            while n != blocker:
                op = node_op[n]
                code = codes[op]
                if code in (_GET, _CAS_OK):
                    wanted.add(arg_a[op])
                elif code == _DEL_TRUE:
                    del_wanted = True
                n = nxt[n]
                steps += 1
            del_ok = del_wanted and state is None
            cands = []
            if not top_unknown:  # rule 3: after an unknown op only a cas may follow
                for g, v in always_useful:
                    k = g_next[g]
                    if v != state and k < g_len[g] and call_time[g_ops[g][k]] <= limit:
                        cands.append(g)
                for v in wanted:
                    if v != state and v not in cas_expected:
                        g = write_group.get(v, -1)
                        if g >= 0:
                            k = g_next[g]
                            if k < g_len[g] and call_time[g_ops[g][k]] <= limit:
                                cands.append(g)
                if del_ok:
                    g = unobserved_group
                    k = g_next[g] if g >= 0 else 0
                    if g >= 0 and k < g_len[g] and call_time[g_ops[g][k]] <= limit:
                        cands.append(g)  # rule 5
                    else:
                        for g in other_nonnull:
                            k = g_next[g]
                            if (
                                k < g_len[g]
                                and call_time[g_ops[g][k]] <= limit
                                and arg_a[g_ops[g][k]] not in wanted
                            ):
                                cands.append(g)
            for g in cas_groups.get(state, no_cas):
                k = g_next[g]
                if k < g_len[g]:
                    op = g_ops[g][k]
                    new = arg_b[op]
                    if (
                        call_time[op] <= limit
                        and new != state
                        and (new in wanted or new in cas_expected or (del_ok and new is not None))
                    ):
                        cands.append(g)
            continue

        if ci < len(cands):
            g = cands[ci]
            ci += 1
            op = g_ops[g][g_next[g]]
            code = codes[op]
            new = arg_a[op] if code == _PUT else (None if code == _DEL_ANY else arg_b[op])
            nbits = ubits | bit[op]
            fresh = True
            seen = cache.get((kbits, new))
            if seen is None:
                cache[kbits, new] = [nbits]
            else:
                for u0 in seen:
                    if u0 | nbits == nbits:
                        fresh = False
                        break
                else:
                    seen.append(nbits)
            if fresh:
                st_op.append(op)
                st_node.append(g)
                st_state.append(state)
                st_aux.append((blocker, cands, ci))
                top_unknown = True
                g_next[g] += 1
                ubits = nbits
                state = new
                in_unknown = False
                node = nxt[head]
            continue

        # Dead end: no candidate can go next in this configuration. Remember the most
        # informative one for the report (most completed ops linearized, then fewest
        # unknown-outcome ops used), then backtrack.
        rank = (n_known - remaining) * big - len(st_op)
        if rank > best_rank:
            best_rank = rank
            best = (st_op.copy(), state, node_op[blocker])
        while True:
            if not st_op:
                return "violation", steps, best
            op = st_op.pop()
            n = st_node.pop()
            state = st_state.pop()
            aux = st_aux.pop()
            top_unknown = bool(st_op) and st_op[-1] >= n_known
            if aux is None:
                # put the return back first, then the call (reverse of lifting)
                m = match[n]
                p = prv[m]
                x = nxt[m]
                nxt[p] = m
                prv[x] = m
                p = prv[n]
                x = nxt[n]
                nxt[p] = n
                prv[x] = n
                kbits ^= bit[op]
                remaining += 1
                if codes[op] == _GET:
                    continue  # rule 1
                in_unknown = False
                node = nxt[n]
            else:
                g_next[n] -= 1
                ubits ^= bit[op]
                blocker, cands, ci = aux
                in_unknown = True
            break


def _cheap_violation(known: list[Operation], unknown: list[Operation]) -> str | None:
    """A sufficient (not necessary) test for non-linearizability, linear-ish time.

    Fires when a completed operation reports an output no register state can produce,
    or reads a value (not None) that no write called before the read returned wrote.
    """
    earliest_write: dict[Any, float] = {}
    for op in (*known, *unknown):
        if op.kind == "put" or (
            op.kind == "cas" and (op.ret is None or (op.output or {}).get("ok"))
        ):
            t = earliest_write.get(op.value)
            if t is None or op.call < t:
                earliest_write[op.value] = op.call
    for op in known:
        code, a, _ = _encode(op)
        if code == _NEVER:
            return f"output is impossible for any register state: {op.describe()}"
        if code == _GET and a is not None:
            t = earliest_write.get(a)
            assert op.ret is not None
            if t is None or t > op.ret:
                return (
                    f"read value {a!r} that no write called before the read returned "
                    f"could have written: {op.describe()}"
                )
    return None


def _apply(state: Any, op: Operation) -> Any:
    """The sequential register: the state after ``op`` (its output is not checked)."""
    if op.kind == "put":
        return op.value
    if op.kind == "delete":
        return None
    if op.kind == "cas" and state == op.expected:
        return op.value
    return state


def _format_violation(
    key: str,
    ops: list[Operation],
    witness: tuple[list[int], Any, int],
    steps: int,
) -> str:
    prefix, _, stuck = witness
    # The search state may be the _UNOBSERVED sentinel: replay the prefix for the
    # actual value.
    state: Any = None
    for i in prefix:
        state = _apply(state, ops[i])
    in_prefix = set(prefix)
    stuck_op = ops[stuck]
    lines = [
        f"key {key!r} is not linearizable ({len(ops)} ops, {steps} search steps).",
        f"Longest linearizable prefix found: {len(prefix)} ops"
        + (f" (showing the last {_PREFIX_SHOWN}):" if len(prefix) > _PREFIX_SHOWN else ":"),
    ]
    shown = prefix[-_PREFIX_SHOWN:]
    start = len(prefix) - len(shown)
    for pos, i in enumerate(shown, start=start + 1):
        lines.append(f"  {pos:4d}. {ops[i].describe()}")
    if not prefix:
        lines.append("  (empty)")
    lines.append(f"State after the prefix: {state!r}")
    lines.append(
        "Operation that could not be linearized next (it returned before any order "
        "of the remaining candidates made its output possible):"
    )
    lines.append(f"  {stuck_op.describe()}")
    assert stuck_op.ret is not None
    pending = [
        i
        for i, op in enumerate(ops)
        if i not in in_prefix and i != stuck and op.call <= stuck_op.ret
    ]
    if pending:
        lines.append(
            f"Other ops not in the prefix that were called by then ({len(pending)}"
            + (f", first {_PENDING_SHOWN}" if len(pending) > _PENDING_SHOWN else "")
            + "):"
        )
        for i in pending[:_PENDING_SHOWN]:
            lines.append(f"  - {ops[i].describe()}")
    return "\n".join(lines)


def _check_key(
    key: str | None,
    ops: Sequence[Operation],
    max_steps: int,
    deadline: float | None,
) -> CheckResult:
    known = [op for op in ops if op.ret is not None]
    if not known:
        return CheckResult("ok", None, f"key {key!r}: no completed operations", 0)
    last_ret = max(op.ret for op in known)  # type: ignore[type-var]
    # Unknown gets constrain nothing; unknown ops called after every known return can
    # always be linearized at the very end, so they cannot matter either.
    unknown = [op for op in ops if op.ret is None and op.kind != "get" and op.call <= last_ret]
    status, steps, witness = _search(known, unknown, max_steps, deadline)
    if status == "ok":
        return CheckResult("ok", None, f"key {key!r}: linearizable ({len(ops)} ops)", steps)
    if status == "violation":
        assert witness is not None
        msg = _format_violation(str(key), known + unknown, witness, steps)
        return CheckResult("violation", key, msg, steps)
    cheap = _cheap_violation(known, unknown)
    if cheap is not None:
        return CheckResult(
            "violation",
            key,
            f"key {key!r} is not linearizable (search budget ran out after {steps} steps, "
            f"but a direct test applies): {cheap}",
            steps,
        )
    return CheckResult(
        "unknown",
        key,
        f"key {key!r}: search budget exhausted after {steps} steps "
        f"({len(known)} completed ops, {len(unknown)} relevant unknown-outcome ops)",
        steps,
    )


def check_key(
    ops: Sequence[Operation],
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    deadline_seconds: float | None = None,
) -> CheckResult:
    """Check the history of a single key (all ``ops`` must share the same key).

    ``max_steps`` bounds the search; ``deadline_seconds`` (relative, wall clock) too.
    Raises ``ValueError`` on malformed operations or mixed keys.
    """
    ops = list(ops)
    for op in ops:
        _validate(op)
    keys = {op.key for op in ops}
    if len(keys) > 1:
        raise ValueError(f"check_key needs ops of a single key, got {sorted(keys)!r}")
    key = next(iter(keys)) if keys else None
    deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    return _check_key(key, ops, max_steps, deadline)


def check_history(
    ops: Iterable[Operation],
    *,
    max_steps_per_key: int = DEFAULT_MAX_STEPS,
    deadline_seconds: float | None = None,
) -> CheckResult:
    """Check a whole history (any number of keys) for linearizability.

    Keys are checked independently, in sorted order, each with ``max_steps_per_key``
    search steps; ``deadline_seconds`` (relative, wall clock) bounds the whole call.
    The result is ``"violation"`` as soon as one key is a violation (that key is
    reported), else ``"unknown"`` if any key ran out of budget (the first such key is
    reported), else ``"ok"``. Raises ``ValueError`` on malformed operations.
    """
    by_key: dict[str, list[Operation]] = {}
    n_ops = 0
    for op in ops:
        _validate(op)
        by_key.setdefault(op.key, []).append(op)
        n_ops += 1
    deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    total_steps = 0
    unknown_keys: list[str] = []
    first_unknown: CheckResult | None = None
    for key in sorted(by_key):
        res = _check_key(key, by_key[key], max_steps_per_key, deadline)
        total_steps += res.steps
        if res.status == "violation":
            return CheckResult("violation", key, res.message, total_steps)
        if res.status == "unknown":
            unknown_keys.append(key)
            if first_unknown is None:
                first_unknown = res
    if first_unknown is not None:
        shown = ", ".join(repr(k) for k in unknown_keys[:10])
        more = f" and {len(unknown_keys) - 10} more" if len(unknown_keys) > 10 else ""
        return CheckResult(
            "unknown",
            first_unknown.key,
            f"no violation found, but the search budget ran out on {len(unknown_keys)} "
            f"of {len(by_key)} keys ({shown}{more}); first: {first_unknown.message}",
            total_steps,
        )
    return CheckResult(
        "ok",
        None,
        f"linearizable: {n_ops} ops over {len(by_key)} keys",
        total_steps,
    )
