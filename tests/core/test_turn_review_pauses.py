"""Review of the turn (``turn.py``): a process that has not yet timed a swap of the section
(``Turns.attempt == 0``: a newcomer, or one whose calls took no measurable time) defers to
another's claim with a pause of 0 (``Turns.pause``): its deferral is a loop of reads with no
pause at all until its patience (``MIN_PATIENCE``) ends. On the model's clock, which moves
only when told, the loop never ends: ``tests/test_acquisition_model.py --hypothesis-seed=2``
(600 examples) hangs in its newcomer ("turn key (499714, 17) ... 'attempt': 0.0") and does
not come to rest ("[('p1#3', 'Wait', Deferred()), ('p2#5', 'Read', Deferred())]").

Fails on purpose on ``hot-turn`` (cbfe5d4): it states what should hold.
"""

from __future__ import annotations

from lessor.etcd.state import Turn
from lessor.etcd.turn import Turns


def test_turn_review_a_deferral_always_pauses() -> None:
    turns = Turns()
    assert turns.expect(Turn(lease=7, create_revision=50, holder="other"), now=0.0) is None
    assert turns.pause() > 0.0, "a process that never swapped defers with no pause at all"
