"""The end of a grant: its release, its expiry at the deadline, and the marker's deletion.

A grant's entry is live while its holder marker exists; ending the grant is deleting that
marker. Two ends race for it, and a :class:`~lessor.etcd.core.member.Once` lets exactly one
delete it: the holder's :func:`release`, or :func:`expire` at the grant's deadline when the
holder overran (the reaper calls it: a renewal of the shared etcd lease for a later
acquisition would otherwise keep the marker alive past the deadline).

A release *rides* (``gate.py``): the next Txn the process sends on the section deletes its
marker, be it an acquisition's compare-and-swap (in either branch) or one Txn of deletions
for every release aboard, sent by the first of them. It waits at most :data:`RIDE_WAIT` to be
taken, and half the release timeout (at most one call's time) for the reply; else, and when
the Txn's outcome is unknown, it deletes the marker itself (:func:`_ride`).

The deletion fails over across etcd's members within the release timeout
(:func:`_delete_marker`). Its first failure retires the etcd lease, so that if every try
fails the marker still ends, at the lease's TTL as it stood then; the error then says when
the ranges come free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lessor import observe
from lessor.errors import LessorError, Unavailable
from lessor.etcd.core.member import Config, Held
from lessor.etcd.gate import MAX_RIDES, Gate, Ride
from lessor.etcd.ops import (
    CleanUp,
    DeleteMarker,
    DeleteMarkers,
    GiveBack,
    RetireLease,
    Steps,
    Wait,
    WaitTurn,
)
from lessor.etcd.retry import (
    MIN_CALL_TIME,
    RELEASE_PAUSE,
    RELEASE_PAUSE_MAX,
    RETRYABLE,
    call_timeout,
)
from lessor.etcd.transport import RetryableRpc

__all__ = ["RIDE_WAIT", "Boarding", "expire", "release", "release_quietly"]

log = logging.getLogger("lessor")

RIDE_WAIT = 0.01
"""The longest a release waits aboard for a Txn to take it (seconds); past that it deletes its
marker itself. A hot section's attempts take a few milliseconds on one member."""


@dataclass(frozen=True, slots=True)
class Boarding:
    """How a release rides the process's next Txn on the section: the section's ``gate``, and
    what its thread waits on (``turn``, a thread's event or a task's), what sets it
    (``wake``) and what clears it (``rearm``: a ride is woken twice when it leads the
    releases while a swap carries its own marker)."""

    gate: Gate[Any]
    turn: object
    wake: Callable[[], object]
    rearm: Callable[[], object]


def release(held: Held, config: Config, boarding: Boarding | None = None) -> Steps:
    """Give back a grant: its entry is dead to this process at once (its next swap drops it),
    and to everyone once its marker is deleted, here or, for a holder that overran, already at
    its deadline (:func:`expire`). With ``boarding`` the deletion rides the process's next
    Txn on the section (:func:`_ride`). The deletion fails over across etcd's members within
    the release timeout. The etcd lease is given back whatever the deletion's outcome; a
    deletion that failed retires the lease first (a renewal would keep the marker alive), and
    is raised after that as one :class:`~lessor.errors.Unavailable` that says when the ranges
    come free."""
    began = config.clock()
    held.known.release(held.owner)
    lease = held.lease
    failure: BaseException | None = None
    by_revoke = False
    try:  # from the claim on: an exception thrown in anywhere after it deletes the marker apart
        ends_marker = held.ended.claim()  # False: expire deleted it (or is deleting it)
        # The last user of a retired lease gives it back, which revokes it, and the marker
        # goes with it: one write instead of two.
        by_revoke = ends_marker and lease.retired and lease.users == 1
        if ends_marker and not by_revoke:
            failure = yield from _end_marker(held, boarding, config, began)
    except GeneratorExit:
        raise
    except BaseException as e:  # the thread's own (KeyboardInterrupt, ...): delete it apart
        failure = e
        yield CleanUp(_delete_quietly(held, config))
    try:
        revoked = yield GiveBack(lease, config.release_timeout)
    except GeneratorExit:
        raise
    except BaseException as e:
        if by_revoke and not isinstance(e, (LessorError, *RETRYABLE)):
            yield CleanUp(_delete_quietly(held, config))  # the revoke may not have been sent
        raise
    if isinstance(failure, (LessorError, *RETRYABLE)):
        if revoked is True and lease.revoked:
            return  # the retired lease's last user gave it back: the marker went with it
        raise _undeleted(held, failure, config)
    if failure is not None:
        raise failure
    if by_revoke and revoked is False:
        raise Unavailable(
            f"section {held.known.keys.section_id!r}: could not revoke etcd lease "
            f"{lease.id:x}; the lease's marker lives until the lease expires"
        )


def _end_marker(held: Held, boarding: Boarding | None, config: Config, began: float) -> Steps:
    """Delete ``held``'s marker for a release that began at ``began``: riding the process's
    next Txn on the section when it can (:func:`_ride`), else, or when the ride failed, with a
    deletion of its own within what is left of the release timeout. Returns None, or the
    error that ended the deletion's tries."""
    ridden = "no" if boarding is None else (yield from _ride(held, boarding, config))
    failure = None
    if ridden == "failed":  # as a failed try of its own: no renewal may keep the marker now
        held.lease.retired = True  # at once, in case the op never runs (a second exception)
        yield RetireLease(held.lease, config.release_timeout)
    if ridden in ("no", "failed"):
        failure = yield from _delete_marker(held, config, began + config.release_timeout,
                                            retired=ridden == "failed")  # fmt: skip
    if failure is None:
        observe.freed("etcd", held.known.keys.section_id, config.clock() - began,
                      rode=ridden == "rode")  # fmt: skip
    return failure


def _ride(held: Held, boarding: Boarding, config: Config) -> Steps:
    """Wait aboard the gate for a Txn of the process to delete ``held``'s marker (leading the
    releases when the gate says so: :func:`_carry`). Returns ``"rode"`` when a Txn deleted
    it (its reply came) that was another's or carried others' markers too; ``"alone"`` when
    the release's own Txn deleted it with nothing else aboard (a write of its own, as without
    riding); ``"no"`` when no Txn took the ride within :data:`RIDE_WAIT`; ``"failed"`` when
    the Txn that took it ended with its outcome unknown, or its reply has not come within
    half the release timeout (at most one call's time), which counts as a failed first try of
    the release's own. After "no" and "failed" the caller deletes the marker itself (a Txn
    that deletes it as well changes nothing).

    An exception that reaches the thread here takes the ride off, and, unless a Txn is known
    to have deleted the marker, retires the etcd lease at once, as a failed deletion does
    (:func:`_delete_marker`): the caller's clean-up may never start (a second exception), and
    no renewal may then keep the marker alive. A ride that leaves while it leads the releases
    (a swap took it after the gate handed it the lead) passes the lead on."""
    gate = boarding.gate
    ride = Ride(held.owner, boarding.wake)
    began = config.clock()
    taken_by = began + RIDE_WAIT
    # The ride is the release's first try: it may take half the release timeout, so that
    # the deletion of its own, if it comes to that, has the other half.
    landed_by = max(taken_by, began + _ride_time(config))
    alone = False
    try:
        gate.board(ride)
        while ride.carried is None:
            # Cleared before the ride is looked at: a wake-up that came before is for what
            # this look sees; one that comes after ends the wait below. A wake-up whose
            # change the look already saw would otherwise end every wait at once (a spin).
            boarding.rearm()
            if ride.carried is not None:
                break
            if ride.lead:
                timeout = max(MIN_CALL_TIME, min(_ride_time(config), landed_by - config.clock()))
                alone = (yield from _carry(gate, ride, timeout)) == [ride]
                continue
            now = config.clock()
            if now >= taken_by and gate.alight(ride):
                return "no"  # not taken in time
            if ride.taken and now >= landed_by:
                return "failed"  # taken, and no word yet
            until = landed_by if ride.taken else taken_by
            yield WaitTurn(boarding.turn, until - now)
    except BaseException:
        if not ride.carried:
            held.lease.retired = True  # directly: no op can be relied on to run from here
        gate.alight(ride)
        raise
    finally:
        if ride.lead:  # handed the lead, then taken by a swap before it could lead
            gate.done_carrying(ride)
    if not ride.carried:
        return "failed"  # the Txn that took it failed (alight returned above otherwise)
    return "alone" if alone else "rode"


def _ride_time(config: Config) -> float:
    """The longest a ride waits for its Txn's reply, or a release's Txn of deletions takes."""
    return min(config.rpc_timeout, config.release_timeout / 2)


def _carry(gate: Gate[Any], leader: Ride, timeout: float) -> Steps:
    """``leader`` leads the releases: one Txn deletes the markers of the rides aboard (its own
    first, unless a swap took it already), and the lead passes on. A Txn that failed tells
    its rides so: each then deletes its marker itself, with the deletion's own fail-over.
    Returns the rides it took."""
    rides: list[Ride] = []
    carried = False
    try:
        rides = gate.take_rides(MAX_RIDES)
        if rides:
            yield DeleteMarkers(tuple(r.owner for r in rides), timeout)
            carried = True
    except (RetryableRpc, LessorError):
        pass  # each ride deletes its marker itself
    finally:
        gate.landed(rides, carried, sender=leader)
        gate.done_carrying(leader)
    return rides


def expire(held: Held, config: Config) -> Steps:
    """``held``'s deadline has passed and its holder has not released it (its callback still
    runs): delete its marker now, so that its ranges come free at the deadline, not when the
    callback ends. (A renewal of the shared etcd lease for a later acquisition would keep the
    marker alive past it.) The holder's release then only gives the etcd lease back.

    A deletion that fails retires the lease: the marker ends with it, at its TTL."""
    if not held.ended.claim():
        return  # released already
    held.known.release(held.owner)
    failure = yield from _delete_marker(held, config)
    if failure is not None:
        log.warning("%s", _undeleted(held, failure, config))


def _delete_marker(
    held: Held, config: Config, give_up_at: float | None = None, *, retired: bool = False
) -> Steps:
    """Delete ``held``'s marker, trying the next etcd endpoint after each failure, until
    ``give_up_at`` (by default the release timeout from now; ``retired``: the lease was
    retired already). Returns None, or the error that ended the tries: etcd's permanent
    refusal, or the last of the failures.

    The first failure retires the etcd lease at once, not after the last: from then on no
    renewal (for this process's next acquisitions) extends the marker, so if the tries all
    fail it ends at the lease's TTL as it stood then. Any other exception out of a try
    retires it too before it goes on. (A renewal already on its way may still
    land: see :meth:`~lessor.etcd.leases.LeasePool.take`.)"""
    if give_up_at is None:
        give_up_at = config.clock() + config.release_timeout
    pause = RELEASE_PAUSE
    while True:
        timeout = call_timeout(give_up_at - config.clock(), config.rpc_timeout, config.endpoints)
        try:
            yield DeleteMarker(held.owner, timeout)
            return None
        except RetryableRpc as e:
            failure: Exception = e
        except LessorError as e:
            failure = e
        except BaseException:
            # Anything else (a cancellation, a signal handler's exception, a bug, a channel
            # of another event loop): whether the marker went is unknown, and no op can be
            # relied on to run from here. The lease is retired directly (as ``_forsake``
            # does), so that no renewal keeps the marker alive.
            held.lease.retired = True
            raise
        if not retired:
            retired = True
            held.lease.retired = True  # at once, in case the op never runs (a second exception)
            yield RetireLease(held.lease, config.release_timeout)
        if isinstance(failure, LessorError) or config.clock() + pause + MIN_CALL_TIME > give_up_at:
            return failure
        yield Wait(pause)
        pause = min(2 * pause, RELEASE_PAUSE_MAX)


def _undeleted(held: Held, error: BaseException, config: Config) -> Unavailable:
    lease = held.lease
    return Unavailable(
        f"section {held.known.keys.section_id!r}: could not delete the marker of acquisition "
        f"{held.seq} within the release timeout; its ranges stay held until etcd lease "
        f"{lease.id:x} expires, {max(0.0, lease.expiry - config.clock()):.1f}s from now at "
        f"most, or is revoked: {error}"
    )


def _delete_quietly(held: Held, config: Config) -> Steps:
    failure = yield from _delete_marker(held, config)
    if failure is not None:
        log.warning("%s", _undeleted(held, failure, config))


def release_quietly(held: Held, config: Config) -> Steps:
    """:func:`release` for a grant whose caller has gone: a failure is logged, not raised."""
    try:
        yield from release(held, config)
    except (LessorError, *RETRYABLE) as e:
        log.warning("section=%r: could not give back an interrupted acquisition's lease: %s",
                    held.known.keys.section_id, e)  # fmt: skip
