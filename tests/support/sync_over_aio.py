"""A sync :class:`~lessor.Lessor` that drives a :class:`~lessor.aio.AsyncLessor`, so that the
contract suite (tests/test_contract.py) runs its cases, unchanged, against aio backends.

The async lessor lives on an event loop in a thread of its own. Each lease is one task on that
loop: it enters ``async with alessor.lease(...)``, hands the :class:`~lessor.Lease` to the
calling thread and awaits that thread's exit. ``wait_free`` and ``is_held`` run on the loop
through :func:`asyncio.run_coroutine_threadsafe`. Arguments are checked by the async lessor's
own front, so a bad one fails as the suite expects from it.

The sync contract advises a deadline; the async one enforces it: when the body of the lease's
task is interrupted (deadline, or the context's cancel) while the calling thread still holds,
the thread's ``with`` ends as a sync one would, without that error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from lessor import Context, ContextError, Grant, Lease, Lessor, Partition
from lessor.aio import AsyncLeaseScope, AsyncLessor

__all__ = ["LoopThread", "SyncOverAio"]

T = TypeVar("T")


class LoopThread:
    """An event loop running in a thread of its own until :meth:`close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="aio-loop", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _call(make: Callable[[], T]) -> T:
    return make()  # on the loop: a lessor may bind to the loop it is made on


class SyncOverAio(Lessor):
    """The async lessor ``make()`` builds (on the loop), as a sync one; a context manager that
    closes it and its loop."""

    backend = "aio"

    def __init__(self, make: Callable[[], AsyncLessor]) -> None:
        self._loop = LoopThread()
        try:
            self.aio = self._loop.run(_call(make))
        except BaseException:
            self._loop.close()
            raise

    @property
    def max_duration(self) -> float:
        return self.aio.max_duration

    def lease(  # type: ignore[override]  # a context manager of its own
        self,
        section_id: str,
        part: Partition,
        dur: float | timedelta,
        ctx: Context | None = None,
    ) -> _HeldOnLoop:
        return _HeldOnLoop(self._loop, self.aio.lease(section_id, part, dur, ctx))

    def wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        return self._loop.run(self.aio.wait_free(ctx, section_id, part))

    def is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        return self._loop.run(self.aio.is_held(ctx, section_id, part))

    # Leases, wait_free and is_held go to the async lessor whole: these hooks are never called.
    # Defining _wait_free tells the suite's ``observing`` fixture that the aio backends here
    # observe their holders (their own _wait_free is not the polling default).

    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        raise AssertionError("SyncOverAio leases through its async lessor")

    def _release(self, grant: Grant) -> None:
        raise AssertionError("SyncOverAio leases through its async lessor")

    def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        raise AssertionError("SyncOverAio waits through its async lessor")

    def close(self) -> None:
        try:
            self._loop.run(self.aio.aclose())
        finally:
            self._loop.close()

    def __enter__(self) -> SyncOverAio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HeldOnLoop:
    """One lease: a task on the loop holds ``scope`` while the calling thread is inside."""

    def __init__(self, loop: LoopThread, scope: AsyncLeaseScope) -> None:
        self._loop = loop
        self._scope = scope
        self._handed: concurrent.futures.Future[Lease] = concurrent.futures.Future()
        self._exited: asyncio.Future[None] | None = None
        self._task: concurrent.futures.Future[None] | None = None

    def __enter__(self) -> Lease:
        self._task = self._loop.submit(self._hold())
        return self._handed.result()  # the acquisition's error, if it failed

    async def _hold(self) -> None:
        self._exited = asyncio.get_running_loop().create_future()
        try:
            async with self._scope as lease:
                self._handed.set_result(lease)
                await self._exited
        except BaseException as e:
            if not self._handed.done():
                self._handed.set_exception(e)  # the acquisition failed: __enter__ raises it
                return
            raise

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None and self._exited is not None
        self._loop.loop.call_soon_threadsafe(_resolve, self._exited)
        # An interrupted body (deadline, ctx cancel) before the thread left: sync leases only
        # advise, so the thread's `with` ends as a sync one would.
        with contextlib.suppress(ContextError):
            self._task.result()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
