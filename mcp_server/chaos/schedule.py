"""The nemesis schedule: which fault, which variant, when and for how long, from a seed.

The schedule is a pure function of ``(seed, duration, nemeses)``, so a run can be
replayed and a test can pin it. Targets are not chosen here (who leads is only known at
run time): each step carries ``pick``, a seeded number the nemesis uses to choose among
the candidates it sees (sorted), so the same cluster state gives the same choice.

Kinds come out of a shuffled bag, so every requested kind appears once before any
repeats, even in a short run. One fault is active at a time; each is healed before a
quiet gap and the next one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# The nemeses the node can serve, their variants, and how long a fault is held (s).
VARIANTS: dict[str, tuple[str, ...]] = {
    "kill": ("kill-leader", "kill-follower", "kill-all"),
    "pause": ("pause-leader", "pause-follower", "pause-isolated-leader"),
    "partition": ("isolate-leader", "minority", "split", "bridge"),
    "membership": ("add-voter", "remove-voter", "replace"),
    "transfer": ("transfer",),
}
HOLD_S: dict[str, tuple[float, float]] = {
    "kill": (2.0, 5.0),
    "pause": (2.0, 5.0),
    "partition": (2.0, 6.0),
    "membership": (0.5, 1.0),
    "transfer": (0.5, 1.0),
}
# Asked for, but with no way to inject them into raft-node today: named in the verdict.
UNSUPPORTED: dict[str, str] = {
    "disk": "disk: not supported by raft-node yet (it has no slow-disk fault)",
}
PARTIAL: dict[str, str] = {
    "partition": "partition one-way: not expressible: the node fault API drops a peer's "
    "traffic in both directions",
}
ALL = (*VARIANTS, *UNSUPPORTED)
WARMUP_S = 2.0
TAIL_S = 3.0
GAP_S = (1.0, 2.5)


@dataclass(frozen=True)
class FaultStep:
    at: float  # seconds after the run starts
    kind: str
    variant: str
    hold: float  # how long the fault stays before it is healed
    pick: int  # seeds the choice of targets


def parse_nemeses(text: str | None) -> list[str]:
    """``"kill,pause"`` -> ``["kill", "pause"]``; None or "all" -> every kind."""
    if text is None or text.strip() in ("", "all"):
        return list(ALL)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in ALL]
    if unknown:
        raise ValueError(f"unknown nemesis {', '.join(unknown)}; choose from {', '.join(ALL)}")
    return list(dict.fromkeys(kinds))


def make_schedule(
    seed: int,
    duration_s: float,
    nemeses: list[str],
    variants: dict[str, tuple[str, ...]] = VARIANTS,
) -> list[FaultStep]:
    """The fault steps of a run: deterministic for ``(seed, duration_s, nemeses)`` and the
    ``variants`` the cluster's kind can serve (raft-node's by default)."""
    rng = random.Random(seed)
    kinds = [k for k in nemeses if k in variants]
    steps: list[FaultStep] = []
    if not kinds:
        return steps
    bag: list[str] = []
    t = WARMUP_S
    while True:
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
        kind = bag.pop()
        variant = rng.choice(variants[kind])
        hold = round(rng.uniform(*HOLD_S[kind]), 2)
        pick = rng.getrandbits(32)
        if t + hold > duration_s - TAIL_S:
            return steps
        steps.append(FaultStep(round(t, 2), kind, variant, hold, pick))
        t += hold + rng.uniform(*GAP_S)
