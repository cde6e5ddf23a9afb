"""Turn review 5: a process's deferral streak outlives the claim it deferred to when its next
attempts write nothing, and a claim made a second later is then taken over at once, before
its holder's swap can land.

``Turns.expect`` counts the patience from the process's first deferral since its last swap,
reset by a swap, by ``expect`` seeing no turn or our own claim, and by ``leaving()`` (the
gate left idle). But ``expect`` is only asked by a swap (``attempt._swap``): an attempt whose
members all get empty grants (their ranges held by others) settles with no swap, or with a
check, and never asks it, whatever turn the state it read shows. In a process whose gate is
never idle (several threads on the section, the usual load for a sweeper), the streak then
lives on across those attempts.

Schedule (``Turns`` as ``attempt.py`` drives it, process p 1 ms from etcd):

1. t = 0: p's swap for keys [0, 1) would meet x's claim (x 40 ms away): p defers
   (``expect`` -> None), ``_deferring = 0``.
2. x's swap wins, takes [0, 1) and deletes its claim. p reads: [0, 1) is held, p's member
   gets an empty grant, no swap, ``expect`` not asked. p's other threads go on acquiring
   ranges x holds for a second: empty grants, the gate never idle, states with no turn.
3. t = 1 s: f (40 ms away) claims the turn (its swap lost twice); p's next acquisition wants
   free keys and reads f's claim, 1 ms old: ``now - _deferring`` = 1 s >= patience
   (``8 * 40 ms``), so p takes it over at once. p's swap lands within 1 ms, f's at 40 ms: f
   loses the swap the claim was to let win.

Invariant broken: a claim is respected for the others' patience from when they first meet
it ("a holder farther from etcd than the others still has the time its swap needs",
``turn.py``); the streak reset "by seeing no turn" does not hold for states read by attempts
that write nothing. One lost swap per stale streak, not a livelock by itself; more such
processes (or repeated empty-grant spells) cost the far holder one loss each.

Fixed: an attempt that settles without a swap ends the streak (``Turns.went_on``, told by
``core/attempt.py``). Fix ideas were: reset the streak wherever a state is taken
(``Turns.seen(turn)`` from ``_plan_and_commit`` after every read or fresh state, or
``Known.store``), not only in ``expect``; or start the streak over when the claim met was
created after the state in which the process last deferred (its create revision above the
revision then).
"""

from __future__ import annotations

from lessor.etcd.state import Turn
from lessor.etcd.turn import Turns


def test_a_claim_first_met_after_a_spell_of_empty_grants_is_not_taken_over_at_once() -> None:
    """Schedule in the module docstring."""
    p = Turns()
    p.timed(0.001)
    xs = Turn(lease=1, create_revision=5, holder="x", attempt=0.04)
    assert p.expect(xs, 0.0, 10.0) is None  # 1: defers to x's claim
    # 2: for a second, p's attempts settle with empty grants: no swap, ``expect`` not asked;
    # ``core/attempt.py`` tells the turns of each such attempt (the fix)
    p.went_on()
    fs = Turn(lease=2, create_revision=400, holder="f", attempt=0.04)
    assert p.expect(fs, 1.0, 10.0) is None, "f's claim, 1 ms old, taken over at once"
