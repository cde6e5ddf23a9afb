"""lessor.aio.wait: the asyncio counterpart of Context.wait."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lessor import Context
from lessor.aio import wait
from lessor.aio.wait import call_on_cancel


async def test_returns_true_when_another_thread_cancels() -> None:
    ctx = Context.background()
    waiting = asyncio.create_task(wait(ctx))
    await asyncio.sleep(0)  # let it subscribe
    assert not waiting.done()
    canceller = threading.Thread(target=ctx.cancel)
    canceller.start()
    assert await asyncio.wait_for(waiting, 30) is True
    canceller.join()
    assert ctx._callbacks is None


async def test_returns_true_at_the_deadline_and_false_at_the_timeout() -> None:
    ctx = Context.background().with_timeout(0.05)
    assert await wait(ctx) is True
    assert ctx.deadline is not None and time.monotonic() >= ctx.deadline
    other = Context.background()
    started = time.monotonic()
    assert await wait(other, 0.05) is False
    assert time.monotonic() - started >= 0.05
    assert other._callbacks == {}  # unsubscribed


async def test_a_done_context_returns_at_once() -> None:
    cancelled = Context.background()
    cancelled.cancel()
    assert await wait(cancelled) is True
    assert await wait(Context.background().with_deadline(time.monotonic() - 1)) is True
    assert await wait(Context.background(), 0) is False


async def test_it_does_not_block_the_loop() -> None:
    ctx = Context.background()
    waiting = asyncio.create_task(wait(ctx))
    ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(ran.set)
    await ran.wait()  # the loop went on while wait() waited
    assert not waiting.done()
    ctx.cancel()  # from the loop's own thread too
    assert await waiting is True


async def test_cancelling_the_waiting_task_propagates_and_unsubscribes() -> None:
    ctx = Context.background()
    waiting = asyncio.create_task(wait(ctx))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ctx._callbacks == {}
    assert not ctx.done()


async def test_it_checks_its_timeout() -> None:
    with pytest.raises(TypeError, match="timeout must be float seconds"):
        await wait(Context.background(), "1")  # type: ignore[arg-type]


def test_a_cancel_after_the_loop_closed_is_harmless() -> None:
    ctx = Context.background()
    called: list[str] = []

    async def subscribe() -> None:
        call_on_cancel(ctx, lambda: called.append("called"))

    asyncio.run(subscribe())
    ctx.cancel()  # the loop is closed: nothing to schedule on, nothing raised
    assert called == []
