"""``within(awaitable, seconds)``: a timeout that tells its own cancel from any other.

:func:`asyncio.timeout` cancels its task when it expires and decides at exit, by counting the
task's cancel requests (``Task.cancelling()``), whether the cancel was its own. The count has
changed meaning across patch releases of Python 3.11, and both are wrong for a task that has
met a cancel before:

* up to 3.11.2 (Debian 12's Python) it raises :class:`TimeoutError` only when no other cancel
  was ever requested of the task: in a task that caught a cancel and is cleaning up, an
  expired timeout comes out as a bare :class:`asyncio.CancelledError`, and the clean-up stops
  as if cancelled again;
* from 3.11.3 it counts from the moment it is entered, so a cancel requested before that and
  not yet delivered is taken for its own when it expires: the cancel comes out as
  :class:`TimeoutError`, and the caller retries (a watch reopens, a login is tried again, an
  acquisition waits for its turn once more) as if nobody had asked it to stop.

``within`` first lets a pending cancel through, then counts its own cancel exactly: it raises
:class:`TimeoutError` when it expired and no other cancel came meanwhile.
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
    :class:`asyncio.CancelledError`, even when the time is up at the same moment."""
    task = asyncio.current_task()
    assert task is not None, "within() runs in a task"
    if task.cancelling():
        # Some cancel was requested: delivered already (the task is cleaning up after it),
        # or still pending, and then it is raised here, before it could be counted as ours.
        try:
            await asyncio.sleep(0)
        except BaseException:
            if isinstance(awaitable, Coroutine):
                awaitable.close()  # never to be awaited
            raise
    cancels = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        result = await awaitable
    except asyncio.CancelledError:
        # Ours alone when, once ours is taken back, no other cancel is left requested.
        if expired and task.uncancel() <= cancels:
            raise TimeoutError from None
        raise
    except BaseException:
        if expired:
            task.uncancel()  # the awaitable ended otherwise: ours is taken back all the same
        raise
    finally:
        timer.cancel()
    if expired:
        task.uncancel()
    return result
