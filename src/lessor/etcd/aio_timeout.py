"""``within(awaitable, seconds)``: :func:`asyncio.timeout` that never swallows a cancel.

``asyncio.timeout`` tells its own cancel from an outside one by counting the task's cancel
requests (``Task.cancelling()``) from the moment it is entered. A cancel requested before
that and not yet delivered (the task cancelled while it ran, or while it was ready to run)
is counted as if it had been dealt with: if the timeout then expires, the cancel reaches the
awaitable, is taken for the timeout's, and comes out as :class:`TimeoutError`. The caller,
seeing a timeout, retries (a watch reopens, a login is tried again, an acquisition waits for
its turn once more) as if nobody had asked it to stop. ``within`` first lets such a pending
cancel through; a cancel that comes while it waits wins over the timeout, as with
``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import TypeVar

__all__ = ["within"]

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """``await awaitable``, or :class:`TimeoutError` once ``seconds`` have passed. A cancel
    of the current task that is pending, or comes while it waits, raises
    :class:`asyncio.CancelledError`."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        # Some cancel was requested: delivered already (the task is cleaning up after it),
        # or still pending, and then it is raised here, before the timeout can count it.
        try:
            await asyncio.sleep(0)
        except BaseException:
            if isinstance(awaitable, Coroutine):
                awaitable.close()  # never to be awaited
            raise
    async with asyncio.timeout(seconds):
        return await awaitable
