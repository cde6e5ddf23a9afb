"""One acquisition, from the moment it joined its section's gate until it has its grant.

The shell makes the :class:`~lessor.etcd.core.member.Member`, queues it at the gate (under its
own lock, so that no eviction forgets a section being acquired) and drives :func:`acquire`.
The acquisition waits for its turn (:class:`~lessor.etcd.ops.WaitTurn`): a leader may settle
it, or hand it the lead, and then it makes attempts for everyone queued (``lead.py``). Its
time running out in the queue withdraws it (``lead.withdraw``). How long it waited for its
turn is told to observers (:func:`lessor.observe.queued`).

Whatever exception reaches the acquisition once it joined the gate (KeyboardInterrupt, a
task's cancellation), even before :func:`acquire` started, the shell then drives
``lead.give_up``: out of the gate, and nothing held for a caller that has gone. (After an
ordinary end, or after ``lead``'s own way out, give_up finds nothing left to do.)
"""

from __future__ import annotations

from lessor import observe
from lessor.etcd.core.lead import lead, withdraw
from lessor.etcd.core.member import Config, Held, Member
from lessor.etcd.gate import Gate, Waiter
from lessor.etcd.known import Known
from lessor.etcd.ops import Steps, Track, WaitTurn

__all__ = ["NOTICE", "acquire"]

NOTICE = 0.1
"""The longest a queued acquisition waits without looking at its context and deadline: a
cancellation of the caller's context wakes nothing of ours, so it is noticed this late."""


def acquire(
    known: Known,
    gate: Gate[Member],
    waiter: Waiter[Member],
    *,
    leads: bool,
    turn: object,
    config: Config,
) -> Steps:
    """Settle ``waiter``'s acquisition (queued at ``gate``; ``leads`` when ``join`` said so;
    ``turn`` is what its ``wake`` sets) and return its grant, or raise its error. On an
    exception the shell drives ``give_up`` (see the module documentation)."""
    m = waiter.item
    waited = 0.0
    if not leads:
        leads = yield from _wait_turn(known, gate, waiter, turn, config)
        waited = config.clock() - m.started
    observe.queued("etcd", known.keys.section_id, waited, leads)
    if leads:
        yield from lead(known, gate, waiter, config)
    if m.error is not None:
        raise m.error
    grant = m.grant
    assert grant is not None
    held = grant.handle
    if isinstance(held, Held) and not held.tracked.claimed:
        # The core tracks every grant it settles; one whose Track an exception in the
        # leader's thread cut off (lead's way out) is tracked here, by its taker.
        yield Track((held,))
    return grant


def _wait_turn(
    known: Known, gate: Gate[Member], waiter: Waiter[Member], turn: object, config: Config
) -> Steps:
    """Wait until a leader settles ``waiter`` (False) or hands it the lead (True)."""
    m = waiter.item
    while not m.settled and not waiter.lead:
        now = config.clock()
        if m.done(now) and (yield from withdraw(known, gate, waiter, config)):
            return False
        yield WaitTurn(turn, max(0.0, min(m.deadline - now, NOTICE)) or 0.01)
    return not m.settled
