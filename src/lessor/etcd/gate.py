"""Group commit: a process's concurrent acquisitions of one section share one compare-and-swap.

Every acquisition of a section swaps the same etcd key, so two threads of one process that
swap it at once make one of them fail for nothing, and a thread that keeps losing can starve
while luckier ones keep winning. The gate queues a process's acquisitions of one section in
arrival order. One of them at a time *leads*: it takes every acquisition waiting at that
moment (itself first) and makes one attempt for all of them — one Txn that writes an entry
for each that gets ranges (``core/attempt.py``). Those that the attempt does not settle go back
to the front of the queue, in order. When the leader's own acquisition is settled it hands the
lead to the first one still waiting, so nobody's caller waits for acquisitions other than
those queued before it and in the same attempt.

The gate is pure bookkeeping under one lock: it never blocks and never calls etcd. It wakes a
waiter through the ``wake`` callback the shell gave it (a thread's event, a task's future).

Every way out is here, so that the queue always has a leader while it has waiters:

* :meth:`withdraw`: a queued waiter whose time is up leaves (if it was just handed the lead,
  the lead passes on).
* :meth:`leave`: a waiter whose thread an exception reached *departs*. Queued, it leaves as
  with withdraw. Inside an attempt, nobody waits for it: :meth:`finish` hands it to the leader
  as an orphan, to be settled and to have whatever it was granted given back.

The gate spans only acquisitions, never callbacks: holders run concurrently.

**Releases ride** (group commit for releases). A release need not spend an etcd write of its
own on deleting its marker. It *boards* the gate (:meth:`board`), and the next Txn the process
sends on the section deletes every marker aboard: the leader's next compare-and-swap, in either
branch (a lost swap is a write all the same), or, when no acquisition leads, one Txn of
deletions that a release sends for all aboard, itself first: that release *leads the
releases* (:meth:`board` says so, or the gate hands it the lead when the acquisitions' lead
ends or pauses (:meth:`pausing`), or the release Txn before it is done:
:meth:`done_carrying`). A Txn takes the rides with :meth:`take_rides` and tells them how it
ended with :meth:`landed`. A ride whose Txn's outcome is unknown, or that leaves
(:meth:`alight`: its time is up, or an exception reached it), deletes its marker itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from lessor.etcd.keys import Owner

__all__ = ["MAX_RIDES", "Gate", "Ride", "Waiter"]

T = TypeVar("T")

MAX_RIDES = 32
"""The most releases one Txn carries (etcd takes 128 operations per Txn)."""


class Waiter(Generic[T]):
    """One queued acquisition (``item``) and how to wake its thread (``wake``): called once
    the item is settled, or when its thread is to lead."""

    __slots__ = ("departed", "in_attempt", "item", "lead", "wake")

    def __init__(self, item: T, wake: Callable[[], object]) -> None:
        self.item = item
        self.wake = wake
        self.lead = False
        self.in_attempt = False
        self.departed = False


class Ride:
    """One release aboard the gate: the marker of ``owner`` to delete, and how to wake its
    thread (``wake``): when a Txn that took it ended, or when it is to lead the releases
    (``lead``).

    ``carried`` is None while it waits; True once a Txn that deleted the marker has its reply
    (the marker is gone); False when no Txn carried it, or one whose outcome is unknown did:
    the releaser then deletes the marker itself (deleting a marker already gone changes
    nothing)."""

    __slots__ = ("carried", "lead", "owner", "taken", "wake")

    def __init__(self, owner: Owner, wake: Callable[[], object]) -> None:
        self.owner = owner
        self.wake = wake
        self.lead = False
        self.taken = False
        self.carried: bool | None = None


class Gate(Generic[T]):
    """The queue of one section's acquisitions in this process, and who leads it.

    ``settled(item)`` tells whether an attempt has settled an item.
    """

    def __init__(self, settled: Callable[[T], bool]) -> None:
        self._settled = settled
        self._lock = threading.Lock()
        self._leading = False
        self._queue: list[Waiter[T]] = []  # arrival order; empty whenever nobody leads
        self._aboard: list[Ride] = []  # boarding order, not yet taken by a Txn
        self._releasing: Ride | None = None  # the ride that leads the releases, if one does
        self._pausing = False  # the acquisitions' leader sends nothing for now

    @property
    def queued(self) -> int:
        """How many acquisitions wait in the queue (not counting those inside an attempt)."""
        with self._lock:
            return len(self._queue)

    @property
    def idle(self) -> bool:
        """Whether no acquisition leads or waits: the process has stopped acquiring here."""
        with self._lock:
            return not self._leading and not self._queue

    @property
    def aboard(self) -> int:
        """How many releases wait aboard for a Txn to take them."""
        with self._lock:
            return len(self._aboard)

    @property
    def leading(self) -> bool:
        """Whether some acquisition leads (makes attempts) now."""
        with self._lock:
            return self._leading

    def join(self, waiter: Waiter[T]) -> bool:
        """Queue ``waiter``; True when it leads at once (nobody else was acquiring)."""
        with self._lock:
            self._queue.append(waiter)
            if self._leading:
                return False
            self._leading = True
            waiter.lead = True
            return True

    def take(self, limit: int) -> list[Waiter[T]]:
        """The leader takes the first ``limit`` waiters (itself first) for one attempt."""
        with self._lock:
            batch = self._queue[:limit]
            del self._queue[:limit]
            for w in batch:
                w.in_attempt = True
            return batch

    def finish(self, batch: Sequence[Waiter[T]]) -> list[Waiter[T]]:
        """The attempt for ``batch`` is over: the settled are woken, the others go back to the
        front of the queue in their order. Returns the departed: the leader's to settle.

        Calling it again for the same batch does nothing more (an exception that reached the
        leader in the middle of it makes the leader call it again on its way out)."""
        with self._lock:
            pending = [w for w in batch if w.in_attempt]
            back = [w for w in pending
                    if not (w.departed or self._settled(w.item) or w in self._queue)]  # fmt: skip
            self._queue[:0] = back
            for w in pending:
                w.in_attempt = False
        for w in pending:
            if not w.departed and not w.lead and self._settled(w.item):
                w.wake()
        return [w for w in pending if w.departed]

    def board(self, ride: Ride) -> None:
        """``ride``'s release waits aboard for a Txn to delete its marker. When neither an
        acquisition nor a release leads, it leads the releases at once (``ride.lead``)."""
        with self._lock:
            self._aboard.append(ride)
            wakes = self._lead_releases()
        for wake in wakes:
            if wake is not ride.wake:  # its own thread is here: it sees ride.lead
                wake()

    def take_rides(self, limit: int) -> list[Ride]:
        """The first ``limit`` rides aboard, for the Txn the caller is about to send; it must
        tell them how that ended (:meth:`landed`) whatever happens."""
        with self._lock:
            rides = self._aboard[:limit]
            del self._aboard[:limit]
            for ride in rides:
                ride.taken = True
            return rides

    @staticmethod
    def landed(rides: Sequence[Ride], carried: bool, sender: Ride | None = None) -> None:
        """The Txn that took ``rides`` is over: ``carried`` when its reply came (it deleted
        their markers), False when its outcome is unknown or it was refused whole. Each ride's
        thread is woken, but the ``sender``'s (the release that sent the Txn: its thread is
        the one telling)."""
        for ride in rides:
            ride.carried = carried
            if ride is not sender:
                ride.wake()

    def pausing(self) -> None:
        """The acquisitions' leader is about to pause (back off, or defer to another process):
        it sends no swap meanwhile, so the releases lead themselves (:meth:`resumed` ends
        that; so does the end of the lead)."""
        with self._lock:
            self._pausing = True
            wakes = self._lead_releases()
        for wake in wakes:
            wake()

    def resumed(self) -> None:
        """The acquisitions' leader sends swaps again after its pause."""
        with self._lock:
            self._pausing = False

    def done_carrying(self, ride: Ride) -> None:
        """``ride`` led the releases and its Txn is over: the first ride still aboard leads
        them next, unless an acquisition leads (its swap takes them)."""
        with self._lock:
            ride.lead = False
            if self._releasing is ride:
                self._releasing = None
            wakes = self._lead_releases()
        for wake in wakes:
            wake()

    def alight(self, ride: Ride) -> bool:
        """``ride`` stops waiting to be taken (its time is up, or an exception reached its
        thread; if it led the releases, the lead passes on). True: no Txn took it, and its
        marker is its own to delete; False: a Txn took it, and :meth:`landed` will say how that
        ended (or already has)."""
        with self._lock:
            wakes = []
            if self._releasing is ride:
                ride.lead, self._releasing = False, None
                wakes = self._lead_releases(but=ride)
            if ride.taken:
                taken = True
            else:
                taken = False
                if ride in self._aboard:
                    self._aboard.remove(ride)
                ride.carried = False
        for wake in wakes:
            wake()
        return not taken

    def withdraw(self, waiter: Waiter[T]) -> bool:
        """Take a queued waiter out (its time is up); False while it is inside an attempt, or
        settled, or already out."""
        with self._lock:
            if waiter.in_attempt or waiter.departed or waiter not in self._queue:
                return False
            self._queue.remove(waiter)
            wakes = self._pass_lead(waiter)
        for wake in wakes:
            wake()
        return True

    def leave(self, waiter: Waiter[T]) -> bool:
        """``waiter``'s thread stops waiting (an exception reached it). True: it is out of the
        queue (the lead passed on if it had it), and its item is its thread's own to settle
        or give back. False: it is inside an attempt, or had already left; the leader settles
        it and gives back what it is granted."""
        with self._lock:
            if waiter.departed:
                return False
            waiter.departed = True
            if waiter.in_attempt:
                return False
            if waiter in self._queue:
                self._queue.remove(waiter)
            wakes = self._pass_lead(waiter)
        for wake in wakes:
            wake()
        return True

    def hand_over(self, leader: Waiter[T]) -> None:
        """``leader`` is done: the first waiter still queued leads next."""
        with self._lock:
            if leader in self._queue:  # it gave up between attempts
                self._queue.remove(leader)
            wakes = self._pass_lead(leader)
        for wake in wakes:
            wake()

    def _pass_lead(self, waiter: Waiter[T]) -> list[Callable[[], object]]:
        """If ``waiter`` led, whom to wake (after the lock is let go): the next leader; or,
        when no acquisition is left to lead, the ride to lead the releases still aboard, if
        any. Under the lock."""
        if not waiter.lead:
            return []
        waiter.lead = self._pausing = False  # a pause was the old leader's
        if self._queue:
            first = self._queue[0]
            first.lead = True
            return [first.wake]
        self._leading = False
        return self._lead_releases()

    def _lead_releases(self, but: Ride | None = None) -> list[Callable[[], object]]:
        """When neither an acquisition that sends swaps nor a release leads and rides are
        aboard, the first (other than ``but``) leads the releases: whom to wake. Under the
        lock."""
        if (self._leading and not self._pausing) or self._releasing is not None:
            return []
        first = next((r for r in self._aboard if r is not but), None)
        if first is None:
            return []
        first.lead, self._releasing = True, first
        return [first.wake]
