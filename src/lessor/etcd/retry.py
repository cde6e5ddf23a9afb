"""The retry policy of the etcd lessor, all of it: pure policy, no sleeping here.

**What is retried.** A compare-and-swap lost to another writer, and the etcd errors in
:data:`RETRYABLE` (a member not answering, an etcd lease gone); anything else etcd answers
(a corrupt section, permission denied) is final.

**How long an acquisition retries.** Until its deadline (:func:`retry_deadline`): never past
the grant's own, and never longer than the lessor's ``acquire_timeout``. Retries are bounded by
that deadline, not by a count.

**How long one call may take** (:func:`call_timeout`): at most ``rpc_timeout``, and with other
endpoints to fail over to, never all the time left. A member with less than
:data:`MIN_CALL_TIME` left is not put in a call at all.

**How long to wait between two tries.**

* Between two attempts of an acquisition (:class:`Backoff`): after a lost swap, only a jitter of
  a millisecond or two: the failure branch brought the fresh state, and a loser that backed off
  for longer would fall behind newcomers and could starve. After a transient error,
  randomised exponential back-off ("full jitter"), so that a cluster's clients do not retry in
  step. Never past the deadline: the wait is capped by the time left.
* Between two tries of a release's marker deletion, on the next endpoint:
  :data:`RELEASE_PAUSE`, doubling up to :data:`RELEASE_PAUSE_MAX`, within the release timeout.
* Between two tries to clear an abandoned acquisition: :data:`CLEAN_UP_PAUSE`, while its etcd
  lease lives.
"""

from __future__ import annotations

import os
import random

from lessor.etcd.transport import LeaseNotFound, RetryableRpc

__all__ = [
    "BASE",
    "CAP",
    "CLEAN_UP_PAUSE",
    "JITTER",
    "MIN_CALL_TIME",
    "RELEASE_PAUSE",
    "RELEASE_PAUSE_MAX",
    "RETRYABLE",
    "Backoff",
    "call_timeout",
    "retry_deadline",
]

RETRYABLE = (RetryableRpc, LeaseNotFound)
"""The etcd errors worth another try (besides a lost compare-and-swap)."""

MIN_CALL_TIME = 0.05
"""An acquisition with less time left than this is not put in a call to etcd: it would make
the call's timeout too short for the others in the same group."""

JITTER = 0.002
"""The longest pause after a lost compare-and-swap, in seconds."""

BASE = 0.01
CAP = 0.5
"""Exponential back-off after transient errors: up to ``BASE * 2**n``, at most ``CAP``."""

RELEASE_PAUSE = 0.05
"""Seconds before a release tries the next etcd endpoint (doubling, up to
:data:`RELEASE_PAUSE_MAX`)."""

RELEASE_PAUSE_MAX = 0.25

CLEAN_UP_PAUSE = 0.5
"""Seconds between two tries to clear an abandoned acquisition."""


def retry_deadline(until: float, started: float, acquire_timeout: float) -> float:
    """When an acquisition that started at ``started``, for a grant ending at ``until``, stops
    retrying. Retrying past the grant's own deadline would write a lease nobody can use."""
    return min(until, started + acquire_timeout)


def call_timeout(remaining: float, rpc_timeout: float, endpoints: int) -> float:
    """How long one call may take with ``remaining`` seconds left for the whole operation.
    With other endpoints to try, never all of it: a member that accepts a call and never
    answers (paused, or forwarding to a dead leader) must leave time to ask another."""
    remaining = max(0.0, remaining)
    if endpoints > 1 and remaining > 0.4:
        remaining /= 2
    return min(rpc_timeout, remaining)


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

    def after(self, contended: bool, remaining: float) -> float:
        """The pause after a failed attempt: :meth:`after_conflict` when it was ``contended``
        (it lost a swap, or settled others first), else :meth:`after_transient`."""
        return self.after_conflict(remaining) if contended else self.after_transient(remaining)

    def after_conflict(self, remaining: float) -> float:
        return min(self._rng.uniform(0, JITTER), max(0.0, remaining))

    def after_transient(self, remaining: float) -> float:
        self._transient += 1
        ceiling = min(CAP, BASE * 2 ** min(self._transient, 32))
        return min(self._rng.uniform(0, ceiling), max(0.0, remaining))
