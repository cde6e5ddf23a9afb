"""One process's view of a section's turn (``turn.py``): when it claims, what its swaps
expect, how long it lets another's claim stand, and when it takes one over."""

from __future__ import annotations

from lessor.etcd.leases import EtcdLease
from lessor.etcd.state import Turn
from lessor.etcd.turn import CLAIM_AFTER, MAX_PATIENCE, MIN_PATIENCE, Turns

MINE = 3  # the etcd lease id our claims ride on


def another(create_revision: int = 50) -> Turn:
    return Turn(lease=7, create_revision=create_revision, holder="other")


def mine(create_revision: int = 11) -> Turn:
    return Turn(lease=MINE, create_revision=create_revision, holder="me")


def lease(ttl: int = 10, t0: float = 0.0) -> EtcdLease:
    return EtcdLease(MINE, ttl, t0)


def lose(turns: Turns, *, claim: EtcdLease | None = None, turn: Turn | None = None) -> None:
    """A swap of ours lost (having told ``turns`` it claims on ``claim``, if any), and brought
    back ``turn``."""
    if claim is not None:
        turns.claiming(claim, now=0.0)
    turns.swapped(False, turn, seconds=0.003, now=0.0)


def test_nobody_holds_the_turn_so_a_swap_expects_none() -> None:
    assert Turns().expect(None, now=0.0, deadline=1e9) == 0


def test_a_process_claims_after_losing_its_runs_first_swaps() -> None:
    turns = Turns()
    for _ in range(CLAIM_AFTER):
        assert not turns.wants_claim
        lose(turns)
    assert turns.wants_claim


def test_a_claim_is_ours_only_on_a_lease_a_claiming_swap_of_ours_named() -> None:
    turns = Turns()
    lose(turns, turn=mine(10))  # on our lease id, but no swap of ours claimed on it
    assert not turns.holding
    lose(turns, claim=lease(), turn=another(11))  # ours found the turn taken: not ours
    assert not turns.holding
    lose(turns, turn=mine(11))
    assert turns.holding
    assert turns.expect(mine(11), now=0.0, deadline=1e9) == 11
    assert not turns.wants_claim


def test_a_claim_of_ours_whose_reply_was_lost_is_ours_when_read() -> None:
    turns = Turns()
    turns.claiming(lease(), now=0.0)  # the swap is sent; its reply never comes
    assert (
        turns.expect(mine(11), now=0.0, deadline=1e9) == 11
    )  # compared by create revision, not deferred to
    assert turns.holding


def test_a_later_claim_on_our_lease_is_compared_by_its_own_create_revision() -> None:
    turns = Turns()
    lose(turns, claim=lease(), turn=mine(11))
    assert turns.expect(mine(20), now=0.0, deadline=1e9) == 20
    assert turns.claimed == 20


def test_a_claim_of_ours_on_a_retired_or_expired_lease_is_compared_but_not_held() -> None:
    retired = lease()
    retired.retired = True
    turns = Turns()
    lose(turns, claim=retired, turn=mine(11))
    assert not turns.holding
    assert turns.expect(mine(11), now=0.0, deadline=1e9) == 11  # never deferred to: it is ours
    assert not turns.holding
    turns = Turns()
    lose(turns, claim=lease(ttl=10), turn=mine(11))
    assert turns.holding
    assert turns.expect(mine(11), now=10.0, deadline=1e9) == 11  # the lease's local expiry
    assert not turns.holding


def test_a_deferral_pauses_about_one_attempt_and_never_0() -> None:
    turns = Turns()
    assert 0.0 < turns.pause() <= turns.patience()
    lose(turns)  # an attempt of 3 ms
    assert turns.pause() == 0.003


def test_another_claim_is_deferred_to_then_taken_over_after_patience() -> None:
    turns = Turns()
    lose(turns)
    patience = turns.patience()
    assert MIN_PATIENCE <= patience <= MAX_PATIENCE
    assert turns.expect(another(), now=100.0, deadline=1e9) is None
    assert turns.expect(another(), now=100.0 + patience / 2, deadline=1e9) is None
    assert (
        turns.expect(another(), now=100.0 + patience, deadline=1e9) == 50
    )  # compared, and deleted on a win


def test_the_patience_counts_from_the_first_deferral_whichever_claims_follow() -> None:
    """Claims that follow one another (others taking them over) cannot keep a process from
    swapping for longer than its patience (review 4: a far process starved so)."""
    turns = Turns()
    assert turns.expect(another(50), now=100.0, deadline=1e9) is None
    assert turns.expect(another(60), now=100.0 + turns.patience() / 2, deadline=1e9) is None
    assert turns.expect(another(70), now=100.0 + turns.patience(), deadline=1e9) == 70


def test_a_swap_ends_the_deferral() -> None:
    turns = Turns()
    assert turns.expect(another(50), now=100.0, deadline=1e9) is None
    turns.swapped(False, None, seconds=0.003, now=100.0 + turns.patience())
    assert turns.expect(another(60), now=100.0 + turns.patience(), deadline=1e9) is None


def test_no_deferral_that_leaves_no_time_to_read_and_swap() -> None:
    turns = Turns()
    turns.timed(0.010)
    assert turns.expect(another(50), now=100.0, deadline=100.5) is None
    # a pause (10 ms), a read and a swap (10 ms each) no longer fit: take the claim over now
    assert turns.expect(another(50), now=100.0, deadline=100.03) == 50


def test_a_win_ends_the_run_of_losses_and_the_claim() -> None:
    turns = Turns()
    lose(turns, claim=lease(), turn=mine(11))
    turns.swapped(True, None, seconds=0.003, now=0.0)
    assert (turns.losses, turns.holding, turns.wants_claim) == (0, False, False)


def test_a_claim_of_ours_taken_over_is_no_longer_ours() -> None:
    turns = Turns()
    lose(turns, claim=lease(), turn=mine(11))
    assert turns.expect(another(20), now=0.0, deadline=1e9) is None
    assert not turns.holding
