"""``within``: a timeout that never swallows a cancel of its task (asyncio.timeout does, for a
cancel requested before it was entered and not delivered yet)."""

from __future__ import annotations

import asyncio

import pytest

from lessor.etcd.aio_timeout import within


def test_a_cancel_pending_as_it_begins_propagates() -> None:
    async def cancelled_as_it_expires(wait: object) -> None:
        asyncio.current_task().cancel()  # type: ignore[union-attr]  (requested, not yet delivered)
        await wait  # type: ignore[misc]

    async def main() -> tuple[type[BaseException], type[BaseException]]:
        outcomes = []
        for waits in (_plain, within):
            try:
                await cancelled_as_it_expires(waits(asyncio.sleep(1), 0))
            except BaseException as e:
                outcomes.append(type(e))
        return outcomes[0], outcomes[1]

    plain, ours = asyncio.run(_in_task(main()))
    assert plain is TimeoutError  # the quirk this helper exists for
    assert ours is asyncio.CancelledError


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

    asyncio.run(main())


def test_a_cancel_alone_propagates() -> None:
    async def main() -> None:
        task = asyncio.create_task(within(asyncio.sleep(10), 5))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


async def _plain(awaitable: object, seconds: float) -> object:
    async with asyncio.timeout(seconds):
        return await awaitable  # type: ignore[misc]


async def _in_task(coro: object) -> object:
    return await asyncio.create_task(coro)  # type: ignore[arg-type]
