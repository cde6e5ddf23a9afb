"""One process's view of a section's turn (``turn.py``): when it claims, what its swaps
expect, how long it lets another's claim stand, and when it takes one over."""

from __future__ import annotations

from lessor.etcd.state import Turn
from lessor.etcd.turn import CLAIM_AFTER, MAX_PATIENCE, MIN_PATIENCE, Turns


def another(create_revision: int = 50) -> Turn:
    return Turn(lease=7, create_revision=create_revision, holder="other")


def lose(turns: Turns, *, claim: bool = False, turn: Turn | None = None, rev: int = 10) -> None:
    turns.swapped(False, 0.003, claim=claim, turn=turn, revision=rev)


def test_nobody_holds_the_turn_so_a_swap_expects_none() -> None:
    assert Turns().expect(None, now=0.0) == 0


def test_a_process_claims_after_losing_its_runs_first_swaps() -> None:
    turns = Turns()
    for _ in range(CLAIM_AFTER):
        assert not turns.wants_claim
        lose(turns)
    assert turns.wants_claim


def test_a_claim_is_ours_only_when_our_failure_branch_made_it() -> None:
    turns = Turns()
    lose(turns, claim=False, turn=another(10), rev=10)  # another's claim at our revision
    assert not turns.holding
    lose(turns, claim=True, turn=another(9), rev=10)  # an older claim: not ours
    assert not turns.holding
    lose(turns, claim=True, turn=Turn(3, 11, "me"), rev=11)
    assert turns.holding
    assert turns.expect(Turn(3, 11, "me"), now=0.0) == 11
    assert not turns.wants_claim


def test_another_claim_is_deferred_to_then_taken_over_after_patience() -> None:
    turns = Turns()
    lose(turns)
    patience = turns.patience()
    assert MIN_PATIENCE <= patience <= MAX_PATIENCE
    assert turns.expect(another(), now=100.0) is None
    assert turns.expect(another(), now=100.0 + patience / 2) is None
    assert turns.expect(another(), now=100.0 + patience) == 50  # compared, and deleted on a win


def test_a_new_claim_gets_patience_of_its_own() -> None:
    turns = Turns()
    assert turns.expect(another(50), now=100.0) is None
    assert turns.expect(another(60), now=100.0 + turns.patience()) is None


def test_a_win_ends_the_run_of_losses_and_the_claim() -> None:
    turns = Turns()
    lose(turns, claim=True, turn=Turn(3, 11, "me"), rev=11)
    turns.swapped(True, 0.003, claim=False, turn=None, revision=12)
    assert (turns.losses, turns.holding, turns.wants_claim) == (0, False, False)


def test_a_claim_of_ours_taken_over_is_no_longer_ours() -> None:
    turns = Turns()
    lose(turns, claim=True, turn=Turn(3, 11, "me"), rev=11)
    assert turns.expect(another(20), now=0.0) is None
    assert not turns.holding
