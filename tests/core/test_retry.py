"""The retry policy (``lessor.etcd.retry``): pauses, the retry deadline, call timeouts.

Proven here:

* after a lost compare-and-swap the pause is at most :data:`JITTER` and never negative;
* after transient errors the ceiling of the pause doubles from ``2 * BASE`` up to :data:`CAP`
  and stays there (no overflow however many errors), and each pause is drawn under it;
* no pause is longer than the time remaining, and none is negative when no time remains;
* ``after`` picks the jitter for a contended attempt and the back-off otherwise;
* retries end at the grant's deadline or ``acquire_timeout`` after the start, the earlier;
* one call takes at most ``rpc_timeout``, and half the time left when it can fail over.
"""

from __future__ import annotations

import random

import pytest

from lessor.etcd.retry import BASE, CAP, JITTER, Backoff, call_timeout, retry_deadline


class Highest(random.Random):
    """Draws the upper bound every time: the pause is the policy's ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.parametrize("seed", range(20))
def test_conflict_pauses_are_a_short_jitter(seed: int) -> None:
    backoff = Backoff(random.Random(seed))
    for _ in range(50):
        assert 0.0 <= backoff.after_conflict(10.0) <= JITTER


def test_conflict_pauses_do_not_grow() -> None:
    backoff = Backoff(Highest())
    assert [backoff.after_conflict(10.0) for _ in range(5)] == [JITTER] * 5


def test_transient_pauses_grow_then_are_capped() -> None:
    backoff = Backoff(Highest())
    pauses = [backoff.after_transient(1e9) for _ in range(100)]
    expected = [min(CAP, BASE * 2**n) for n in range(1, 101)]
    assert pauses == pytest.approx(expected)
    assert pauses[:3] == pytest.approx([2 * BASE, 4 * BASE, 8 * BASE])
    assert max(pauses) == CAP and pauses[-1] == CAP


def test_transient_pauses_are_drawn_under_the_ceiling() -> None:
    backoff = Backoff(random.Random(3))
    for n in range(1, 40):
        assert 0.0 <= backoff.after_transient(1e9) <= min(CAP, BASE * 2**n)


@pytest.mark.parametrize("remaining", [0.0005, 0.003, 0.05, 0.2])
def test_no_pause_is_longer_than_the_time_remaining(remaining: float) -> None:
    conflict, transient = Backoff(Highest()), Backoff(Highest())
    for _ in range(20):
        assert conflict.after_conflict(remaining) <= remaining
        assert transient.after_transient(remaining) <= remaining


@pytest.mark.parametrize("remaining", [0.0, -1.0])
def test_no_time_left_means_no_pause(remaining: float) -> None:
    backoff = Backoff(Highest())
    assert backoff.after_conflict(remaining) == 0.0
    assert backoff.after_transient(remaining) == 0.0


def test_after_picks_the_jitter_when_contended_else_the_back_off() -> None:
    backoff = Backoff(Highest())
    assert [backoff.after(True, 10.0) for _ in range(3)] == [JITTER] * 3
    assert [backoff.after(False, 10.0) for _ in range(3)] == pytest.approx(
        [2 * BASE, 4 * BASE, 8 * BASE]
    )
    assert backoff.after(True, 10.0) == JITTER  # a conflict does not reset the back-off
    assert backoff.after(False, 10.0) == pytest.approx(16 * BASE)


def test_retries_end_at_the_grant_deadline_or_the_acquire_timeout() -> None:
    assert retry_deadline(until=105.0, started=100.0, acquire_timeout=30.0) == 105.0
    assert retry_deadline(until=200.0, started=100.0, acquire_timeout=30.0) == 130.0


@pytest.mark.parametrize(
    ("remaining", "endpoints", "expected"),
    [
        (10.0, 1, 1.0),  # capped by rpc_timeout
        (0.3, 1, 0.3),  # all the time left, with nowhere else to go
        (1.0, 3, 0.5),  # half of it, to leave time for another endpoint
        (0.4, 3, 0.4),  # too little to halve
        (-1.0, 3, 0.0),
    ],
)
def test_a_call_takes_at_most_rpc_timeout_and_leaves_time_to_fail_over(
    remaining: float, endpoints: int, expected: float
) -> None:
    assert call_timeout(remaining, 1.0, endpoints) == pytest.approx(expected)
