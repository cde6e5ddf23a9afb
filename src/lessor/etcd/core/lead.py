"""Leading a section's gate, and every way out of it.

A process's acquisitions of one section queue at the section's gate (``gate.py``). The one
that leads makes attempts (``attempt.py``) for everyone queued, up to :data:`MAX_GROUP` at a
time, pausing between them as ``retry.py`` says, until its own acquisition is settled; then it
hands the lead on (:func:`lead`). A queued acquisition whose time is up leaves the queue
(:func:`withdraw`). Each attempt, how it ended, how long it took and the pause after it are
told to observers (:func:`lessor.observe.attempt`).

**Departures.** An acquisition whose thread stops waiting (an exception reached it) while it is
inside an attempt is not waited for: the leader settles it when the attempt ends, and gives
back whatever the attempt granted it (:func:`orphaned`); out of the gate, its own thread does
(:func:`give_up`). Nothing stays held for a caller that has gone. (A second exception on that
way out, or a generator closed before its end, leaves no more calls to make: what the departed
had granted is left to the process's next swap of the section to drop, or to its etcd lease,
retired, to end: :func:`_way_out`, :func:`_forsake`.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lessor import observe
from lessor.errors import Cancelled, DeadlineExceeded
from lessor.etcd.core.abandon import fail
from lessor.etcd.core.attempt import Deferred, Stale, group_commit
from lessor.etcd.core.member import Config, Conflict, Held, Member
from lessor.etcd.core.release import release_quietly
from lessor.etcd.gate import Gate, Waiter
from lessor.etcd.keys import Owner
from lessor.etcd.known import Known
from lessor.etcd.ops import CleanUp, DropTurn, Steps, Track, Wait

__all__ = ["MAX_GROUP", "give_up", "lead", "orphaned", "withdraw"]

log = logging.getLogger("lessor")

MAX_GROUP = 32
"""The most acquisitions of one section one Txn writes for a process (group commit)."""


def lead(known: Known, gate: Gate[Member], me: Waiter[Member], config: Config) -> Steps:
    """Make attempts for the queue until ``me`` is settled, then hand the lead on.

    If an exception reaches the leader's thread inside an attempt, ``me`` departs and the
    attempt's other members go back to the queue, whose next leader carries on for them.
    Whichever way the lead ends, if no acquisition is left to carry on, a claim of the
    section's turn that the process still holds is dropped (:func:`_end_turn`).
    """
    try:
        yield from _attempts(known, gate, me, config)
    except GeneratorExit:  # no call can be made: a claim left is ended by others' patience
        gate.hand_over(me)
        raise
    except BaseException:
        # An exception reached the leader's thread (KeyboardInterrupt; in asyncio, any
        # cancel): it stops contending as surely as after a win.
        gate.hand_over(me)
        yield from _end_turn(known, gate, config)
        raise
    gate.hand_over(me)
    yield from _end_turn(known, gate, config)


def _attempts(known: Known, gate: Gate[Member], me: Waiter[Member], config: Config) -> Steps:
    """:func:`lead`'s attempts, until ``me`` is settled (or has failed)."""
    m = me.item
    section_id = known.keys.section_id
    while True:
        batch = gate.take(MAX_GROUP)
        began = config.clock()
        try:
            failed = yield from group_commit(known, [w.item for w in batch], config, gate)
            departed = gate.finish(batch)
            ended = config.clock()
        except GeneratorExit:  # closed unfinished: no more calls can be made
            gate.leave(me)
            for w in gate.finish(batch):
                _forsake(known, w.item)
            raise
        except BaseException:
            gate.leave(me)  # the leader's thread alone is interrupted
            departed = gate.finish(batch)
            staying = [w for w in batch if w not in departed]
            yield from _way_out(known, staying, departed, config)
            raise
        yield from _orphans(known, departed, config)
        now = config.clock()
        late = not m.settled and m.done(now)
        pause = 0.0 if m.settled or late else _pause(known, m, failed, now)
        observe.attempt("etcd", section_id, members=len(batch), outcome=_outcome(failed),
                        seconds=ended - began, pause=pause)  # fmt: skip
        if m.settled:
            return
        if late:
            expired = DeadlineExceeded(f"{m.what}: the deadline passed while acquiring a lease")
            yield from fail(known, m, failed if failed is not None else expired, config)
            return
        if pause > 0:
            gate.pausing()  # the releases aboard need not wait for this leader's next swap
        yield Wait(pause, m.ctx)
        gate.resumed()


def _pause(known: Known, m: Member, failed: BaseException | None, now: float) -> float:
    """How long the leader of ``m`` waits before its next attempt, after one that returned
    ``failed`` (None: it settled others but not ``m``, too many at once)."""
    if known.turns.due and _lost(failed):
        # Our Txn lost while we hold the turn: the fresh state it brought back holds while
        # the others defer, so our next swap is the one expected to win (turn.py). Any other
        # failure (etcd down, too little time left for a call), or a second loss while
        # holding it (a writer that does not defer), is backed off from like anyone's: a
        # pause of 0 there is a busy loop.
        return 0.0
    if isinstance(failed, Deferred):
        return min(failed.pause, max(0.0, m.deadline - now))
    contended = failed is None or isinstance(failed, Conflict)
    return m.backoff.after(contended, m.deadline - now)


def _lost(failed: BaseException | None) -> bool:
    """Whether an attempt that returned ``failed`` lost a Txn of ours (a swap, or a check)
    that brought back the fresh state: a :class:`Conflict` that is not :class:`Stale` (no Txn
    sent: the state is read again)."""
    return isinstance(failed, Conflict) and not isinstance(failed, Stale)


def _end_turn(known: Known, gate: Gate[Member], config: Config) -> Steps:
    """An acquisition left the gate (its lead ended, settled, late or interrupted; or it
    withdrew or gave up from the queue). If that left the gate idle, the process stopped
    contending, and a claim of the turn it still holds (or that its last claiming swap, whose
    reply never came, may have made) would only hold the others back until their patience
    ends (``turn.py``). It is deleted apart from the caller (a clean-up), whose grant or error
    is settled and must not wait up to ``rpc_timeout`` for a call that is no business of its
    own. A leader that comes meanwhile still knows the claim for this process's and compares
    it; if the clean-up deletes it first, that leader's swap loses once and reads no turn."""
    if not gate.idle:  # another acquisition of ours carries on: the claim is its
        return
    claim = known.turns.leaving()
    if claim is not None:
        yield CleanUp(_drop_turn(known, claim, config))


def _drop_turn(known: Known, claim: tuple[int, int], config: Config) -> Steps:
    try:
        yield DropTurn(*claim, config.rpc_timeout)
    except Exception:  # the others' patience bounds a claim left behind
        log.debug("section %r: could not drop our turn", known.keys.section_id, exc_info=True)


def _outcome(failed: BaseException | None) -> observe.Outcome:
    """How an attempt that returned ``failed`` ended, for :func:`lessor.observe.attempt`."""
    if failed is None:
        return "settled"
    if isinstance(failed, Deferred):
        return "deferred"
    if isinstance(failed, Stale):
        return "stale"
    return "lost" if isinstance(failed, Conflict) else "error"


def _forsake(known: Known, m: Member) -> None:
    """``m`` departed and no call can be made for it any more: whatever it was granted, or a
    swap of its that may have committed, is left for this process's next swap of the section
    to drop, or for its etcd lease to end: the lease is retired (no op can be yielded here, so
    its flag is set directly), for a renewal would keep that marker alive."""
    if m.lease is None:
        return
    m.lease.retired = True
    if m.grant is not None and isinstance(m.grant.handle, Held):
        known.abandoned.add(m.grant.handle.owner)
    elif m.ambiguous:
        known.abandoned.add(Owner(m.lease.id, m.seq))


def _way_out(
    known: Known,
    staying: Sequence[Waiter[Member]],
    departed: Sequence[Waiter[Member]],
    config: Config,
) -> Steps:
    """The leader's way out of an attempt that an exception cut short: track the grants the
    exception kept from the reaper (those of members still waiting: their threads take them),
    and give back what the departed were granted.

    A second exception thrown in here (a second Ctrl-C) ends the calls: the departed members
    not yet given back are forsaken (:func:`_forsake`), and a staying member's grant is
    tracked by its own thread on its way out of the acquisition (the shell tracks every grant
    it returns), so nothing is left that neither a release, the reaper nor a retired etcd
    lease ends."""
    left = list(departed)
    try:
        if _untracked(staying):
            yield Track(_untracked(staying))
        while left:
            yield from orphaned(known, left[0].item, config)
            del left[0]
    except BaseException:
        for w in left:
            _forsake(known, w.item)
        raise


def _orphans(known: Known, departed: Sequence[Waiter[Member]], config: Config) -> Steps:
    for w in departed:
        yield from orphaned(known, w.item, config)


def _untracked(waiters: Sequence[Waiter[Member]]) -> tuple[Held, ...]:
    return tuple(
        w.item.grant.handle
        for w in waiters
        if w.item.grant is not None
        and isinstance(w.item.grant.handle, Held)
        and not w.item.grant.handle.tracked.claimed
    )


def orphaned(known: Known, m: Member, config: Config) -> Steps:
    """``m``'s thread left while ``m`` was inside an attempt: give back what it got."""
    grant = m.grant
    if grant is not None and isinstance(grant.handle, Held):
        yield CleanUp(release_quietly(grant.handle, config))
    elif not m.settled:
        # Not reached by the attempt (too little time left, or the leader was interrupted
        # first): it holds no grant, but an earlier swap of its own may still commit.
        yield from fail(known, m, Cancelled(f"{m.what}: acquisition interrupted"), config)


def withdraw(known: Known, gate: Gate[Member], waiter: Waiter[Member], config: Config) -> Steps:
    """``waiter``'s time ran out while it waited for its turn. Returns True when it left the
    queue and is settled; False when it is inside an attempt, which settles it (and is bounded
    by its deadline too), or is already settled."""
    if not gate.withdraw(waiter):
        return False
    m = waiter.item
    late = DeadlineExceeded(
        f"{m.what}: the deadline passed while this process's other acquisitions of the "
        "section went first"
    )
    yield from fail(known, m, late, config)
    yield from _end_turn(known, gate, config)
    return True


def give_up(known: Known, gate: Gate[Member], waiter: Waiter[Member], config: Config) -> Steps:
    """An exception (KeyboardInterrupt, ...) reached ``waiter``'s thread while it acquired.
    Out of the gate, its acquisition is its own to end here; inside an attempt, the leader
    ends it (:func:`orphaned`): nobody waits for it."""
    if not gate.leave(waiter):
        return
    m = waiter.item
    if m.grant is not None:
        if isinstance(m.grant.handle, Held):
            yield from release_quietly(m.grant.handle, config)
    elif m.error is None:
        yield from fail(known, m, Cancelled(f"{m.what}: acquisition interrupted"), config)
    yield from _end_turn(known, gate, config)
