"""Regression test from the review of the turn (``turn.py``): in the prototype, a process
that had not yet timed a swap of the section (``Turns.attempt == 0``: a newcomer, or one whose
calls took no measurable time) deferred to another's claim with a pause of 0 (``Turns.pause``):
its deferral was a loop of reads with no pause at all until its patience (``MIN_PATIENCE``)
ended. On the model's clock, which moves only when told, the loop never ended:
``tests/test_acquisition_model.py --hypothesis-seed=2`` (600 examples) hung in its newcomer
("turn key (499714, 17) ... 'attempt': 0.0") and did not come to rest ("[('p1#3', 'Wait',
Deferred()), ('p2#5', 'Read', Deferred())]"). A pause now has a floor (``MIN_PAUSE``).
"""

from __future__ import annotations

from lessor.etcd.state import Turn
from lessor.etcd.turn import Turns


def test_a_deferral_always_pauses() -> None:
    """Guards against a deferral that is a loop of reads with no pause."""
    turns = Turns()
    assert (
        turns.expect(Turn(lease=7, create_revision=50, holder="other"), now=0.0, deadline=1e9)
        is None
    )
    assert turns.pause() > 0.0, "a process that never swapped defers with no pause at all"
