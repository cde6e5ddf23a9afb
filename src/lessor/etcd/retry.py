"""How long a leader waits between two attempts: pure policy, no sleeping here.

After a lost swap, only a jitter of a millisecond or two: the failure branch brought the fresh
state, and a loser that backed off for longer would fall behind newcomers and could starve.
After a transient error (an etcd member not answering, a lease gone), randomised exponential
back-off ("full jitter"), so that a cluster's clients do not retry in step. Never past the
deadline: the wait is capped by the time left.
"""

from __future__ import annotations

import os
import random

__all__ = ["Backoff"]

JITTER = 0.002
"""The longest pause after a lost compare-and-swap, in seconds."""

BASE = 0.01
CAP = 0.5
"""Exponential back-off after transient errors: up to ``BASE * 2**n``, at most ``CAP``."""


_SHARED = random.Random()
# Forked processes must not jitter in step with their parent (random's own does the same).
os.register_at_fork(after_in_child=_SHARED.seed)


class Backoff:
    """The waits of one acquisition's attempts."""

    def __init__(self, rng: random.Random | None = None) -> None:
        # Without one given, the module's shared generator (thread-safe): seeding a new one
        # costs about 10 us, and most acquisitions never wait at all.
        self._rng: random.Random = rng if rng is not None else _SHARED
        self._transient = 0

    def after_conflict(self, remaining: float) -> float:
        return min(self._rng.uniform(0, JITTER), max(0.0, remaining))

    def after_transient(self, remaining: float) -> float:
        self._transient += 1
        ceiling = min(CAP, BASE * 2 ** min(self._transient, 32))
        return min(self._rng.uniform(0, ceiling), max(0.0, remaining))
