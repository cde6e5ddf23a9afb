"""The asyncio Lessor contract: :mod:`lessor.contract`'s, with deadlines enforced.

:class:`AsyncLessor` keeps every promise of :class:`lessor.contract.Lessor`, stated there:
what ``parts`` are, the lease context's deadline, independent sections, fencing tokens, the
argument checks (the same errors, from the same code, :mod:`lessor.checks`), what
``wait_free`` and ``is_held`` answer, ``max_duration``, and the same events for
:mod:`lessor.observe` and the log. Its methods are coroutines, and ``cb`` of
``with_lease(ctx, section_id, part, dur, cb)`` is ``async def cb(lease_ctx, parts)``.
``async with lessors.lease(section_id, part, dur, ctx=None) as lease:`` yields a
:class:`lessor.Lease`, the same class with the same fields.

What asyncio adds:

* **Deadlines are enforced.** The body of ``async with lessors.lease(...)``, and ``cb`` of
  ``with_lease``, run under a timeout at ``lease.deadline``. At the deadline the body is
  cancelled, and :class:`~lessor.errors.DeadlineExceeded` is raised from the ``async with``
  (chained to the :class:`asyncio.CancelledError` that stopped the body). When the lease's
  context is cancelled (the caller's ``ctx.cancel()``, from any thread), the body is cancelled
  the same way and :class:`~lessor.errors.Cancelled` is raised. The only code that can run
  under a lease after its deadline is code the user shields from cancellation on purpose
  (:func:`asyncio.shield`, or a body that catches :class:`asyncio.CancelledError` and goes
  on); a body that swallows the cancel and returns ends the ``async with`` without an error,
  as with :func:`asyncio.timeout`.
* **Cancelling the task propagates.** A cancel of the task that runs the ``async with`` (or
  awaits ``with_lease``) comes out as :class:`asyncio.CancelledError`, never converted, from
  the body or from the acquisition under way.
* **The grant is always given back**: when the body returns or raises, at the deadline, and
  when the task is cancelled. The give-back runs apart from the task (a second cancel of the
  task cannot cut it off), and :meth:`AsyncLessor.aclose` waits for those under way. An
  acquisition whose caller was cancelled is cancelled too; a grant it returns anyway (the
  cancel came as it completed) is given back at once: nothing stays held. A failed give-back
  is one warning line, never raised, as in the sync contract.
* :meth:`AsyncLessor.aclose` (or ``async with lessors:``) waits for the give-backs under way
  on the running event loop, then closes what the backend holds (:meth:`AsyncLessor._aclose`;
  what a closed lessor does with later calls is the backend's to say).

A backend subclasses :class:`AsyncLessor` and implements the coroutines
:meth:`AsyncLessor._acquire` and :meth:`AsyncLessor._release`, as a sync backend implements
:class:`~lessor.contract.Lessor`'s (same arguments, same :class:`~lessor.contract.Grant`). Its
``_acquire`` runs as a task of its own and is cancelled when its caller is; it must leave
nothing held when it raises (a cancel included). A backend that can observe its holders also
overrides :meth:`AsyncLessor._wait_free` and :meth:`AsyncLessor._is_held`; the defaults are the
sync ones' (a polling back-off; "cannot tell"). One that holds connections overrides
:meth:`AsyncLessor._aclose`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import ClassVar, TypeVar

from lessor import checks, probes
from lessor.aio.give_backs import give_backs
from lessor.aio.lease import AsyncLeaseScope
from lessor.aio.wait import wait
from lessor.context import Context
from lessor.contract import Grant
from lessor.errors import ContextError
from lessor.lease import lease_request
from lessor.partition import Partition, SortedPartitions
from lessor.wait_backoff import backoffs

__all__ = ["AsyncLessor", "AsyncWithLeaseCB"]

T = TypeVar("T")

AsyncWithLeaseCB = Callable[[Context, SortedPartitions], Awaitable[T]]
"""``async def cb(lease_ctx, parts)``: runs while the lease is held, cancelled at its deadline;
its result is ``with_lease``'s."""


class AsyncLessor(abc.ABC):
    """Leases ranges of a key space to asyncio code; see the module documentation for the
    contract."""

    backend: ClassVar[str] = "custom"
    """The backend's name in logs and metrics (:mod:`lessor.observe`)."""

    @property
    def max_duration(self) -> float:
        """The longest lease, in seconds, this lessor can grant (``math.inf``: no bound)."""
        return math.inf

    async def with_lease(
        self,
        ctx: Context,
        section_id: str,
        part: Partition,
        dur: float | timedelta,
        cb: AsyncWithLeaseCB[T],
    ) -> T:
        """Acquire a lease on (parts of) ``part`` and await ``cb(lease_ctx, parts)`` under it,
        cancelled at the lease's deadline.

        Returns what ``cb`` returns.
        """
        checks.function(cb, "cb")
        checks.context(ctx)
        async with self.lease(section_id, part, dur, ctx=ctx) as lease:
            return await cb(lease.ctx, lease.partitions)

    def lease(
        self,
        section_id: str,
        part: Partition,
        dur: float | timedelta,
        ctx: Context | None = None,
    ) -> AsyncLeaseScope:
        """``async with lessors.lease(...) as lease:`` — the context-manager form of
        :meth:`with_lease`; its body is cancelled at ``lease.deadline``."""
        return AsyncLeaseScope(self, lease_request(section_id, part, dur, ctx))

    async def wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """Wait until some key of ``part`` held now comes free; False once ``ctx`` is done.

        As :meth:`lessor.contract.Lessor.wait_free`, without blocking the event loop.
        """
        at_once = probes.wait_free_at_once(ctx, section_id, part)
        if at_once is not None:
            return at_once
        try:
            return probes.freed(ctx, await self._wait_free(ctx, section_id, part))
        except ContextError as e:
            return probes.unless_ended(ctx, e)

    async def is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """Whether some key of ``part`` is held now by a live lease (anyone's, this process's
        included); False for an empty ``part``.

        As :meth:`lessor.contract.Lessor.is_held`.
        """
        at_once = probes.is_held_at_once(ctx, section_id, part)
        if at_once is not None:
            return at_once
        return await self._is_held(ctx, section_id, part)

    async def aclose(self) -> None:
        """Wait for the give-backs under way on the running event loop, then close what the
        backend holds (:meth:`_aclose`)."""
        await give_backs(self).wait()
        await self._aclose()

    async def __aenter__(self) -> AsyncLessor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- what a backend implements -----------------------------------------------------------

    @abc.abstractmethod
    async def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        """Record a lease on the free sub-ranges of ``part`` for at most ``dur`` seconds.

        As :meth:`lessor.contract.Lessor._acquire`. It runs as a task of its own, cancelled
        when its caller is; it must leave nothing held when it raises, a cancel included.
        """

    @abc.abstractmethod
    async def _release(self, grant: Grant) -> None:
        """Give back what ``_acquire`` granted. Errors are logged by the caller, not raised.

        It runs as a task of its own, which no cancel of the lease's task reaches.
        """

    async def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """Wait until some key of ``part`` held now comes free (True) or ``ctx`` is done (False).

        As :meth:`lessor.contract.Lessor._wait_free`, and this default, for third-party
        backends, is the same polling back-off, awaited.
        """
        return not await wait(ctx, backoffs(self).next_interval(section_id))

    async def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """Whether some key of ``part`` is held now by a live lease of the section.

        As :meth:`lessor.contract.Lessor._is_held`; this default cannot tell and raises
        :class:`NotImplementedError`.
        """
        raise probes.cannot_tell(type(self).__name__, self.backend, "AsyncLessor._is_held")

    async def _aclose(self) -> None:  # noqa: B027  (optional: most backends hold nothing)
        """Close what the backend holds (connections); called by :meth:`aclose` once the
        give-backs under way have ended. This default has nothing to close."""
