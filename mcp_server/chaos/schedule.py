"""The nemesis schedule: which fault, which variant, when and for how long, from a seed.

The schedule is a pure function of ``(seed, duration, nemeses)``, so a run can be
replayed and a test can pin it. Targets are not chosen here (who leads is only known at
run time): each step carries ``pick``, a seeded number the nemesis uses to choose among
the candidates it sees (sorted), so the same cluster state gives the same choice.

The first round has every requested kind once, in a seeded order, whatever the
duration: its holds shrink (down to each kind's minimum) to fit a short run, and its
steps are ``required``: the nemesis never skips one for running late and retries one
the cluster refused, so a short run on a loaded machine still injects every kind.
After it, kinds come out of a shuffled bag (every kind once before any repeats) until
the duration is used up. One fault is active at a time; each is healed before a quiet
gap and the next one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# The nemeses the node can serve, their variants, and how long a fault is held (s).
VARIANTS: dict[str, tuple[str, ...]] = {
    "kill": ("kill-leader", "kill-follower", "kill-all"),
    "pause": ("pause-leader", "pause-follower", "pause-isolated-leader"),
    "partition": ("isolate-leader", "minority", "split", "bridge", "one-way"),
    "membership": ("add-voter", "remove-voter", "replace"),
    "transfer": ("transfer",),
    "disk": ("slow-disk-leader", "slow-disk-follower"),
}
HOLD_S: dict[str, tuple[float, float]] = {
    "kill": (2.0, 5.0),
    "pause": (2.0, 5.0),
    "partition": (2.0, 6.0),
    "membership": (0.5, 1.0),
    "transfer": (0.5, 1.0),
    "disk": (2.0, 5.0),
}
ALL = tuple(VARIANTS)
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
    required: bool = False  # first round: never skipped for lateness, retried if refused


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
    first = list(kinds)
    rng.shuffle(first)
    # Each first-round step's share of the run, quiet gap included.
    share = (duration_s - WARMUP_S - TAIL_S) / len(first) - GAP_S[0]
    t = WARMUP_S
    for kind in first:
        lo, hi = HOLD_S[kind]
        variant = rng.choice(variants[kind])
        hold = round(max(lo, min(rng.uniform(lo, hi), share)), 2)
        pick = rng.getrandbits(32)
        steps.append(FaultStep(round(t, 2), kind, variant, hold, pick, required=True))
        t += hold + GAP_S[0]
    bag: list[str] = []
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
