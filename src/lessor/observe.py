"""Hooks for watching leases: what :mod:`lessor.metrics` (Prometheus) is built on.

An :class:`Observer` is told of every acquisition, failure, release and — for backends that
compare-and-swap — every lost swap. Observers are process-wide (:func:`add_observer`); with
none installed a lease pays one empty-tuple check per event.

Observers run on the caller's thread, inside the lease's critical path: they must be quick and
must not raise (an exception from an observer is logged and swallowed, so that watching a lease
can never break it).
"""

from __future__ import annotations

import logging
import threading

from lessor.partition import Partition, SortedPartitions

__all__ = ["Observer", "add_observer", "observers", "remove_observer"]

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

    def conflict(self, backend: str, section_id: str) -> None:
        """A compare-and-swap lost to another writer and is retried."""


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


def notify(event: str, *args: object) -> None:
    """Call ``event`` on every observer; an observer's exception is logged, never raised."""
    for observer in _observers:
        try:
            getattr(observer, event)(*args)
        except Exception:
            log.exception("lessor observer %r failed on %s", observer, event)
