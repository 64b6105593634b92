"""Tests for raft_core.checker.linearizability."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from raft_core.checker import CheckResult, Operation, check_history, check_key

# ----------------------------------------------------------------------------- helpers


def put(c: str, k: str, v: str | None, call: float, ret: float | None) -> Operation:
    return Operation(c, k, "put", v, call=call, ret=ret, output=None if ret is None else {})


def get(c: str, k: str, v: str | None, call: float, ret: float | None) -> Operation:
    return Operation(c, k, "get", call=call, ret=ret, output=None if ret is None else {"value": v})


def delete(c: str, k: str, deleted: bool | None, call: float, ret: float | None) -> Operation:
    out = None if ret is None else {"deleted": deleted}
    return Operation(c, k, "delete", call=call, ret=ret, output=out)


def cas(
    c: str,
    k: str,
    expected: str | None,
    value: str | None,
    ok: bool | None,
    now: str | None,
    call: float,
    ret: float | None,
) -> Operation:
    out = None if ret is None else {"ok": ok, "value": now}
    return Operation(c, k, "cas", value, expected, call=call, ret=ret, output=out)


def status(ops: list[Operation], **kw: Any) -> str:
    return check_history(ops, **kw).status


def apply_model(state: str | None, op: Operation) -> tuple[str | None, dict[str, Any]]:
    """The sequential register, written independently of the checker's encoding."""
    if op.kind == "put":
        return op.value, {}
    if op.kind == "get":
        return state, {"value": state}
    if op.kind == "delete":
        return None, {"deleted": state is not None}
    if state == op.expected:
        return op.value, {"ok": True, "value": op.value}
    return state, {"ok": False, "value": state}


def generate_history(
    rng: random.Random,
    *,
    n_ops: int,
    n_clients: int,
    keys: list[str],
    unknown_rate: float = 0.1,
    n_values: int = 4,
    max_latency: int = 10,
) -> list[Operation]:
    """A linearizable history: clients issue ops one at a time (so concurrency is about
    ``n_clients``); each op gets a linearization point inside its interval (integer
    endpoints, so call/ret ties are frequent); outputs come from running the register
    model in point order. Unknown-outcome ops either took effect at some point after
    their call (possibly long after the client gave up) or never did."""
    clients = [f"c{i}" for i in range(n_clients)]
    free_at = {c: rng.randint(0, 3) for c in clients}
    pool = [f"v{i}" for i in range(n_values)]
    ops: list[Operation] = []
    points: list[float | None] = []
    for _ in range(n_ops):
        c = min(clients, key=lambda c: (free_at[c], rng.random()))
        call = free_at[c] + rng.randint(0, 2)
        ret = call + rng.randint(0, max_latency)
        free_at[c] = ret
        kind = rng.choices(["put", "get", "delete", "cas"], weights=[3, 4, 1, 2])[0]
        value = expected = None
        if kind == "put":
            value = rng.choice(pool)
        elif kind == "cas":
            expected = rng.choice([None, *pool])
            value = rng.choice([None, *pool, *pool])
        if rng.random() < unknown_rate:
            applied = rng.random() < 0.5
            points.append(call + rng.uniform(0, 3 * max_latency) if applied else None)
            ops.append(
                Operation(
                    c, rng.choice(keys), kind, value, expected, call=call, ret=None, output=None
                )
            )
        else:
            points.append(rng.uniform(call, ret))
            ops.append(
                Operation(
                    c, rng.choice(keys), kind, value, expected, call=call, ret=ret, output=None
                )
            )
    states: dict[str, str | None] = {}
    order = sorted((p, i) for i, p in enumerate(points) if p is not None)
    for _, i in order:
        op = ops[i]
        new, out = apply_model(states.get(op.key), op)
        states[op.key] = new
        if op.ret is not None:
            op.output = out
    return ops


def output_matches(op: Operation, out: dict[str, Any]) -> bool:
    want = op.output or {}
    return all(want.get(k) == v for k, v in out.items())


def oracle_linearizable(ops: list[Operation]) -> bool:
    """Exhaustive oracle straight from the definition, for small histories: repeatedly
    pick any op not yet taken whose real-time predecessors (completed ops that returned
    strictly before its call) are all taken; completed ops must produce their recorded
    output; succeed once every completed op is taken (unknown ones are optional).
    Memoized on (taken set, state); no pruning beyond that."""
    n = len(ops)
    preds = [
        sum(1 << j for j in range(n) if ops[j].ret is not None and ops[j].ret < ops[i].call)
        for i in range(n)
    ]
    need = sum(1 << i for i in range(n) if ops[i].ret is not None)

    @cache
    def solve(taken: int, state: str | None) -> bool:
        if taken & need == need:
            return True
        for i in range(n):
            if taken >> i & 1 or preds[i] & ~taken:
                continue
            new, out = apply_model(state, ops[i])
            if ops[i].ret is not None and not output_matches(ops[i], out):
                continue
            if solve(taken | 1 << i, new):
                return True
        return False

    return solve(0, None)


# ------------------------------------------------------------------ hand-written histories


def test_empty_history_is_ok() -> None:
    res = check_history([])
    assert res == CheckResult("ok", None, res.message, 0)


def test_sequential_history_is_ok() -> None:
    h = [
        get("a", "k", None, 0, 1),
        put("a", "k", "x", 2, 3),
        get("b", "k", "x", 4, 5),
        cas("a", "k", "x", "y", True, "y", 6, 7),
        get("b", "k", "y", 8, 9),
        delete("a", "k", True, 10, 11),
        get("b", "k", None, 12, 13),
        delete("a", "k", False, 14, 15),
    ]
    res = check_history(h)
    assert res.status == "ok", res.message
    assert res.key is None
    assert res.ok


def test_stale_read_after_completed_put_is_violation() -> None:
    h = [
        put("a", "k", "x", 0, 1),
        put("a", "k", "y", 2, 3),
        get("b", "k", "x", 4, 5),
    ]
    res = check_history(h)
    assert res.status == "violation"
    assert res.key == "k"


def test_concurrent_put_get_either_order_is_ok() -> None:
    for seen in (None, "x"):
        h = [put("a", "k", "x", 0, 10), get("b", "k", seen, 2, 4)]
        assert status(h) == "ok", seen


def test_new_then_old_read_with_overlapping_write_is_violation() -> None:
    # Both reads overlap the write, but the first read already saw the new value,
    # so a later read (strictly after it) must not see the old one.
    h = [
        put("w", "k", "x", 0, 10),
        get("r1", "k", "x", 1, 2),
        get("r2", "k", None, 3, 4),
    ]
    res = check_history(h)
    assert res.status == "violation"
    # ... whereas old-then-new is fine.
    h2 = [
        put("w", "k", "x", 0, 10),
        get("r1", "k", None, 1, 2),
        get("r2", "k", "x", 3, 4),
    ]
    assert status(h2) == "ok"


def test_cas_semantics() -> None:
    # successful cas, then a failed cas reports the unchanged current value
    ok = [
        put("a", "k", "x", 0, 1),
        cas("a", "k", "x", "y", True, "y", 2, 3),
        cas("b", "k", "x", "z", False, "y", 4, 5),
        get("a", "k", "y", 6, 7),
    ]
    assert status(ok) == "ok"
    # cas from absent (expected=None) creates the key
    assert status([cas("a", "k", None, "x", True, "x", 0, 1), get("a", "k", "x", 2, 3)]) == "ok"
    # cas to None deletes the key
    h = [
        put("a", "k", "x", 0, 1),
        cas("a", "k", "x", None, True, None, 2, 3),
        get("a", "k", None, 4, 5),
        delete("a", "k", False, 6, 7),
    ]
    assert status(h) == "ok"
    # cas that fails although the state equals `expected`
    assert status([put("a", "k", "x", 0, 1), cas("a", "k", "x", "y", False, "x", 2, 3)]) == (
        "violation"
    )
    # cas that succeeds although the state differs from `expected`
    assert status([put("a", "k", "x", 0, 1), cas("a", "k", "q", "y", True, "y", 2, 3)]) == (
        "violation"
    )
    # failed cas reporting a value that is not the current one
    assert status([put("a", "k", "x", 0, 1), cas("a", "k", "q", "y", False, "z", 2, 3)]) == (
        "violation"
    )
    # successful cas must report the new value
    assert status([put("a", "k", "x", 0, 1), cas("a", "k", "x", "y", True, "x", 2, 3)]) == (
        "violation"
    )
    # a successful cas whose effect is then ignored by a later read
    h = [
        put("a", "k", "x", 0, 1),
        cas("a", "k", "x", "y", True, "y", 2, 3),
        get("b", "k", "x", 4, 5),
    ]
    assert status(h) == "violation"
    # two concurrent cas(x->y) and cas(x->z) cannot both succeed
    h = [
        put("a", "k", "x", 0, 1),
        cas("a", "k", "x", "y", True, "y", 2, 5),
        cas("b", "k", "x", "z", True, "z", 2, 5),
    ]
    assert status(h) == "violation"
    # ... but one may succeed and the other fail in either order
    h = [
        put("a", "k", "x", 0, 1),
        cas("a", "k", "x", "y", True, "y", 2, 5),
        cas("b", "k", "x", "z", False, "y", 2, 5),
    ]
    assert status(h) == "ok"


def test_delete_semantics() -> None:
    assert status([delete("a", "k", False, 0, 1)]) == "ok"
    assert status([delete("a", "k", True, 0, 1)]) == "violation"
    h = [put("a", "k", "x", 0, 1), delete("a", "k", True, 2, 3), get("b", "k", None, 4, 5)]
    assert status(h) == "ok"
    h = [put("a", "k", "x", 0, 1), delete("a", "k", True, 2, 3), get("b", "k", "x", 4, 5)]
    assert status(h) == "violation"
    h = [put("a", "k", "x", 0, 1), delete("a", "k", False, 2, 3)]
    assert status(h) == "violation"
    # two concurrent deletes of an existing key: exactly one may report deleted=True
    h = [put("a", "k", "x", 0, 1), delete("a", "k", True, 2, 5), delete("b", "k", False, 2, 5)]
    assert status(h) == "ok"
    h = [put("a", "k", "x", 0, 1), delete("a", "k", True, 2, 5), delete("b", "k", True, 2, 5)]
    assert status(h) == "violation"


def test_unknown_put_later_read_may_see_it_or_not() -> None:
    seen = [put("a", "k", "x", 0, None), get("b", "k", "x", 50, 51)]
    not_seen = [put("a", "k", "x", 0, None), get("b", "k", None, 50, 51)]
    assert status(seen) == "ok"
    assert status(not_seen) == "ok"
    # it may also take effect long after the client gave up: not seen, then seen
    late = [
        put("a", "k", "x", 0, None),
        get("b", "k", None, 50, 51),
        get("b", "k", "x", 60, 61),
    ]
    assert status(late) == "ok"


def test_unknown_put_appearing_then_disappearing_is_violation() -> None:
    h = [
        put("a", "k", "x", 0, None),
        get("b", "k", "x", 10, 11),
        get("b", "k", None, 20, 21),
    ]
    res = check_history(h)
    assert res.status == "violation", res.message
    # but it is fine if some other write can explain the disappearance
    h2 = [*h[:2], delete("c", "k", None, 12, None), h[2]]
    assert status(h2) == "ok"


def test_unknown_op_cannot_take_effect_before_its_call() -> None:
    h = [get("b", "k", "x", 0, 1), put("a", "k", "x", 2, None), put("c", "k", "z", 5, 6)]
    assert status(h) == "violation"
    h[1] = put("a", "k", "x", 1, None)  # called exactly when the read returned: fine
    assert status(h) == "ok"


def test_unknown_cas_and_delete() -> None:
    # an unknown cas may or may not have applied
    for seen in ("x", "y"):
        h = [put("a", "k", "x", 0, 1), cas("a", "k", "x", "y", None, None, 2, None)]
        h.append(get("b", "k", seen, 10, 11))
        assert status(h) == "ok", seen
    # an unknown cas whose expectation cannot hold has no effect
    h = [
        put("a", "k", "x", 0, 1),
        cas("a", "k", "q", "y", None, None, 2, None),
        get("b", "k", "y", 10, 11),
    ]
    assert status(h) == "violation"
    # an unknown delete may or may not have applied, but at most once
    h = [put("a", "k", "x", 0, 1), delete("a", "k", None, 2, None), get("b", "k", None, 5, 6)]
    assert status(h) == "ok"
    h.append(get("b", "k", "x", 7, 8))
    assert status(h) == "violation"


def test_unknown_write_needed_only_to_make_a_delete_succeed() -> None:
    # The completed delete needs the key to exist; only the unknown put can make it
    # so, although an unknown delete is pending too and 'x' is read later.
    h = [
        put("u", "k", "x", 0, None),
        delete("u2", "k", None, 0, None),
        delete("c", "k", True, 1, 2),
        put("c", "k", "x", 10, 11),
        get("c", "k", "x", 12, 13),
    ]
    assert status(h) == "ok"
    # same with a value nobody ever reads (and several of them)
    h = [
        put("u", "k", "s1", 0, None),
        put("u", "k", "s2", 0, None),
        delete("c", "k", True, 1, 2),
        delete("c", "k", True, 3, 4),
        get("c", "k", None, 5, 6),
    ]
    assert status(h) == "ok"
    h.append(delete("c", "k", True, 7, 8))  # a third delete has nothing to delete
    assert status(h) == "violation"


def test_unknown_cas_chain() -> None:
    # x -> y (unknown) -> z (unknown); the read of z needs both casses, in order.
    h = [
        put("a", "k", "x", 0, 1),
        cas("u1", "k", "y", "z", None, None, 2, None),
        cas("u2", "k", "x", "y", None, None, 2, None),
        get("b", "k", "z", 5, 6),
    ]
    assert status(h) == "ok"
    # a completed read of y in between is fine, of x afterwards is not
    assert status([*h[:3], get("b", "k", "y", 3, 4), h[3]]) == "ok"
    assert status([*h, get("b", "k", "x", 7, 8)]) == "violation"


def test_unknown_writes_are_spent_only_once_each() -> None:
    # Two unknown writes of v0; v0 is read, overwritten, and read again: both writes
    # are needed, one on each side of the put. (Regression: reaching the same
    # completed-op set and state with a different unknown op spent is not the same
    # configuration.)
    h = [
        cas("u1", "k", None, "v0", None, None, 2, None),
        put("u2", "k", "v0", 2, None),
        get("a", "k", "v0", 4, 4),
        put("b", "k", "v2", 5, 5),
        get("c", "k", "v0", 10, 18),
    ]
    assert status(h) == "ok"
    assert status([*h, get("d", "k", "v2", 20, 21), get("d", "k", "v0", 22, 23)]) == "violation"


def test_unknown_cas_may_apply_between_two_completed_writes() -> None:
    # The unknown cas(v0 -> None) must go after both writes of v0 for the final
    # delete to find nothing. (Regression for the dominance direction of the memo.)
    h = [
        put("a", "k", "v0", 4, 7),
        cas("b", "k", None, "v0", True, "v0", 5, 5),
        cas("b", "k", "v0", None, None, None, 5, None),
        delete("c", "k", False, 13, 15),
    ]
    assert status(h) == "ok"


def test_unknown_get_is_unconstrained() -> None:
    h = [put("a", "k", "x", 0, 1), get("b", "k", None, 2, None)]
    assert status(h) == "ok"


def test_equal_timestamps_are_concurrent() -> None:
    """Tie rule: a precedes b in real time iff a.ret < b.call (strictly)."""
    # The put returns at 5 and the get is called at 5: concurrent, so the get may be
    # ordered first and read the old value.
    assert status([put("a", "k", "x", 0, 5), get("b", "k", None, 5, 6)]) == "ok"
    assert status([put("a", "k", "x", 0, 5), get("b", "k", None, 5.001, 6)]) == "violation"
    # The get returns at 5 and the put is called at 5: the get may be ordered after it.
    assert status([get("b", "k", "x", 0, 5), put("a", "k", "x", 5, 6)]) == "ok"
    assert status([get("b", "k", "x", 0, 4.999), put("a", "k", "x", 5, 6)]) == "violation"
    # Instantaneous operations (call == ret) at the same instant are concurrent.
    assert status([put("a", "k", "x", 3, 3), get("b", "k", None, 3, 3)]) == "ok"
    assert status([put("a", "k", "x", 3, 3), get("b", "k", None, 4, 4)]) == "violation"
    # Same client, back-to-back at the same timestamp: also treated as concurrent.
    assert status([put("a", "k", "x", 0, 5), get("a", "k", None, 5, 6)]) == "ok"
    # Ties with unknown outcomes: an unknown op called exactly when a read returns may
    # be linearized before that read.
    assert status([get("b", "k", "x", 0, 5), put("a", "k", "x", 5, None)]) == "ok"


def test_violation_message_is_helpful() -> None:
    h = [
        put("w1", "acct", "100", 0, 1),
        put("w2", "acct", "200", 2, 3),
        get("r", "acct", "200", 4, 5),
        put("w3", "other", "1", 0, 1),
        get("r9", "acct", "100", 6, 7.5),
    ]
    res = check_history(h)
    assert res.status == "violation"
    assert res.key == "acct"
    msg = res.message
    assert "'acct'" in msg
    assert "Longest linearizable prefix found: 3 ops" in msg
    # the prefix lists the ops that could be linearized, in order
    assert msg.index("put('100')") < msg.index("put('200')") < msg.index("{'value': '200'}")
    # the stuck operation: client, kind, output and times
    stuck = msg.split("could not be linearized next", 1)[1]
    assert "client r9: get() -> {'value': '100'} [call=6, ret=7.5]" in stuck
    assert "State after the prefix: '200'" in msg
    assert "other" not in msg  # other keys are irrelevant


def test_message_shows_cas_args_and_unknown_ops() -> None:
    h = [
        cas("a", "k", None, "x", True, "x", 0, 1),
        put("u", "k", "y", 1, None),
        cas("b", "k", "x", "z", False, "q", 2, 3),
    ]
    res = check_history(h)
    assert res.status == "violation"
    msg = res.message
    # the reported prefix does not drag in unknown-outcome ops that explain nothing
    assert "Longest linearizable prefix found: 1 ops" in msg
    assert "State after the prefix: 'x'" in msg
    assert "cas(expected='x', value='z') -> {'ok': False, 'value': 'q'} [call=2, ret=3]" in msg
    # ... but lists them among the candidates
    assert "client u: put('y') -> ? (outcome unknown) [call=1, ret=None]" in msg


def test_keys_are_independent_and_worst_status_wins() -> None:
    good = [put("a", "k1", "x", 0, 1), get("b", "k1", "x", 2, 3)]
    bad = [put("a", "k2", "x", 0, 1), get("b", "k2", None, 2, 3)]
    # the same values on another key do not leak across keys
    assert status([*good, get("c", "k3", None, 5, 6)]) == "ok"
    res = check_history([*good, *bad])
    assert (res.status, res.key) == ("violation", "k2")

    hard = pathological_history("k3", 30)
    res = check_history([*good, *hard], max_steps_per_key=2_000)
    assert (res.status, res.key) == ("unknown", "k3")
    res = check_history([*good, *hard, *bad], max_steps_per_key=2_000)
    assert (res.status, res.key) == ("violation", "k2")


def test_input_order_does_not_matter() -> None:
    rng = random.Random(7)
    h = generate_history(rng, n_ops=300, n_clients=4, keys=["a", "b", "c"])
    assert status(h) == "ok"
    for _ in range(3):
        rng.shuffle(h)
        assert status(h) == "ok"


def test_check_key() -> None:
    h = [put("a", "k", "x", 0, 1), get("b", "k", "x", 2, 3)]
    res = check_key(h)
    assert res.status == "ok" and res.steps > 0
    res = check_key([*h, get("c", "k", None, 4, 5)])
    assert (res.status, res.key) == ("violation", "k")
    with pytest.raises(ValueError, match="single key"):
        check_key([*h, get("c", "other", None, 4, 5)])


def test_malformed_operations_are_rejected() -> None:
    with pytest.raises(ValueError, match="ret < call"):
        check_history([put("a", "k", "x", 5, 4)])
    with pytest.raises(ValueError, match="kind"):
        check_history([Operation("a", "k", "append", "x", call=0, ret=1, output={})])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="get output"):
        check_history([Operation("a", "k", "get", call=0, ret=1, output={})])
    with pytest.raises(ValueError, match="delete output"):
        check_history([Operation("a", "k", "delete", call=0, ret=1, output={"deleted": 1})])
    with pytest.raises(ValueError, match="cas output"):
        check_history([Operation("a", "k", "cas", "x", call=0, ret=1, output={"ok": True})])
    with pytest.raises(ValueError, match="call"):
        check_history([put("a", "k", "x", float("nan"), 1)])
    # an unknown-outcome op needs no output, and a put's output is not checked
    assert status([Operation("a", "k", "get", call=0, ret=None, output=None)]) == "ok"
    assert status([Operation("a", "k", "put", "x", call=0, ret=1, output=None)]) == "ok"


# ------------------------------------------------------------------------ property tests


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n_ops=st.integers(0, 80),
    n_clients=st.integers(1, 6),
    n_keys=st.integers(1, 3),
    unknown_rate=st.sampled_from([0.0, 0.1, 0.3]),
    n_values=st.integers(1, 4),
)
def test_generated_linearizable_histories_pass(
    seed: int, n_ops: int, n_clients: int, n_keys: int, unknown_rate: float, n_values: int
) -> None:
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(n_keys)]
    h = generate_history(
        rng,
        n_ops=n_ops,
        n_clients=n_clients,
        keys=keys,
        unknown_rate=unknown_rate,
        n_values=n_values,
    )
    rng.shuffle(h)
    res = check_history(h)
    assert res.status == "ok", res.message


def _known_reads(h: list[Operation]) -> list[int]:
    return [i for i, op in enumerate(h) if op.kind == "get" and op.ret is not None]


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_ops=st.integers(1, 80),
    n_clients=st.integers(1, 6),
    n_keys=st.integers(1, 3),
    unknown_rate=st.sampled_from([0.0, 0.1, 0.3]),
    pick=st.integers(0, 10**6),
)
def test_read_of_never_written_value_is_violation(
    seed: int, n_ops: int, n_clients: int, n_keys: int, unknown_rate: float, pick: int
) -> None:
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(n_keys)]
    h = generate_history(
        rng, n_ops=n_ops, n_clients=n_clients, keys=keys, unknown_rate=unknown_rate
    )
    reads = _known_reads(h)
    assume(reads)
    i = reads[pick % len(reads)]
    h[i] = replace(h[i], output={"value": "never-written"})
    res = check_history(h)
    assert res.status == "violation", res.message
    assert res.key == h[i].key
    assert f"{h[i].key!r}" in res.message


def _definitely_stale(h: list[Operation], g: Operation) -> list[str]:
    """Values (not None) that read ``g`` cannot return in any linearization: every op
    that could write the value precedes (in real time) a completed op that overwrote
    it with something else, which itself precedes ``g``."""

    def writes(op: Operation) -> bool:
        return op.kind == "put" or (
            op.kind == "cas" and (op.ret is None or bool((op.output or {}).get("ok")))
        )

    out = []
    same_key = [op for op in h if op.key == g.key]
    for v in sorted({op.value for op in same_key if writes(op) and op.value is not None}):
        writers = [op for op in same_key if writes(op) and op.value == v]
        overwriters = [
            op
            for op in same_key
            if op.ret is not None
            and op.ret < g.call
            and (
                (writes(op) and op.value != v)
                or (op.kind == "delete" and (op.output or {}).get("deleted"))
            )
        ]
        if any(all(w.ret is not None and w.ret < o.call for w in writers) for o in overwriters):
            out.append(v)
    return out


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_ops=st.integers(2, 60),
    n_clients=st.integers(1, 5),
    unknown_rate=st.sampled_from([0.0, 0.1]),
    pick=st.integers(0, 10**6),
)
def test_definitely_stale_read_is_violation(
    seed: int, n_ops: int, n_clients: int, unknown_rate: float, pick: int
) -> None:
    rng = random.Random(seed)
    h = generate_history(
        rng, n_ops=n_ops, n_clients=n_clients, keys=["k"], unknown_rate=unknown_rate, max_latency=4
    )
    candidates = [(i, v) for i in _known_reads(h) for v in _definitely_stale(h, h[i])]
    assume(candidates)
    i, v = candidates[pick % len(candidates)]
    h[i] = replace(h[i], output={"value": v})
    res = check_history(h)
    assert res.status == "violation", (v, h[i])
    # this one cannot be caught by the cheap fallback test: the search found it
    assert "Longest linearizable prefix found" in res.message


_VALS = st.sampled_from([None, "a", "b", "c"])


@st.composite
def small_single_key_history(draw: st.DrawFn) -> list[Operation]:
    """Arbitrary (mostly non-linearizable) small histories with random outputs."""
    ops = []
    for n in range(draw(st.integers(1, 9))):
        kind = draw(st.sampled_from(["put", "get", "delete", "cas"]))
        call = draw(st.integers(0, 10))
        ret = None if draw(st.integers(0, 3)) == 0 else call + draw(st.integers(0, 5))
        value = expected = None
        output: dict[str, Any] | None = None
        if kind == "put":
            value = draw(st.sampled_from(["a", "b", "c"]))
            output = {}
        elif kind == "get":
            output = {"value": draw(_VALS)}
        elif kind == "delete":
            output = {"deleted": draw(st.booleans())}
        else:
            expected, value = draw(_VALS), draw(_VALS)
            output = {"ok": draw(st.booleans()), "value": draw(_VALS)}
        if ret is None:
            output = None
        ops.append(
            Operation(f"c{n}", "k", kind, value, expected, call=call, ret=ret, output=output)
        )
    return ops


@settings(max_examples=1000, deadline=None)
@given(small_single_key_history())
def test_agrees_with_oracle_on_random_histories(h: list[Operation]) -> None:
    expected = "ok" if oracle_linearizable(h) else "violation"
    assert check_key(h).status == expected


@settings(max_examples=800, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_ops=st.integers(1, 12),
    n_clients=st.integers(1, 6),
    unknown_rate=st.sampled_from([0.0, 0.2, 0.5]),
    n_values=st.integers(1, 4),
    mutate=st.booleans(),
    pick=st.integers(0, 10**6),
    new_value=st.sampled_from([None, "v0", "v1", "v2", "v3"]),
)
def test_agrees_with_oracle_on_mutated_generated_histories(
    seed: int,
    n_ops: int,
    n_clients: int,
    unknown_rate: float,
    n_values: int,
    mutate: bool,
    pick: int,
    new_value: str | None,
) -> None:
    """Linearizable histories (realistic shape: many unknown outcomes applied late,
    unread values, cas chains), optionally with one completed op's output altered to
    another plausible output; the result must match the oracle either way."""
    rng = random.Random(seed)
    h = generate_history(
        rng,
        n_ops=n_ops,
        n_clients=n_clients,
        keys=["k"],
        unknown_rate=unknown_rate,
        n_values=n_values,
        max_latency=6,
    )
    completed = [i for i, op in enumerate(h) if op.ret is not None and op.kind != "put"]
    if mutate and completed:
        i = completed[pick % len(completed)]
        op = h[i]
        if op.kind == "get":
            out: dict[str, Any] = {"value": new_value}
        elif op.kind == "delete":
            out = {"deleted": not (op.output or {})["deleted"]}
        else:
            ok = pick % 2 == 0
            out = {"ok": ok, "value": op.value if ok else new_value}
        h[i] = replace(op, output=out)
    expected = "ok" if oracle_linearizable(h) else "violation"
    assert check_key(h).status == expected


# ------------------------------------------------------------------------ budget and speed


def pathological_history(key: str, n_unknown: int) -> list[Operation]:
    """Many concurrent unknown-outcome puts of distinct values, each observed by a
    concurrent read, then a read of None although nothing ever deletes: proving the
    violation means ruling out every order of the puts (about 2**n * n configurations;
    no symmetry, since every value is observed and distinct)."""
    h = [put(f"u{i}", key, f"v{i}", 0, None) for i in range(n_unknown)]
    h += [get(f"r{i}", key, f"v{i}", 1, 100) for i in range(n_unknown)]
    h.append(get("z", key, None, 200, 201))
    return h


def test_budget_exhaustion_returns_unknown_quickly() -> None:
    h = pathological_history("k", 40)
    t0 = time.perf_counter()
    res = check_history(h, max_steps_per_key=5_000)
    elapsed = time.perf_counter() - t0
    assert res.status == "unknown", res.message
    assert res.key == "k"
    assert 5_000 <= res.steps < 5_500  # may overshoot by one candidate scan
    assert "budget" in res.message
    assert elapsed < 5.0
    # check_key exposes the same budget
    assert check_key(h, max_steps=100).status == "unknown"


def test_small_pathological_instance_is_decided() -> None:
    # with few unknown puts the search finishes and finds the violation
    res = check_history(pathological_history("k", 6))
    assert res.status == "violation", res.message


def test_deadline_returns_unknown_quickly() -> None:
    h = pathological_history("k", 40) + pathological_history("k2", 40)
    t0 = time.perf_counter()
    res = check_history(h, max_steps_per_key=10**12, deadline_seconds=0.2)
    elapsed = time.perf_counter() - t0
    assert res.status == "unknown", res.message
    assert elapsed < 5.0


def test_cheap_test_still_finds_violation_when_budget_runs_out() -> None:
    h = [*pathological_history("k", 40), get("r", "k", "zzz", 200, 201)]
    res = check_history(h, max_steps_per_key=1_000)
    assert res.status == "violation"
    assert "'zzz'" in res.message and "budget" in res.message


def test_performance_2000_ops_20_keys_concurrency_5() -> None:
    rng = random.Random(2024)
    keys = [f"key-{i}" for i in range(20)]
    h = generate_history(rng, n_ops=2_000, n_clients=5, keys=keys, unknown_rate=0.02)
    t0 = time.perf_counter()
    res = check_history(h)
    elapsed = time.perf_counter() - t0
    print(f"\n2000 ops / 20 keys / 5 clients: {elapsed * 1000:.1f} ms, {res.steps} steps")
    assert res.status == "ok", res.message
    assert elapsed < 5.0

    # a single hot key with the same load
    h = generate_history(rng, n_ops=2_000, n_clients=5, keys=["hot"], unknown_rate=0.02)
    t0 = time.perf_counter()
    res = check_history(h)
    elapsed = time.perf_counter() - t0
    print(f"2000 ops / 1 key / 5 clients: {elapsed * 1000:.1f} ms, {res.steps} steps")
    assert res.status == "ok", res.message
    assert elapsed < 5.0


def test_performance_hot_key_with_many_unknown_outcomes() -> None:
    """Stress: one key, 8 clients, 10% timed-out ops that may apply long after the
    client gave up. Harder than typical runs; needs a few hundred thousand steps."""
    rng = random.Random(11)
    h = generate_history(rng, n_ops=2_000, n_clients=8, keys=["hot"], unknown_rate=0.1, n_values=10)
    t0 = time.perf_counter()
    res = check_history(h, max_steps_per_key=2_000_000)
    elapsed = time.perf_counter() - t0
    print(
        f"\n2000 ops / 1 key / 8 clients / 10% unknown: {elapsed * 1000:.1f} ms, {res.steps} steps"
    )
    assert res.status == "ok", res.message
    assert elapsed < 5.0
