"""Turn review 4: the "no time left to defer" takeover never fires for a process near etcd,
for an acquisition with less than ``MIN_CALL_TIME`` left is put in no call at all.

``Turns.expect`` takes another's claim over at once when ``now + pause + 2 * attempt`` reaches
the swap's deadline ("a deferral never costs an acquisition its grant"). For a process 1 ms
from etcd that is the last ~4 ms before the deadline. But ``attempt._ready`` puts no member
with less than ``retry.MIN_CALL_TIME`` (50 ms) left in a call: from 50 ms before its deadline
the acquisition only waits in the queue, then fails with ``DeadlineExceeded``. The takeover is
only reachable for processes whose round trip is above ~17 ms (``3 * attempt > 50 ms``): review
3's test (``test_turn_review3_short_deadline.py``) used 50 ms round trips everywhere, so it
passed.

Schedule (the in-memory etcd, on the model's clock):

1. h, 50 ms from etcd (another datacenter), loses two swaps to q and claims the turn on its
   etcd lease (TTL 10 s); its claim says its swaps take 50 ms, so the others' patience is
   ``8 * 50 ms = 0.4 s``. h crashes there (driven no more): nobody drops the claim.
2. Five fresh processes, 1 ms (or 15 ms) from etcd, one after the other, each ask for free
   keys with a 0.3 s deadline (shorter than that patience). Each reads, defers (pause 2 ms)
   until 50 ms are left, is then put in no call, and fails; none ever sends a swap.

The same for fresh processes 15 ms from etcd (``3 * 15 ms < 50 ms``); 20 and 25 ms passed here,
but only as their reads happen to fall: an attempt that starts with under 50 ms left is
skipped the same way, so a deferral decided with ``pause + 2 * attempt`` to spare can still
leave the next attempt no call.

Invariant broken: liveness (a stray claim costs others at most about ``MAX_PATIENCE``; no
acquisition fails on a free section because of a turn; the very case c39eb50 meant to fix).

Fix idea: reckon the takeover against the last moment a call can still be made for the
writers: ``deadline - MIN_CALL_TIME`` (``expect(turn, now, min(m.deadline) - MIN_CALL_TIME)``),
or in ``expect``: ``now + pause + max(2 * attempt, ...) + MIN_CALL_TIME >= deadline``.
"""

from __future__ import annotations

import pytest

from lessor import Partition
from lessor.errors import DeadlineExceeded
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import Op, Read, Swap
from tests.support.driver import PREFIX, Proc, claim_and_stop, two_processes

FAR = 0.05  # the crashed holder's round trip
DEADLINE = 0.3  # shorter than the patience (8 * 50 ms) but 300 near round trips long


@pytest.mark.parametrize("near", [0.001, 0.015], ids=["1ms", "15ms"])
def test_a_near_process_with_a_short_deadline_takes_a_stray_claim_over(near: float) -> None:
    """Schedule in the module docstring."""
    clock, etcd, h, q = two_processes()
    turn_key = SectionKeys.of(PREFIX, "s").turn
    claim_and_stop(h, q, "s", FAR)  # h holds the turn, then crashes

    outcomes = []
    for n in range(5):  # fresh processes, one after the other
        r = Proc(f"r{n}", etcd, clock)
        sent: list[Op] = []

        def on_op(op: Op, sent: list[Op] = sent) -> None:
            if isinstance(op, Swap | Read):
                clock.advance(near)
            sent.append(op)

        mr = r.acquire("s", Partition(20 + n, 21 + n), DEADLINE, on_op=on_op)
        outcomes.append((type(mr.error).__name__, sum(isinstance(o, Swap) for o in sent)))
        etcd.expire()
    failed = [o for o in outcomes if o[0] == DeadlineExceeded.__name__]
    assert not failed, (
        f"keys free but for a claim nobody drops; (outcome, swaps sent) per fresh process: "
        f"{outcomes}; the claim still stands: {turn_key in etcd.kvs}"
    )
