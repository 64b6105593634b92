"""Hypothesis strategies for the fuzz targets: pure noise and mutated valid inputs."""

from __future__ import annotations

import random

from fuzz_targets import Target, generate
from hypothesis import strategies as st


def inputs(target: Target) -> st.SearchStrategy[bytes]:
    """Random bytes, or a seed mutated by :func:`tests.fuzz_targets.generate` (with
    checksums repaired half the time), so both shallow and deep paths are reached."""
    corpus = target.seeds()
    mutated = st.randoms(use_true_random=False).map(
        lambda rng: generate(target, random.Random(rng.getrandbits(64)), corpus)
    )
    return st.one_of(st.binary(max_size=512), st.sampled_from(corpus), mutated)
