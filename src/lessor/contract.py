"""The Lessor contract: what every backend guarantees, stated once.

``Lessor.with_lease(ctx, section_id, part, dur, cb)`` acquires a lease and calls
``cb(lease_ctx, parts)`` exactly once:

* ``parts`` are exactly the sub-ranges of ``part`` that no other live lease of the same
  section holds at the moment of acquisition. They may be empty (other leases cover all of
  ``part``); ``cb`` is still called.
* ``lease_ctx`` is a child of ``ctx``. Its deadline falls no later than the lease's expiry and
  no later than ``ctx``'s deadline, so the granted duration may be shorter than ``dur``.
  Within one section, two holders never hold a common key while both are before their
  deadlines.
* Sections are independent: the same range in two sections can be leased twice at once.
* The lease is given back, and ``lease_ctx`` cancelled, when ``cb`` returns or raises; an
  exception from ``cb`` propagates unchanged. A failed give-back is logged (one warning
  line, which says when the lease ends), never raised: the lease then ends by itself at its
  expiry.
* Every lease carries a fencing token (:attr:`Lease.token`, and
  :func:`fencing_token` of ``lease_ctx``): within one section, two leases that hold a
  common key (one after the other) carry strictly increasing tokens in the order they were
  granted, so a store that keeps, per key, the highest token it has seen can reject writes
  from a holder whose lease has ended. Leases granted together may share a token; they never
  share a key.

``Lessor.lease(section_id, part, dur, ctx=None)`` is the same as a context manager yielding a
:class:`Lease` (:mod:`lessor.lease`).

``Lessor.wait_free(ctx, section_id, part) -> bool`` waits for ranges to come free, so that a
caller who was denied (some of) ``part`` can try again at once rather than a while later:

* It returns True soon after some key of ``part`` that was held when it was called — by any
  holder, this process included — comes free: its lease was given back, or its deadline (its
  expiry) passed. It returns True at once when nothing of ``part`` is held (an empty ``part``
  included).
* It returns False when ``ctx`` is done, by its deadline or by :meth:`~Context.cancel`,
  whichever comes first; it never raises for that. A ``ctx`` already done returns False at
  once.
* It never holds anything, and True is no promise: another holder may take the keys before
  the caller's next lease. True means "worth trying again".
* Its arguments are checked as :meth:`Lessor.lease` checks its own (the same errors), before
  anything reaches a backend. A backend's own failures (such as
  :class:`~lessor.errors.Unavailable`) propagate as from :meth:`Lessor.lease`.

``Lessor.is_held(ctx, section_id, part) -> bool`` answers the question ``wait_free`` waits
on, at once:

* It returns whether some key of ``part`` is held now by a live lease of the section (anyone's,
  this process's included): one that was not given back and whose deadline (its expiry) has
  not passed. False for an empty ``part``. It never holds anything, and the answer is no
  promise: it is what was held when the backend looked.
* It agrees with ``wait_free``: a holder whose end made ``wait_free`` return True is not
  counted by an ``is_held`` called after that return, and when ``is_held`` says False a
  ``wait_free`` called next returns True at once (unless a new lease came in between).
* ``ctx`` bounds how long it may take to look. When ``ctx`` is done, before or while it looks,
  it raises ``ctx``'s error (:class:`~lessor.errors.DeadlineExceeded` or
  :class:`~lessor.errors.Cancelled`), as :meth:`Lessor.lease` does: never False, which would
  read as "free".
* Its arguments are checked as :meth:`Lessor.wait_free` checks its own. A backend's own
  failures (such as :class:`~lessor.errors.Unavailable`) propagate as from
  :meth:`Lessor.lease`; a backend that cannot tell what is held raises
  :class:`NotImplementedError`.

A backend may bound how long one lease can last (:attr:`Lessor.max_duration`; etcd's lease
TTL has a maximum). The bound applies to the *effective* duration, ``dur`` capped by ``ctx``'s
deadline: a longer one is refused with a :class:`ValueError` naming the maximum before
anything reaches the backend.

Arguments are checked before anything reaches a backend: ``section_id`` a non-empty ``str``,
``part`` a :class:`~lessor.partition.Partition`, ``dur`` positive and finite float seconds or a
``timedelta``, ``ctx`` a :class:`~lessor.context.Context` that is not already done (else
:class:`~lessor.errors.DeadlineExceeded` or :class:`~lessor.errors.Cancelled`, and ``cb`` is
not called; ``wait_free`` returns False instead, ``is_held`` raises too). ``lease``,
``wait_free`` and ``is_held`` check ``section_id`` and ``part`` alike (:mod:`lessor.checks`).

A backend subclasses :class:`Lessor` and implements two methods, :meth:`Lessor._acquire` and
:meth:`Lessor._release`; the checks and the callback plumbing live here, once. A backend that
can observe its holders also overrides :meth:`Lessor._wait_free` and :meth:`Lessor._is_held`.
The defaults cannot: ``_wait_free`` polls with back-off (see there), so it may return True
before anything came free, and ``_is_held`` raises :class:`NotImplementedError`. (The
sweeper's probes, :mod:`lessor.sweep_waits`, need both; a backend without them still gets
every other part of the sweeper.)
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, TypeVar

from lessor import checks, probes
from lessor.context import Context
from lessor.errors import ContextError
from lessor.lease import Lease, LeaseScope, fencing_token, lease_request
from lessor.partition import Partition, SortedPartitions
from lessor.wait_backoff import WAIT_FREE_FIRST, WAIT_FREE_MAX, backoffs

__all__ = [
    "WAIT_FREE_FIRST",
    "WAIT_FREE_MAX",
    "Grant",
    "Lease",
    "LeaseScope",
    "Lessor",
    "WithLeaseCB",
    "fencing_token",
]

log = logging.getLogger("lessor")

T = TypeVar("T")

WithLeaseCB = Callable[[Context, SortedPartitions], T]
"""``cb(lease_ctx, parts)``: runs while the lease is held; its result is ``with_lease``'s."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a backend's :meth:`Lessor._acquire` hands back.

    ``deadline`` is a :func:`time.monotonic` value no later than the lease's expiry as the
    backend knows it (the base class further caps it by the caller's deadline). ``handle`` is
    the backend's own, passed back to :meth:`Lessor._release`.
    """

    partitions: SortedPartitions
    deadline: float
    token: int
    handle: object = None


class Lessor(abc.ABC):
    """Leases ranges of a key space; see the module documentation for the contract."""

    backend: ClassVar[str] = "custom"
    """The backend's name in logs and metrics (:mod:`lessor.observe`)."""

    @property
    def max_duration(self) -> float:
        """The longest lease, in seconds, this lessor can grant (``math.inf``: no bound)."""
        return math.inf

    def with_lease(
        self,
        ctx: Context,
        section_id: str,
        part: Partition,
        dur: float | timedelta,
        cb: WithLeaseCB[T],
    ) -> T:
        """Acquire a lease on (parts of) ``part`` and run ``cb(lease_ctx, parts)`` under it.

        Returns what ``cb`` returns.
        """
        checks.function(cb, "cb")
        checks.context(ctx)
        with self.lease(section_id, part, dur, ctx=ctx) as lease:
            return cb(lease.ctx, lease.partitions)

    def lease(
        self,
        section_id: str,
        part: Partition,
        dur: float | timedelta,
        ctx: Context | None = None,
    ) -> LeaseScope:
        """``with lessor.lease(...) as lease:`` — the context-manager form of :meth:`with_lease`."""
        return LeaseScope(self, lease_request(section_id, part, dur, ctx))

    def wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """Wait until some key of ``part`` held now comes free; False once ``ctx`` is done.

        True soon after a key of ``part`` that was held when called (by anyone, this process
        included) was given back or reached its lease's deadline, and at once when nothing of
        ``part`` is held. False when ``ctx`` is done (deadline or cancel), never an exception
        for that. Holds nothing. See the module documentation for the contract.
        """
        at_once = probes.wait_free_at_once(ctx, section_id, part)
        if at_once is not None:
            return at_once
        try:
            return probes.freed(ctx, self._wait_free(ctx, section_id, part))
        except ContextError as e:
            return probes.unless_ended(ctx, e)

    def is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """Whether some key of ``part`` is held now by a live lease (anyone's, this process's
        included); False for an empty ``part``.

        Holds nothing. Raises ``ctx``'s error (:class:`~lessor.errors.DeadlineExceeded` or
        :class:`~lessor.errors.Cancelled`) when ``ctx`` is done, before or while it looks:
        never False for that. :class:`NotImplementedError` from a backend that cannot tell
        what is held. See the module documentation for the contract.
        """
        at_once = probes.is_held_at_once(ctx, section_id, part)
        if at_once is not None:
            return at_once
        return self._is_held(ctx, section_id, part)

    # -- what a backend implements -----------------------------------------------------------

    @abc.abstractmethod
    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        """Record a lease on the free sub-ranges of ``part`` for at most ``dur`` seconds.

        Called with checked arguments and a ``ctx`` that was not done. Must return by ``ctx``'s
        deadline or raise a :class:`~lessor.errors.LessorError`; must leave nothing held
        when it raises.
        """

    @abc.abstractmethod
    def _release(self, grant: Grant) -> None:
        """Give back what ``_acquire`` granted. Errors are logged by the caller, not raised."""

    def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """Block until some key of ``part`` held now comes free (True) or ``ctx`` is done (False).

        Called by :meth:`wait_free` with checked arguments, a non-empty ``part`` and a ``ctx``
        that was not done. A backend that can observe its holders overrides this, so that True
        follows the first give-back or expiry of a key of ``part`` held at the call, and comes
        at once when nothing of ``part`` is held.

        This default is for third-party backends, which it cannot observe: it waits a back-off
        interval and returns True, or False when ``ctx`` ends first. It may return True before
        anything came free: True means "worth trying again". It waits on ``ctx``, never in a
        busy loop; the interval (from :data:`WAIT_FREE_FIRST` doubling up to
        :data:`WAIT_FREE_MAX` per section) is :mod:`lessor.wait_backoff`'s.
        """
        interval = backoffs(self).next_interval(section_id)
        return not ctx.wait(interval)

    def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """Whether some key of ``part`` is held now by a live lease of the section.

        Called by :meth:`is_held` with checked arguments, a non-empty ``part`` and a ``ctx``
        that was not done. Must return by ``ctx``'s deadline, and raise ``ctx``'s error
        (never return False) when ``ctx`` ends before it can tell. A backend that can observe
        its holders overrides this; this default, for third-party backends, cannot tell and
        raises :class:`NotImplementedError`.
        """
        raise probes.cannot_tell(type(self).__name__, self.backend, "Lessor._is_held")
