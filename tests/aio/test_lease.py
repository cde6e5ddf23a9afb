"""What asyncio adds to the contract (lessor/aio/contract.py): deadlines enforced by
cancelling the body, a cancel of the task propagating, and every grant given back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from datetime import timedelta

import pytest

from lessor import (
    Cancelled,
    Context,
    DeadlineExceeded,
    Grant,
    Lease,
    MemoryLessor,
    Partition,
    SortedPartitions,
    Unavailable,
    fencing_token,
    observe,
)
from lessor.aio import AsyncLessor, AsyncMemoryLessor
from tests.test_observe import Recorder

from .gated import Gated

P = Partition

LATE = 0.05
"""How long after its deadline a body that overruns it may still run (the issue's bound)."""

BOUND = 30.0
"""How long a test waits for a task that must end: a regression fails, it does not hang."""


async def forever() -> None:
    """A body that never ends by itself."""
    await asyncio.Event().wait()


# -- deadlines are enforced ----------------------------------------------------------------------


async def test_a_body_that_overruns_its_deadline_is_cancelled_at_it() -> None:
    lessor = AsyncMemoryLessor()
    stopped_at = 0.0
    with pytest.raises(DeadlineExceeded, match=r"'s' .* reached its deadline") as raised:
        async with lessor.lease("s", P(0, 10), 0.2) as lease:
            try:
                await forever()
            except asyncio.CancelledError:
                stopped_at = time.monotonic()
                raise
    late = stopped_at - lease.deadline
    assert 0 <= late < LATE, f"the body ran {late:.3f}s past its deadline"
    assert isinstance(raised.value.__cause__, asyncio.CancelledError)
    assert isinstance(raised.value, TimeoutError)  # DeadlineExceeded is one
    assert lessor.held("s") == {}  # given back
    assert isinstance(lease.ctx.err, DeadlineExceeded)  # and its context ended with it


async def test_the_deadline_is_the_lease_ctx_deadline_capped_by_the_caller() -> None:
    lessor = AsyncMemoryLessor()
    ctx = Context.background().with_timeout(0.2)
    with pytest.raises(DeadlineExceeded):
        async with lessor.lease("s", P(0, 10), 60, ctx=ctx) as lease:
            assert lease.deadline == ctx.deadline
            await forever()
    assert time.monotonic() >= lease.deadline


async def test_with_lease_cancels_its_callback_at_the_deadline() -> None:
    lessor = AsyncMemoryLessor()
    seen: list[Lease | Context] = []

    async def cb(ctx: Context, parts: SortedPartitions) -> None:
        seen.append(ctx)
        await forever()

    with pytest.raises(DeadlineExceeded):
        await lessor.with_lease(Context.background(), "s", P(0, 10), 0.1, cb)
    (ctx,) = seen
    assert isinstance(ctx, Context) and ctx.deadline is not None
    assert time.monotonic() >= ctx.deadline


async def test_only_shielded_code_runs_after_the_deadline() -> None:
    lessor = AsyncMemoryLessor()
    go_on = asyncio.Event()
    ran: list[tuple[str, float]] = []

    async def shielded_work() -> None:
        await go_on.wait()
        ran.append(("shielded", time.monotonic()))

    work: asyncio.Task[None] | None = None
    with pytest.raises(DeadlineExceeded):
        async with lessor.lease("s", P(0, 10), 0.1) as lease:
            work = asyncio.create_task(shielded_work())
            await asyncio.shield(work)  # the deadline ends this wait, not the work
            ran.append(("body", time.monotonic()))  # never reached
    assert work is not None and not work.done()
    go_on.set()
    await work
    assert [what for what, _ in ran] == ["shielded"]
    assert ran[0][1] >= lease.deadline


async def test_a_body_that_swallows_the_cancel_ends_the_lease_without_an_error() -> None:
    """As with asyncio.timeout: the user chose to go on; the lease is still given back."""
    lessor = AsyncMemoryLessor()
    async with lessor.lease("s", P(0, 10), 0.1) as lease:
        with contextlib.suppress(asyncio.CancelledError):
            await forever()
    assert lease.ctx.done()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # ours was taken back
    assert lessor.held("s") == {}


# -- the lease's context cancelled ---------------------------------------------------------------


async def test_cancelling_the_callers_ctx_from_another_thread_cancels_the_body() -> None:
    lessor = AsyncMemoryLessor()
    ctx = Context.background()
    inside = asyncio.Event()

    async def cancel_from_a_thread() -> None:
        await inside.wait()
        canceller = threading.Thread(target=ctx.cancel)
        canceller.start()
        await asyncio.to_thread(canceller.join)

    helper = asyncio.create_task(cancel_from_a_thread())
    with pytest.raises(Cancelled, match="had its context cancelled") as raised:
        async with lessor.lease("s", P(0, 10), 60, ctx=ctx):
            inside.set()
            await forever()
    await helper
    assert isinstance(raised.value.__cause__, asyncio.CancelledError)
    assert lessor.held("s") == {}
    assert ctx.done()


async def test_cancelling_the_lease_ctx_from_the_body_cancels_it_at_its_next_await() -> None:
    lessor = AsyncMemoryLessor()
    after: list[str] = []
    with pytest.raises(Cancelled):
        async with lessor.lease("s", P(0, 10), 60) as lease:
            lease.ctx.cancel()
            after.append("runs until the next await")
            await asyncio.sleep(0)
            after.append("never")
    assert after == ["runs until the next await"]


# -- a cancel of the task propagates, and the grant is given back --------------------------------


async def holding(lessor: AsyncLessor, ctx: Context | None = None) -> asyncio.Task[None]:
    """A task holding a lease on [0, 10) of section "s" until it is cancelled; returned when
    its body runs."""
    inside = asyncio.Event()

    async def hold() -> None:
        async with lessor.lease("s", P(0, 10), 60, ctx=ctx):
            inside.set()
            await forever()

    task = asyncio.create_task(hold())
    await inside.wait()
    return task


async def ends_cancelled(task: asyncio.Task[None]) -> None:
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, BOUND)


async def cancelled_twice(lessor: Gated) -> None:
    """A holder of ``lessor`` is cancelled, and cancelled again while it gives back (which
    waits for ``lessor.release``)."""
    lessor.release.clear()
    task = await holding(lessor)
    task.cancel()
    await lessor.releasing.wait()  # the task is giving back...
    task.cancel()  # ...and is cancelled again
    await ends_cancelled(task)


async def acquiring(lessor: Gated) -> asyncio.Task[None]:
    """A with_lease on ``lessor`` whose acquisition waits for ``lessor.grant``; returned once
    the acquisition has begun."""
    lessor.grant.clear()
    task = asyncio.create_task(lessor.with_lease(Context.background(), "s", P(0, 10), 60, _never))
    await lessor.acquiring.wait()
    return task


async def _never(ctx: Context, parts: SortedPartitions) -> None:
    raise AssertionError("the callback must not run")


async def test_cancelling_the_task_propagates_and_gives_the_grant_back() -> None:
    lessor = AsyncMemoryLessor()
    task = await holding(lessor)
    assert lessor.held("s") != {}
    task.cancel()
    await ends_cancelled(task)
    assert lessor.held("s") == {}


async def test_a_cancel_of_the_task_beside_the_ctx_cancel_stays_a_cancelled_error() -> None:
    lessor = AsyncMemoryLessor()
    ctx = Context.background()
    task = await holding(lessor, ctx)
    ctx.cancel()  # the scope's own cancel is queued first...
    task.cancel()  # ...and one from outside comes with it: that one wins
    await ends_cancelled(task)
    assert lessor.held("s") == {}


async def test_a_second_cancel_during_the_give_back_does_not_cut_it_off() -> None:
    lessor = Gated()
    await cancelled_twice(lessor)
    assert lessor.released == []  # still under way, apart from the task
    lessor.release.set()
    await lessor.aclose()  # waits for it
    assert lessor.released == lessor.granted and lessor.held("s") == {}


async def test_a_task_cancelled_mid_acquisition_holds_nothing() -> None:
    lessor = Gated()
    task = await acquiring(lessor)
    task.cancel()
    await ends_cancelled(task)
    await lessor.aclose()
    assert lessor.granted == [] and lessor.held("s") == {}


async def test_a_grant_that_completes_after_its_caller_was_cancelled_is_given_back() -> None:
    lessor = Gated(stubborn=True)  # the acquisition cannot be called off once begun
    task = await acquiring(lessor)
    task.cancel()
    await ends_cancelled(task)  # the caller is gone at once, the acquisition still on
    assert lessor.cancels_swallowed == 1
    lessor.grant.set()  # now it grants anyway...
    await lessor.aclose()
    assert len(lessor.granted) == 1
    assert lessor.released == lessor.granted  # ...and that grant was given back
    assert lessor.held("s") == {}


async def test_a_grant_and_a_cancel_in_the_same_step_leave_nothing_held() -> None:
    lessor = Gated(stubborn=True)
    task = await acquiring(lessor)
    lessor.grant.set()  # the grant is on its way back to the caller...
    task.cancel()  # ...which is cancelled before it arrives
    await ends_cancelled(task)
    await lessor.aclose()
    assert lessor.released == lessor.granted and lessor.held("s") == {}


# -- aclose --------------------------------------------------------------------------------------


async def test_aclose_waits_for_the_give_backs_under_way() -> None:
    lessor = Gated()
    await cancelled_twice(lessor)
    closing = asyncio.create_task(lessor.aclose())
    done, _ = await asyncio.wait({closing}, timeout=0.2)
    assert not done and not lessor.closed  # it waits for the give-back
    lessor.release.set()
    await closing
    assert lessor.closed and lessor.released == lessor.granted


async def test_async_with_the_lessor_closes_it() -> None:
    async with Gated() as lessor:
        async with lessor.lease("s", P(0, 10), 60):
            pass
    assert isinstance(lessor, Gated) and lessor.closed


# -- with_lease, the lease, and what the sync contract promises too ------------------------------


async def test_with_lease_returns_what_the_callback_returns() -> None:
    lessor = AsyncMemoryLessor()
    got: list[tuple[Context, SortedPartitions]] = []

    async def cb(ctx: Context, parts: SortedPartitions) -> str:
        got.append((ctx, parts))
        await asyncio.sleep(0)
        return "result"

    assert await lessor.with_lease(Context.background(), "s", P(0, 10), 60, cb) == "result"
    ((ctx, parts),) = got
    assert parts == [P(0, 10)]
    assert fencing_token(ctx) is not None
    assert isinstance(ctx.err, Cancelled)  # given back when it returned
    assert lessor.held("s") == {}


async def test_an_exception_from_the_body_propagates_unchanged_and_the_grant_is_given_back() -> (
    None
):
    lessor = AsyncMemoryLessor()
    with pytest.raises(KeyError, match="from the body"):
        async with lessor.lease("s", P(0, 10), 60):
            raise KeyError("from the body")
    assert lessor.held("s") == {}


async def test_the_lease_is_a_lessor_lease_with_its_token_on_its_ctx() -> None:
    lessor = AsyncMemoryLessor()
    async with lessor.lease("s", P(0, 10), timedelta(minutes=1)) as first:
        assert isinstance(first, Lease) and first.section_id == "s"
        assert first.partitions == [P(0, 10)] and fencing_token(first.ctx) == first.token
        async with lessor.lease("s", P(5, 20), 60) as second:
            assert second.partitions == [P(10, 20)] and second.token > first.token


async def test_a_scope_is_entered_once() -> None:
    lessor = AsyncMemoryLessor()
    scope = lessor.lease("s", P(0, 10), 60)
    async with scope:
        pass
    with pytest.raises(RuntimeError, match="entered only once"):
        async with scope:
            pass


async def test_a_done_ctx_is_refused_before_the_backend() -> None:
    lessor = Gated()
    cancelled = Context.background()
    cancelled.cancel()
    with pytest.raises(Cancelled):
        await lessor.with_lease(cancelled, "s", P(0, 10), 60, _never)
    expired = Context.background().with_deadline(time.monotonic() - 1)
    with pytest.raises(DeadlineExceeded):
        async with lessor.lease("s", P(0, 10), 60, ctx=expired):
            pass
    assert not lessor.acquiring.is_set()


async def test_a_lease_longer_than_the_backend_grants_is_refused() -> None:
    class Short(AsyncMemoryLessor):
        @property
        def max_duration(self) -> float:
            return 10.0

    with pytest.raises(ValueError, match="longer than the 10s the 'memory' lessor can grant"):
        async with Short().lease("s", P(0, 10), 60):
            pass


# -- the same argument checks as the sync lessor -------------------------------------------------

BAD = [
    ("", P(0, 1), 1),
    (5, P(0, 1), 1),
    (None, P(0, 1), 1),
    ("s", "0_1", 1),
    ("s", (0, 1), 1),
    ("s", P(0, 1), 0),
    ("s", P(0, 1), -1),
    ("s", P(0, 1), float("inf")),
    ("s", P(0, 1), float("nan")),
    ("s", P(0, 1), timedelta(0)),
    ("s", P(0, 1), "1"),
    ("s", P(0, 1), True),
]


@pytest.mark.parametrize(("section_id", "part", "dur"), BAD)
async def test_bad_arguments_raise_what_the_sync_lessor_raises(
    section_id: object, part: object, dur: object
) -> None:
    with pytest.raises((TypeError, ValueError)) as sync:
        MemoryLessor().lease(section_id, part, dur)  # type: ignore[arg-type]
    same = pytest.raises(sync.type, match=f"^{re.escape(str(sync.value))}$")
    lessor = Gated()
    with same:
        lessor.lease(section_id, part, dur)  # type: ignore[arg-type]
    with same:
        await lessor.with_lease(Context.background(), section_id, part, dur, _never)  # type: ignore[arg-type]
    assert not lessor.acquiring.is_set()


async def test_bad_ctx_and_callback_raise_what_the_sync_lessor_raises() -> None:
    lessor = AsyncMemoryLessor()
    for call, sync_call in [
        (
            lambda: lessor.with_lease(None, "s", P(0, 1), 1, _never),  # type: ignore[arg-type]
            lambda: MemoryLessor().with_lease(None, "s", P(0, 1), 1, _never),  # type: ignore[arg-type]
        ),
        (
            lambda: lessor.with_lease(Context.background(), "s", P(0, 1), 1, None),  # type: ignore[arg-type]
            lambda: MemoryLessor().with_lease(Context.background(), "s", P(0, 1), 1, None),  # type: ignore[arg-type]
        ),
        (
            lambda: lessor.wait_free("ctx", "s", P(0, 1)),  # type: ignore[arg-type]
            lambda: MemoryLessor().wait_free("ctx", "s", P(0, 1)),  # type: ignore[arg-type]
        ),
    ]:
        with pytest.raises(TypeError) as sync:
            sync_call()
        with pytest.raises(TypeError, match=f"^{re.escape(str(sync.value))}$"):
            await call()
    with pytest.raises(TypeError, match=r"ctx must be a lessor\.Context or None"):
        lessor.lease("s", P(0, 1), 1, ctx="ctx")  # type: ignore[arg-type]


# -- the log and the observers -------------------------------------------------------------------


class Recording(Recorder):
    """The sync observer tests' recorder, hearing failed give-backs too."""

    def release_failed(self, backend: str, section_id: str, error: BaseException) -> None:
        self.events.append(("release_failed", backend, section_id, str(error)))


class FailingRelease(AsyncMemoryLessor):
    async def _release(self, grant: Grant) -> None:
        await super()._release(grant)
        raise Unavailable("etcd did not answer; the lease ends at its expiry, 3.0s from now")


class FailingAcquire(AsyncMemoryLessor):
    async def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        raise Unavailable("no etcd")


async def test_observers_and_the_log_hear_what_they_hear_from_a_sync_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recording = Recording()
    observe.add_observer(recording)
    try:
        with caplog.at_level(logging.DEBUG, logger="lessor"):
            async with AsyncMemoryLessor().lease("s", P(0, 10), 60):
                pass
            async with FailingRelease().lease("s", P(0, 10), 60):
                pass
            with pytest.raises(Unavailable):
                async with FailingAcquire().lease("s", P(0, 10), 60):
                    pass
    finally:
        observe.remove_observer(recording)
    failure = "etcd did not answer; the lease ends at its expiry, 3.0s from now"
    assert recording.events == [
        ("acquired", "memory", "s", "0_a", ["0_a"]),
        ("released", "memory", "s"),
        ("acquired", "memory", "s", "0_a", ["0_a"]),
        ("release_failed", "memory", "s", failure),
        ("acquire_failed", "memory", "s", "Unavailable"),
    ]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    (warning,) = warnings
    assert warning.exc_info is None and "\n" not in warning.getMessage()
    assert "release failed: etcd did not answer" in warning.getMessage()
    assert "granted ['0_a'] of 0_a" in caplog.text and "released" in caplog.text


# -- a third-party backend -----------------------------------------------------------------------


class ThirdParty(AsyncLessor):
    """A minimal backend: no exclusion, no _wait_free or _is_held of its own."""

    def __init__(self) -> None:
        self.tokens = 0

    async def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        self.tokens += 1
        return Grant(SortedPartitions([part]), time.monotonic() + dur, self.tokens)

    async def _release(self, grant: Grant) -> None:
        pass


async def test_a_third_party_backend_gets_the_polling_wait_free_and_cannot_tell() -> None:
    from lessor.contract import WAIT_FREE_FIRST  # noqa: PLC0415

    third = ThirdParty()
    started = time.monotonic()
    assert await third.wait_free(Context.background().with_timeout(60), "s", P(0, 10)) is True
    assert time.monotonic() - started >= WAIT_FREE_FIRST  # it waited, it did not spin
    with pytest.raises(NotImplementedError, match=r"ThirdParty lessor .* AsyncLessor\._is_held"):
        await third.is_held(Context.background(), "s", P(0, 10))
    assert await third.is_held(Context.background(), "s", P(5, 5)) is False
    async with third:  # nothing to close, no __init__ of ours called: still fine
        async with third.lease("s", P(0, 10), 60) as lease:
            assert lease.partitions == [P(0, 10)]
