"""Context: deadlines, cancellation through the tree, values, waiting across threads."""

from __future__ import annotations

import gc
import math
import threading
import time
from datetime import timedelta

import pytest

from lessor import Cancelled, Context, DeadlineExceeded


def test_background() -> None:
    ctx = Context.background()
    assert ctx.deadline is None
    assert ctx.remaining() == math.inf
    assert not ctx.done() and ctx.err is None


def test_timeout_sets_deadline() -> None:
    before = time.monotonic()
    ctx = Context.background().with_timeout(10)
    after = time.monotonic()
    assert ctx.deadline is not None and before + 10 <= ctx.deadline <= after + 10
    assert 0 < ctx.remaining() <= 10
    ctx2 = Context.background().with_timeout(timedelta(seconds=10))
    assert ctx2.deadline is not None and abs(ctx2.deadline - ctx.deadline) < 1


def test_child_never_outlives_parent_deadline() -> None:
    parent = Context.background().with_timeout(1)
    child = parent.with_timeout(100)
    assert child.deadline == parent.deadline
    sooner = parent.with_timeout(0.5)
    assert sooner.deadline is not None and parent.deadline is not None
    assert sooner.deadline < parent.deadline
    assert parent.with_value("k", 1).deadline == parent.deadline


def test_past_deadline_is_done() -> None:
    ctx = Context.background().with_deadline(time.monotonic() - 1)
    assert ctx.done()
    assert isinstance(ctx.err, DeadlineExceeded)
    assert isinstance(ctx.err, TimeoutError)
    assert ctx.remaining() == 0
    with pytest.raises(DeadlineExceeded):
        ctx.raise_if_done()


def test_cancel_propagates_down_not_up() -> None:
    root = Context.background()
    parent = root.with_timeout(60)
    child = parent.with_value("k", "v")
    grandchild = child.with_timeout(30)
    sibling = root.with_timeout(60)
    child.cancel()
    assert child.done() and grandchild.done()
    assert isinstance(grandchild.err, Cancelled)
    assert not parent.done() and not root.done() and not sibling.done()
    parent.cancel()
    assert isinstance(child.err, Cancelled)  # first cause stays


def test_child_of_cancelled_parent_starts_cancelled() -> None:
    parent = Context.background()
    parent.cancel()
    child = parent.with_timeout(10)
    assert isinstance(child.err, Cancelled)
    assert child.wait(0) is True


def test_cancel_after_deadline_reports_deadline() -> None:
    ctx = Context.background().with_deadline(time.monotonic() - 0.1)
    ctx.cancel()
    assert isinstance(ctx.err, DeadlineExceeded)


def test_values() -> None:
    ctx = Context.background().with_value("a", 1).with_value("b", 2).with_value("a", 3)
    assert ctx.value("a") == 3 and ctx.value("b") == 2
    assert ctx.value("missing") is None and ctx.value("missing", "d") == "d"
    assert Context.background().with_value(None, "none-key").value(None) == "none-key"


def test_wait_wakes_on_cancel_from_another_thread() -> None:
    ctx = Context.background()
    child = ctx.with_timeout(60)
    waiting = threading.Event()
    result: list[bool] = []

    def waiter() -> None:
        waiting.set()
        result.append(child.wait())

    t = threading.Thread(target=waiter)
    t.start()
    assert waiting.wait(5)
    ctx.cancel()
    t.join(5)
    assert not t.is_alive()
    assert result == [True]


def test_wait_returns_at_deadline_or_timeout() -> None:
    ctx = Context.background().with_timeout(0.05)
    assert ctx.wait() is True
    assert ctx.done()
    assert Context.background().wait(0.01) is False


@pytest.mark.parametrize("bad", ["1", None, True, float("nan")])
def test_rejects_bad_timeouts(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        Context.background().with_timeout(bad)  # type: ignore[arg-type]


def test_unreferenced_children_are_not_kept() -> None:
    parent = Context.background()
    for _ in range(1000):
        parent.with_timeout(10)
    gc.collect()
    assert parent._children is not None and len(parent._children) == 0


# -- on_done: being told of a cancel ------------------------------------------------------------


def test_on_done_is_called_once_on_the_cancelling_thread() -> None:
    ctx = Context.background()
    calls: list[str] = []
    ctx.on_done(lambda: calls.append(threading.current_thread().name))
    assert calls == []
    canceller = threading.Thread(target=ctx.cancel, name="canceller")
    canceller.start()
    canceller.join()
    ctx.cancel()  # a second cancel calls nothing again
    assert calls == ["canceller"]


def test_on_done_follows_a_cancelled_ancestor_not_a_child() -> None:
    root = Context.background()
    ctx = root.with_timeout(60).with_value("k", "v")
    calls: list[str] = []
    ctx.on_done(lambda: calls.append("ctx"))
    ctx.with_timeout(30).cancel()  # a child's cancel leaves ctx alone
    assert calls == []
    root.cancel()
    assert calls == ["ctx"]


def test_on_done_of_a_cancelled_context_calls_at_once() -> None:
    parent = Context.background()
    parent.cancel()
    calls: list[str] = []
    unsubscribe = parent.with_timeout(10).on_done(lambda: calls.append("now"))
    assert calls == ["now"]
    unsubscribe()  # harmless after the call


def test_on_done_unsubscribed_is_never_called() -> None:
    ctx = Context.background()
    calls: list[str] = []
    unsubscribe = ctx.on_done(lambda: calls.append("first"))
    ctx.on_done(lambda: calls.append("second"))
    unsubscribe()
    unsubscribe()
    ctx.cancel()
    assert calls == ["second"]


def test_on_done_is_not_called_at_the_deadline() -> None:
    ctx = Context.background().with_timeout(0.01)
    calls: list[str] = []
    ctx.on_done(lambda: calls.append("called"))
    assert ctx.wait() is True and isinstance(ctx.err, DeadlineExceeded)
    assert calls == []  # a deadline is no event
    ctx.cancel()  # a cancel after the deadline is one (and reports the deadline)
    assert calls == ["called"]


def test_a_failing_on_done_callback_is_logged_and_the_cancel_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = Context.background()
    child = ctx.with_timeout(60)
    calls: list[str] = []

    def boom() -> None:
        raise RuntimeError("from the callback")

    ctx.on_done(boom)
    ctx.on_done(lambda: calls.append("after"))
    with caplog.at_level("ERROR", logger="lessor"):
        ctx.cancel()
    assert calls == ["after"]
    assert child.done()
    assert "on_done callback" in caplog.text and "from the callback" in caplog.text


def test_callbacks_cost_nothing_until_used_and_are_dropped_at_the_cancel() -> None:
    ctx = Context.background()
    assert ctx._callbacks is None
    ctx.on_done(lambda: None)
    ctx.cancel()
    assert ctx._callbacks is None
