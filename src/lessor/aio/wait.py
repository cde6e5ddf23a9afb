"""Waiting on a :class:`~lessor.context.Context` from asyncio code, without blocking the loop.

:func:`wait` is the asyncio counterpart of :meth:`Context.wait <lessor.context.Context.wait>`;
:func:`call_on_cancel` is how a coroutine is told that a context was cancelled, from whatever
thread cancelled it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Callable
from datetime import timedelta

from lessor.context import Context, seconds

__all__ = ["call_on_cancel", "wait"]


def call_on_cancel(ctx: Context, fn: Callable[[], None]) -> Callable[[], None]:
    """Call ``fn()`` on the running event loop soon after ``ctx`` is cancelled (by any thread:
    :meth:`~lessor.context.Context.on_done`); return the function that unsubscribes.

    A ``ctx`` already cancelled schedules the call at once. Reaching the deadline calls nothing.
    A cancel that comes after the loop closed calls nothing either.
    """
    loop = asyncio.get_running_loop()

    def schedule() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is left to tell
            loop.call_soon_threadsafe(fn)

    return ctx.on_done(schedule)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait(ctx: Context, timeout: float | timedelta | None = None) -> bool:
    """Wait until ``ctx`` is done (cancelled, from any thread, or past its deadline) or
    ``timeout`` seconds pass; return whether ``ctx`` is done.

    Never blocks the loop. A cancel of the awaiting task propagates as
    :class:`asyncio.CancelledError`.
    """
    limit = ctx.remaining()
    if timeout is not None:
        limit = min(limit, max(0.0, seconds(timeout, "timeout")))
    if limit <= 0:
        return ctx.done()
    loop = asyncio.get_running_loop()
    cancelled: asyncio.Future[None] = loop.create_future()
    unsubscribe = call_on_cancel(ctx, functools.partial(_resolve, cancelled))
    try:
        end = time.monotonic() + limit
        # The loop's clock may fire a timer a little before time.monotonic() reaches it.
        while not ctx.done() and (left := end - time.monotonic()) > 0:
            await asyncio.wait((cancelled,), timeout=None if left == math.inf else left)
    finally:
        unsubscribe()
    return ctx.done()
