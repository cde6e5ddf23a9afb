"""A deadline, a cancellation signal and values, carried into synchronous code.

Modelled on Go's ``context.Context``. Contexts form a tree: a child made with
:meth:`Context.with_timeout`, :meth:`Context.with_deadline` or :meth:`Context.with_value` never
outlives its parent. Its deadline is the earlier of its own and its parent's, and cancelling
a parent cancels every descendant. Cancelling a child leaves the parent alone.

Deadlines are :func:`time.monotonic` values, immune to wall-clock steps. Every method is
thread-safe: one thread may :meth:`~Context.wait` on a context that another cancels, or be
told of the cancel through :meth:`~Context.on_done` (how :mod:`lessor.aio` wakes an event
loop).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from datetime import timedelta

from lessor.errors import Cancelled, ContextError, DeadlineExceeded

__all__ = ["Context", "seconds"]

log = logging.getLogger("lessor")

_NO_KEY = object()


def seconds(value: float | timedelta, what: str = "duration") -> float:
    """Normalise a duration (float seconds or timedelta) to float seconds; reject junk."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"{what} must be float seconds or a timedelta, got {value!r}")
    if math.isnan(result):
        raise ValueError(f"{what} must be a number, got NaN")
    return result


def _nothing() -> None:
    """The unsubscribe of a callback that was already called."""


class Context:
    """A node of the context tree; create the root with :meth:`background`."""

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_children",
        "_deadline",
        "_err",
        "_event",
        "_key",
        "_lock",
        "_parent",
        "_value",
    )

    _deadline: float | None

    def __init__(
        self,
        parent: Context | None = None,
        deadline: float | None = None,
        key: object = _NO_KEY,
        value: object = None,
    ) -> None:
        """Internal: use :meth:`background` and the ``with_*`` methods."""
        self._parent = parent
        self._key = key
        self._value = value
        if parent is not None and parent._deadline is not None:
            deadline = parent._deadline if deadline is None else min(deadline, parent._deadline)
        self._deadline = deadline
        self._lock = threading.Lock()
        # Made on first need: most contexts are never waited on and have no children, and
        # these cost more than the rest of a context together (leases make two each).
        self._event: threading.Event | None = None
        self._children: weakref.WeakSet[Context] | None = None
        self._callbacks: dict[object, Callable[[], None]] | None = None
        self._err: ContextError | None = None
        if parent is not None:
            parent._adopt(self)

    @classmethod
    def background(cls) -> Context:
        """A new root: no deadline, no values, cancelled only by its own :meth:`cancel`."""
        return cls()

    # -- derivation --------------------------------------------------------------------------

    def with_deadline(self, deadline: float) -> Context:
        """A child whose deadline is ``deadline`` (a :func:`time.monotonic` value) or earlier."""
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
            raise TypeError(f"deadline must be a time.monotonic() value, got {deadline!r}")
        if math.isnan(deadline):
            raise ValueError("deadline must be a number, got NaN")
        return Context(self, deadline=float(deadline))

    def with_timeout(self, timeout: float | timedelta) -> Context:
        """A child whose deadline is ``timeout`` seconds from now, or the parent's if earlier."""
        return self.with_deadline(time.monotonic() + seconds(timeout, "timeout"))

    def with_value(self, key: object, value: object) -> Context:
        """A child carrying ``value`` under ``key`` (compared by equality)."""
        return Context(self, key=key, value=value)

    def _adopt(self, child: Context) -> None:
        with self._lock:
            if self._err is None:
                if self._children is None:
                    self._children = weakref.WeakSet()
                self._children.add(child)
                return
            err = self._err
        child._cancel(err)

    # -- queries -----------------------------------------------------------------------------

    def value(self, key: object, default: object = None) -> object:
        """The value stored under ``key`` by this context or its nearest ancestor that has one."""
        ctx: Context | None = self
        while ctx is not None:
            if ctx._key is not _NO_KEY and ctx._key == key:
                return ctx._value
            ctx = ctx._parent
        return default

    @property
    def deadline(self) -> float | None:
        """The :func:`time.monotonic` value at which this context expires, or None."""
        return self._deadline

    def remaining(self) -> float:
        """Seconds until the deadline (0 when past, ``math.inf`` with no deadline)."""
        if self._err is not None:
            return 0.0
        if self._deadline is None:
            return math.inf
        return max(0.0, self._deadline - time.monotonic())

    @property
    def err(self) -> ContextError | None:
        """Why the context is done (:class:`Cancelled` or :class:`DeadlineExceeded`), or None."""
        if self._err is not None:
            return self._err
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return DeadlineExceeded(self._deadline_message())
        return None

    def done(self) -> bool:
        """Whether the context is cancelled or past its deadline."""
        return self.err is not None

    def raise_if_done(self) -> None:
        """Raise :attr:`err` if the context is done."""
        err = self.err
        if err is not None:
            raise err

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the context is done or ``timeout`` seconds pass; return :meth:`done`."""
        limit = self.remaining()
        if timeout is not None:
            limit = min(limit, max(0.0, seconds(timeout, "timeout")))
        if limit > 0:
            with self._lock:
                if self._event is None:
                    self._event = threading.Event()
                    if self._err is not None:
                        self._event.set()
                event = self._event
            event.wait(None if limit == math.inf else limit)
        return self.done()

    def on_done(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn()`` once when this context is cancelled; return a function that cancels
        the call (unsubscribes).

        A cancel of this context or of an ancestor calls ``fn`` on the cancelling thread, after
        :meth:`wait` has been woken; a context already cancelled calls it at once, on this
        thread. Reaching the deadline is no event and calls nothing: combine this with a
        timer at :attr:`deadline`. ``fn`` must be quick and must not raise (an exception from
        it is logged and swallowed, so that it cannot stop the cancel from reaching the
        descendants); it must not call back into the code that cancels.
        """
        with self._lock:
            if self._err is None:
                if self._callbacks is None:
                    self._callbacks = {}
                key = object()
                self._callbacks[key] = fn
                return lambda: self._forget(key)
        fn()
        return _nothing

    def _forget(self, key: object) -> None:
        with self._lock:
            if self._callbacks is not None:
                self._callbacks.pop(key, None)

    # -- cancellation ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Cancel this context and its descendants; later calls do nothing."""
        if self._deadline is not None and time.monotonic() >= self._deadline:
            # The deadline came first: like Go, report that rather than the late cancel.
            self._cancel(DeadlineExceeded(self._deadline_message()))
        else:
            self._cancel(Cancelled("context cancelled"))

    def _cancel(self, err: ContextError) -> None:
        with self._lock:
            if self._err is not None:
                return
            self._err = err
            children = list(self._children or ())
            self._children = None
            callbacks = self._callbacks
            self._callbacks = None
            event = self._event
        if event is not None:
            event.set()
        if callbacks:
            for fn in callbacks.values():
                try:
                    fn()
                except Exception:
                    log.exception("lessor: a Context.on_done callback (%r) failed", fn)
        for child in children:
            child._cancel(err)

    def _deadline_message(self) -> str:
        assert self._deadline is not None
        late = time.monotonic() - self._deadline
        return f"context deadline exceeded ({late:.3f}s ago)"

    def __repr__(self) -> str:
        state = "done" if self.done() else "active"
        if self._deadline is None:
            return f"<Context {state}, no deadline>"
        return f"<Context {state}, {self._deadline - time.monotonic():+.3f}s to deadline>"
