"""``within``: a timeout that tells its own cancel from any other, on every Python 3.11 patch
release (``asyncio.timeout`` swallows a pending cancel from 3.11.3 on, and turns a timeout
into a bare cancel up to 3.11.2, in a task that met a cancel before)."""

from __future__ import annotations

import asyncio

import pytest

from lessor.etcd.aio_timeout import within


def test_a_cancel_pending_as_it_begins_propagates() -> None:
    async def main() -> None:
        asyncio.current_task().cancel()  # type: ignore[union-attr]  (requested, not delivered)
        await within(asyncio.sleep(1), 0)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_in_task(main()))


def test_a_cancel_at_the_moment_the_time_is_up_propagates() -> None:
    async def main(cancel_first: bool) -> None:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        when = loop.time() + 0.05
        if cancel_first:
            loop.call_at(when, task.cancel)
        waiting = within(asyncio.sleep(1), 0.05)
        if not cancel_first:
            loop.call_at(when, task.cancel)
        await waiting

    for cancel_first in (True, False):
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(_in_task(main(cancel_first)))


def test_a_timeout_alone_raises_timeout_error_and_an_answer_is_returned() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            await within(asyncio.sleep(1), 0.001)
        assert await within(asyncio.sleep(0, "x"), 1) == "x"
        try:  # a task that caught an earlier cancel (cancelling() stays 1) still times out
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            pass
        with pytest.raises(TimeoutError):
            await within(asyncio.sleep(1), 0.001)
        assert asyncio.current_task().cancelling() == 1  # type: ignore[union-attr]  (ours gone)

    asyncio.run(main())


def test_a_cancel_alone_propagates() -> None:
    async def main() -> None:
        task = asyncio.create_task(within(asyncio.sleep(10), 5))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


async def _in_task(coro: object) -> object:
    return await asyncio.create_task(coro)  # type: ignore[arg-type]
