"""Turn review 3: an acquisition whose deadline is shorter than its patience fails on a free
section without ever sending a swap, while a claim nobody drops stands.

``turn.py`` bounds a claim nobody drops (a crashed holder's, or one etcd applied late) by the
others' patience: "the first process to meet it defers for at most ``MAX_PATIENCE`` from when
it first sees it, then takes it over". The takeover needs a deferring acquisition still alive
when that patience ends. An acquisition whose deadline comes first (a short lease, a caller's
context with a short budget: ``retry_deadline``) only defers (``Deferred``: reads, pauses) and
fails with ``DeadlineExceeded`` although no key it asks for is held: on main it is granted in
one round trip. Its process remembers when it first saw the claim (``Turns._seen_at``), so its
own next acquisition takes the claim over; a fresh process (a job runner that starts one per
task, a restarted worker, a CLI call) starts counting again, and fails the same way.

Schedule (the in-memory etcd; every call takes 50 ms on the model's clock):

1. q writes before each of h's first two swaps: h's second swap loses and claims the turn,
   on h's etcd lease (TTL 10 s). Its claim says its swaps take 50 ms, so the others'
   patience is ``8 * 50 ms = 0.4 s``.
2. h crashes there (it is driven no more); its etcd lease lives on (a crashed holder's
   claim lasts until its lease's TTL, or for ever while a live process renews that lease for
   acquisitions of other sections).
3. Five fresh processes, one after the other, each ask for free keys with a 0.3 s deadline.

Invariant broken: liveness (a claim nobody drops costs others at most about ``MAX_PATIENCE``;
an acquisition of free keys is granted). Here every one of them fails, 1.5 s of failures with
the section free but for the claim, and the claim still stands at the end; it would go on
until h's etcd lease expires.

Fix idea: a deferral never outlasts the acquisition's own time: when the next pause would
take the member past its deadline less one round trip (``Turns.attempt``), the swap is sent
expecting the claim (a takeover) instead of deferring. A live holder's swap, one round trip
after its claim, still comes first in the common case.
"""

from __future__ import annotations

from lessor import Partition
from lessor.errors import DeadlineExceeded
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import Op, Read, Swap
from tests.support.driver import PREFIX, Proc, claim_and_stop, two_processes

ROUND_TRIP = 0.05
DEADLINE = 0.3  # shorter than the patience (8 round trips) but six round trips long


def test_a_short_acquisition_on_a_free_section_is_granted_despite_a_stray_claim() -> None:
    """Schedule in the module docstring."""
    clock, etcd, h, q = two_processes()
    turn_key = SectionKeys.of(PREFIX, "s").turn
    claim_and_stop(h, q, "s", ROUND_TRIP)  # h holds the turn, then crashes

    outcomes = []
    for n in range(5):  # fresh processes, one after the other
        r = Proc(f"r{n}", etcd, clock)
        sent = []

        def on_op(op: Op, sent: list[Op] = sent) -> None:
            if isinstance(op, Swap | Read):
                clock.advance(ROUND_TRIP)
            sent.append(op)

        mr = r.acquire("s", Partition(20 + n, 21 + n), DEADLINE, on_op=on_op)
        outcomes.append((type(mr.error).__name__, sum(isinstance(o, Swap) for o in sent)))
        etcd.expire()
    failed = [o for o in outcomes if o[0] == DeadlineExceeded.__name__]
    assert not failed, (
        f"keys free but for a claim nobody drops; (outcome, swaps sent) per fresh process: "
        f"{outcomes}; the claim still stands: {turn_key in etcd.kvs}"
    )
