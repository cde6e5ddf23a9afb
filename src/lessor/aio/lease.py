"""The :class:`AsyncLeaseScope` that ``async with lessors.lease(...)`` enters: it acquires on
entry, cancels the body at the lease's deadline or when its context is cancelled, and gives
the grant back on exit. The contract it keeps is stated once, in :mod:`lessor.aio.contract`;
the steps it shares with the sync :class:`~lessor.lease.LeaseScope` are :mod:`lessor.lease`'s.

How the body is cancelled follows :func:`asyncio.timeout_at`: the scope cancels its task
(a timer on the loop at the deadline, or the context's cancel, from any thread), and on exit
takes its own cancel back with :meth:`asyncio.Task.uncancel`. Only when no other cancel of the
task is pending does it turn the :class:`asyncio.CancelledError` into the lease's error; a
cancel from outside propagates as it came.
"""

from __future__ import annotations

import asyncio
import enum
import time
from types import TracebackType
from typing import TYPE_CHECKING

from lessor.aio.give_backs import give_backs
from lessor.aio.wait import call_on_cancel
from lessor.contract import Grant
from lessor.errors import Cancelled, ContextError, DeadlineExceeded
from lessor.lease import (
    Lease,
    LeaseRequest,
    acquisition_failed,
    check_grantable,
    given_back,
    granted,
)

if TYPE_CHECKING:
    from lessor.aio.contract import AsyncLessor

__all__ = ["AsyncLeaseScope"]


class _State(enum.Enum):
    NEW = "new"
    ENTERING = "entering"
    INSIDE = "inside"  # the body runs: the deadline and the context's cancel may interrupt it
    EXITED = "exited"


class AsyncLeaseScope:
    """The async context manager :meth:`AsyncLessor.lease` returns."""

    __slots__ = (
        "_cancelling",
        "_grant",
        "_granted_at",
        "_interrupted",
        "_lease",
        "_lessor",
        "_request",
        "_state",
        "_task",
        "_timer",
        "_unsubscribe",
    )

    def __init__(self, lessor: AsyncLessor, request: LeaseRequest) -> None:
        self._lessor = lessor
        self._request = request
        self._state = _State.NEW
        self._interrupted: ContextError | None = None

    async def __aenter__(self) -> Lease:
        if self._state is not _State.NEW:
            raise RuntimeError("an AsyncLeaseScope can be entered only once")
        self._state = _State.ENTERING
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a lessor.aio lease must be entered from an asyncio task")
        backend = self._lessor.backend
        check_grantable(backend, self._lessor.max_duration, self._request)
        start = time.monotonic()
        grant = await self._acquire(start)
        # No await from here to the body: no cancel can come between the grant and the
        # scope that gives it back.
        granted_at = time.monotonic()
        try:
            lease = granted(backend, self._request, grant, start=start, granted_at=granted_at)
        except BaseException:
            # Its time used up before the body could start: nobody else would give it back.
            await self._give_back(grant, granted_at)
            raise
        self._grant, self._granted_at, self._lease = grant, granted_at, lease
        self._arm(task, lease)
        return lease

    async def _acquire(self, start: float) -> Grant:
        """The backend's acquisition, as a task of its own that a grant cannot be lost from:
        when the caller is cancelled, so is the acquisition, and whatever it still grants is
        given back at once."""
        r = self._request
        acquiring = asyncio.create_task(self._lessor._acquire(r.ctx, r.section_id, r.part, r.dur))
        try:
            return await asyncio.shield(acquiring)
        except BaseException as e:
            acquisition_failed(self._lessor.backend, r, e, start)
            if not acquiring.done() or (
                not acquiring.cancelled() and acquiring.exception() is None
            ):
                # The caller went away: the acquisition is under way, or granted in vain.
                acquiring.cancel()
                give_backs(self._lessor).start(self._give_back_late(acquiring))
            raise

    def _arm(self, task: asyncio.Task[object], lease: Lease) -> None:
        """Cancel the body at the lease's deadline and when its context is cancelled."""
        loop = asyncio.get_running_loop()
        self._task = task
        self._cancelling = task.cancelling()
        self._state = _State.INSIDE
        # The deadline is on time.monotonic(); the loop's timers are on loop.time().
        when = loop.time() + (lease.deadline - time.monotonic())
        self._timer = loop.call_at(when, self._interrupt, DeadlineExceeded)
        self._unsubscribe = call_on_cancel(lease.ctx, self._cancelled)

    def _cancelled(self) -> None:
        err = self._lease.ctx.err
        self._interrupt(DeadlineExceeded if isinstance(err, DeadlineExceeded) else Cancelled)

    def _interrupt(self, kind: type[ContextError]) -> None:
        if self._state is not _State.INSIDE or self._interrupted is not None:
            return  # the body has ended, or was interrupted already
        why = "reached its deadline" if kind is DeadlineExceeded else "had its context cancelled"
        section, token = self._request.section_id, self._lease.token
        self._interrupted = kind(
            f"the lease on section {section!r} (token {token}) {why}: its body was cancelled"
        )
        self._task.cancel(str(self._interrupted))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is not _State.INSIDE:
            raise RuntimeError("an AsyncLeaseScope must be entered before it is exited")
        self._state = _State.EXITED
        self._timer.cancel()
        self._unsubscribe()
        try:
            error = self._take_back(exc)
            if error is not None:
                raise error from exc
        finally:
            self._lease.ctx.cancel()
            await self._give_back(self._grant, self._granted_at)

    def _take_back(self, exc: BaseException | None) -> ContextError | None:
        """Take back our cancel of the task, if we made one; return the lease's error when the
        body ended by it: ``exc`` is a CancelledError and no cancel from outside is pending
        (:func:`asyncio.timeout`'s rule). None leaves ``exc`` to propagate as it came."""
        interrupted = self._interrupted
        if interrupted is None or self._task.uncancel() > self._cancelling:
            return None
        return interrupted if isinstance(exc, asyncio.CancelledError) else None

    async def _give_back(self, grant: Grant, granted_at: float) -> None:
        """Give ``grant`` back in a task of its own, out of reach of a cancel of this one."""
        await asyncio.shield(give_backs(self._lessor).start(self._release(grant, granted_at)))

    async def _release(self, grant: Grant, granted_at: float) -> None:
        error: Exception | None = None
        try:
            await self._lessor._release(grant)
        except Exception as e:
            error = e
        given_back(self._lessor.backend, self._request.section_id, grant, granted_at, error)

    async def _give_back_late(self, acquiring: asyncio.Task[Grant]) -> None:
        """Give back what an acquisition whose caller went away still grants."""
        try:
            grant = await acquiring
        except (Exception, asyncio.CancelledError):
            return  # it ended without a grant (its error had no caller left to reach)
        await self._release(grant, time.monotonic())
