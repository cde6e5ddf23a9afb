"""Hooks for watching leases: what :mod:`lessor.metrics` (Prometheus) is built on.

An :class:`Observer` is told of every acquisition, failure, release and — for backends that
compare-and-swap — every attempt, every lost swap, every wait at a section's gate and when each
release made its ranges free (what a breakdown of an acquisition's time needs:
``benchmarks/bench.py`` builds one). Observers are
process-wide (:func:`add_observer`); with none installed a lease pays one empty-tuple check per
event.

A backend reports an event by calling this module's function of the event's name —
:func:`acquired`, :func:`acquire_failed`, :func:`released`, :func:`release_failed`,
:func:`conflict`, :func:`attempt`, :func:`queued`, :func:`freed` — with the arguments of the
:class:`Observer` method it calls on each observer. Each is an ordinary typed function, so a
misspelled event or a wrong argument is a type error, not a silent no-op. (The base class
:class:`~lessor.contract.Lessor` reports every event but ``conflict``, ``attempt``,
``queued`` and ``freed`` itself; a backend reports only those.)

Observers run on the caller's thread, inside the lease's critical path: they must be quick and
must not raise (an exception from an observer is logged and swallowed, so that watching a lease
can never break it).
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

from lessor.partition import Partition, SortedPartitions

__all__ = ["Observer", "Outcome", "add_observer", "observers", "remove_observer"]

Outcome = Literal["settled", "lost", "stale", "deferred", "error"]
"""How one attempt of a compare-and-swap backend ended (:meth:`Observer.attempt`):

* ``"settled"``: it settled every acquisition it carried that it could (granted, or failed
  for good);
* ``"lost"``: its compare-and-swap (or the Txn that checks a state without writing) lost to
  another writer;
* ``"stale"``: the state it had predated an acquisition and could not settle it: no swap was
  sent, and the next attempt reads the state again (:meth:`Observer.conflict` is told of this
  and of a ``"lost"`` one);
* ``"deferred"``: another process held the section's turn, so no swap was sent (it would
  have failed): the next attempt reads the state again after a pause (not a conflict:
  :meth:`Observer.conflict` is not told);
* ``"error"``: a transient etcd error (a member not answering, an etcd lease gone).
"""

log = logging.getLogger("lessor")


class Observer:
    """Override the events you want; each default does nothing.

    ``backend`` is the lessor's :attr:`~lessor.contract.Lessor.backend` name ("memory",
    "etcd", ...); ``seconds`` are wall durations measured on :func:`time.monotonic`.
    """

    def acquired(
        self,
        backend: str,
        section_id: str,
        asked: Partition,
        granted: SortedPartitions,
        seconds: float,
    ) -> None:
        """A lease was granted (``granted`` may be empty) after ``seconds`` of acquiring."""

    def acquire_failed(
        self, backend: str, section_id: str, error: BaseException, seconds: float
    ) -> None:
        """An acquisition raised ``error`` after ``seconds``."""

    def released(self, backend: str, section_id: str, held_seconds: float) -> None:
        """A lease was given back after being held ``held_seconds``."""

    def release_failed(self, backend: str, section_id: str, error: BaseException) -> None:
        """Giving a lease back failed; the lease ends by itself at its expiry."""

    def freed(self, backend: str, section_id: str, seconds: float, rode: bool) -> None:
        """A release of a compare-and-swap backend made its ranges free for every process:
        ``seconds`` from the release's start until the backend confirmed it. ``rode``: the
        process's next compare-and-swap of the section did it, not a write of its own."""

    def conflict(self, backend: str, section_id: str) -> None:
        """A compare-and-swap lost to another writer and is retried."""

    def attempt(
        self,
        backend: str,
        section_id: str,
        *,
        members: int,
        outcome: Outcome,
        seconds: float,
        pause: float,
    ) -> None:
        """The process's leader of ``section_id`` made one attempt (a compare-and-swap, with
        whatever read it needed) for ``members`` of the process's acquisitions at once (group
        commit). It took ``seconds`` and ended as ``outcome`` says; the leader then pauses
        ``pause`` seconds before its next attempt (0 when it makes none: its own acquisition
        is settled, or its time is up)."""

    def queued(self, backend: str, section_id: str, seconds: float, leads: bool) -> None:
        """An acquisition waited ``seconds`` at its section's gate, behind the process's other
        acquisitions of the section, until it was to lead (``leads``: from there it makes the
        attempts itself) or was settled without leading (by an attempt another led, or by its
        time running out). One that found nobody acquiring leads at once, told with 0 seconds."""


_lock = threading.Lock()
_observers: tuple[Observer, ...] = ()


def add_observer(observer: Observer) -> None:
    """Tell ``observer`` of every lease event in this process from now on (once, however often
    it is added)."""
    global _observers  # noqa: PLW0603  (a tuple swapped whole: readers never take the lock)
    if not isinstance(observer, Observer):
        raise TypeError(f"observer must be a lessor.observe.Observer, got {observer!r}")
    with _lock:
        if observer not in _observers:
            _observers = (*_observers, observer)


def remove_observer(observer: Observer) -> None:
    """Stop telling ``observer``; removing one that is not installed does nothing."""
    global _observers  # noqa: PLW0603
    with _lock:
        _observers = tuple(o for o in _observers if o is not observer)


def observers() -> tuple[Observer, ...]:
    """The installed observers, in the order they were added."""
    return _observers


# -- reporting events: one typed function per Observer method -------------------------------
#
# Each loops over the installed observers (an empty tuple when there are none: that loop is the
# whole cost) and calls the method of its own name, with its own signature.


def acquired(
    backend: str,
    section_id: str,
    asked: Partition,
    granted: SortedPartitions,
    seconds: float,
) -> None:
    """Tell every observer :meth:`Observer.acquired`."""
    for observer in _observers:
        try:
            observer.acquired(backend, section_id, asked, granted, seconds)
        except Exception:
            _failed(observer, "acquired")


def acquire_failed(backend: str, section_id: str, error: BaseException, seconds: float) -> None:
    """Tell every observer :meth:`Observer.acquire_failed`."""
    for observer in _observers:
        try:
            observer.acquire_failed(backend, section_id, error, seconds)
        except Exception:
            _failed(observer, "acquire_failed")


def released(backend: str, section_id: str, held_seconds: float) -> None:
    """Tell every observer :meth:`Observer.released`."""
    for observer in _observers:
        try:
            observer.released(backend, section_id, held_seconds)
        except Exception:
            _failed(observer, "released")


def release_failed(backend: str, section_id: str, error: BaseException) -> None:
    """Tell every observer :meth:`Observer.release_failed`."""
    for observer in _observers:
        try:
            observer.release_failed(backend, section_id, error)
        except Exception:
            _failed(observer, "release_failed")


def freed(backend: str, section_id: str, seconds: float, rode: bool) -> None:
    """Tell every observer :meth:`Observer.freed`."""
    for observer in _observers:
        try:
            observer.freed(backend, section_id, seconds, rode)
        except Exception:
            _failed(observer, "freed")


def conflict(backend: str, section_id: str) -> None:
    """Tell every observer :meth:`Observer.conflict`."""
    for observer in _observers:
        try:
            observer.conflict(backend, section_id)
        except Exception:
            _failed(observer, "conflict")


def attempt(
    backend: str,
    section_id: str,
    *,
    members: int,
    outcome: Outcome,
    seconds: float,
    pause: float,
) -> None:
    """Tell every observer :meth:`Observer.attempt`."""
    for observer in _observers:
        try:
            observer.attempt(
                backend, section_id, members=members, outcome=outcome, seconds=seconds, pause=pause
            )
        except Exception:
            _failed(observer, "attempt")


def queued(backend: str, section_id: str, seconds: float, leads: bool) -> None:
    """Tell every observer :meth:`Observer.queued`."""
    for observer in _observers:
        try:
            observer.queued(backend, section_id, seconds, leads)
        except Exception:
            _failed(observer, "queued")


def _failed(observer: Observer, event: str) -> None:
    """An observer raised: log it (with its traceback, from the ``except`` calling this) and go
    on, so that watching a lease can never break it."""
    log.exception("lessor observer %r failed on %s", observer, event)
