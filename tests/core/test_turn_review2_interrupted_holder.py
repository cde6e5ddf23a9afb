"""Turn review 2: a turn holder whose leader is interrupted leaves its claim behind.

``turn.py`` says "A holder that stops contending without a win deletes its own claim
(``core/lead.py``)", and ``lead._end_turn`` does so when the leader's own acquisition is
settled or late. A leader that an exception reaches (``KeyboardInterrupt`` in a thread; in
the asyncio lessor any task cancellation, ``asyncio.timeout`` or ``wait_for`` included, which
is thrown into the core) leaves through ``lead``'s ``except BaseException`` and ``finally``:
no ``_end_turn``, and ``give_up`` / ``orphaned`` do not drop it either.

Schedule:

1. q writes before each of p's first two swaps: p's second swap loses and claims the turn
   (on p's etcd lease, which stays in p's pool: p may hold other grants on it).
2. p holds the turn, and its leader pauses 0 before its next swap; the exception arrives
   there. Nobody else of p's is queued.
3. p's way out (``give_up``) and every clean-up run to their end.
4. The claim is still there, on a live etcd lease: every other process that acquires the
   section defers to it for its patience (up to ``MAX_PATIENCE``) before it takes it over,
   although its holder is alive and knows it stopped contending.

Bounded by the patience, so not beyond the documented bound; but it is the "claim others
defer to although its holder stopped acquiring" case, and with asyncio cancellations it is a
routine path, not a crash.

Fix idea: ``lead``'s ``except BaseException`` way out (and ``GeneratorExit``'s: a ``CleanUp``
cannot be yielded there, but the claim can be handed to the next leader or to a clean-up list)
drops a claim still held when nobody is queued, as ``_end_turn`` does.
"""

from __future__ import annotations

import pytest

from lessor import Partition
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import Op, Swap, Wait
from tests.support.driver import PREFIX, Interrupt, two_processes


def test_an_interrupted_turn_holder_leaves_no_claim_behind() -> None:
    """Schedule in the module docstring."""
    _, etcd, p, q = two_processes()
    sec = p.section("s")
    turn_key = SectionKeys.of(PREFIX, "s").turn
    _, w, steps = p.lead("s", Partition(0, 4), 5.0)
    swaps = 0
    interrupted = False

    def on_op(op: Op) -> None:
        nonlocal swaps
        if isinstance(op, Swap):
            swaps += 1
            if swaps <= 2:  # q writes first: p's swap loses (and the second one claims)
                q.acquire("s", Partition(10 + swaps, 11 + swaps), 10.0)

    def throw(op: Op) -> BaseException | None:
        nonlocal interrupted
        if isinstance(op, Wait) and swaps == 2 and not interrupted:
            # p holds the turn, about to swap again
            assert turn_key in etcd.kvs and sec.known.turns.holding
            interrupted = True
            return Interrupt()
        return None

    with pytest.raises(Interrupt):
        p.run("s", steps, on_op=on_op, throw=throw)
    p.give_up("s", w)
    assert not sec.gate.leading and not sec.gate.queued  # p acquires nothing any more
    claim = etcd.kvs.get(turn_key)
    assert claim is None, (
        f"p stopped acquiring, yet its claim (etcd lease {claim.lease:x}, alive: "
        f"{claim.lease in etcd.leases}) stands: others defer to it for their patience"
    )
