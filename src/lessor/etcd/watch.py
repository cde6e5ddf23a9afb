"""Waiting for a section's held ranges to come free: a watch on the section's holder markers.

:func:`wait_free` is the etcd lessor's ``wait_free``. Its shape follows from the data model
(``keys.py``, ``state.py``): a section entry is live exactly while its holder marker exists,
and every way a holding ends deletes that marker. A release deletes it, the lessor deletes an
overrunning holder's at its deadline, a clean-up deletes an abandoned one, and etcd deletes
a crashed holder's when its etcd lease expires. Each of those is one DELETE event on the
section's marker range, so:

1. **One read.** The section's value and markers at one revision (``SectionTxns.read``): the
   live entries whose ranges overlap ``part`` are what is held. None: True at once.
2. **One watch, from the read's revision + 1**, on the marker range, deletions only (NOPUT).
   Nothing can slip between the two: every deletion after the read is an event. The first
   DELETE of a marker of a held entry is True. Nothing polls etcd: the lease clock lives in
   etcd, and its expiry arrives as an event like any release.
3. **A broken stream is a new read, not a resumed watch.** When the watched member dies,
   loses its leader (the stream asks etcd to end it then) or the revision was compacted, the
   events in between may be lost. A fresh read (on another member: the transport moves on
   after a retryable failure) settles it: an entry held at the first read whose marker is
   gone now was freed (True); else watch again from the new read's revision. Retryable
   failures are retried after a short back-off until ``ctx`` ends; etcd's permanent answers
   (permission denied, a corrupt section) are raised.
4. **``ctx`` ending wakes it without polling.** :class:`~lessor.context.Context` has no
   callbacks, so one thread of ours waits on a child of ``ctx`` (cancelled with it) and
   cancels the stream in progress, which ends the calling thread's wait on it at once. The
   thread is started only when there is something to watch, and joined, with the stream
   cancelled, before every return: nothing outlives the call. A cancellation that lands during
   a read or while a watch is being set up is noticed when that call ends, within
   ``rpc_timeout`` (the calls are bounded by ``ctx``'s deadline too).

It writes nothing and holds nothing: a read and watches.

:func:`is_held` is the etcd lessor's ``is_held``: step 1 alone. The same read, retried the same
way until ``ctx`` ends (when it raises ``ctx``'s error), and the same question of it
(:func:`holding`): is any live entry's range overlapping ``part``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from lessor.context import Context
from lessor.etcd.calls import run
from lessor.etcd.keys import Owner, SectionKeys
from lessor.etcd.retry import Backoff
from lessor.etcd.state import SectionTxns, Snapshot
from lessor.etcd.transport import Compacted, RetryableRpc, Transport, Watch
from lessor.partition import Partition

__all__ = ["READ", "Watching", "holding", "is_held", "wait_free", "waiting"]

log = logging.getLogger("lessor")


def wait_free(
    ctx: Context,
    transport: Transport,
    keys: SectionKeys,
    part: Partition,
    *,
    rpc_timeout: float,
    watching: Callable[[int], None] | None = None,
) -> bool:
    """True soon after a marker of an entry that held a key of ``part`` at the call is
    deleted, at once when no live entry overlaps ``part``; False when ``ctx`` is done.

    ``rpc_timeout`` bounds each call (a read, a watch's set-up). ``watching``, if given, is
    called with the revision read each time a watch is in place (for tests and tracing).
    Raises a :class:`~lessor.errors.LessorError` on etcd's permanent answers only.
    """
    what = f"section {keys.section_id!r}: waiting for ranges to come free"
    wait = _Wait(ctx, transport, keys, rpc_timeout, watching=watching, what=what)
    steps = waiting(part)
    step = next(steps)
    waker: _Waker | None = None  # started only when there is something to watch
    try:
        while True:
            if isinstance(step, Watching):
                if waker is None:
                    waker = _Waker(ctx).__enter__()
                step = steps.send(wait.watch(step.held, step.revision, waker))
            else:
                step = steps.send(wait.read())
    except StopIteration as end:
        return bool(end.value)
    finally:
        if waker is not None:
            waker.__exit__(None, None, None)


@dataclass(frozen=True, slots=True)
class Watching:
    """A step of :func:`waiting`: watch the markers from ``revision + 1`` until one of
    ``held`` is deleted. Its answer: True (one was), False (``ctx`` is done) or None (the
    stream broke: read the section again)."""

    held: Mapping[Owner, int]
    revision: int


READ: Final = None
"""A step of :func:`waiting`: read the section. Its answer: the state, or None once ``ctx``
is done."""


def waiting(part: Partition) -> Generator[Watching | None, Any, bool]:
    """What ``wait_free`` does, steps 1 to 3 of the module documentation, without I/O: it
    yields :data:`READ` or a :class:`Watching`, receives the answer, and returns the result.
    The threaded ``wait_free`` here and the asyncio one (``aio_watch.py``) make the steps."""
    first: Snapshot | None = yield READ
    if first is None:
        return False
    held = holding(first, part)
    if not held:
        return True
    revision = first.revision
    while True:
        freed: bool | None = yield Watching(held, revision)
        if freed is not None:
            return freed
        snapshot: Snapshot | None = yield READ
        if snapshot is None:
            return False
        if any(snapshot.markers.get(owner) != token for owner, token in held.items()):
            return True  # freed while no watch was in place
        revision = snapshot.revision


def is_held(
    ctx: Context, transport: Transport, keys: SectionKeys, part: Partition, *, rpc_timeout: float
) -> bool:
    """Whether a live entry of the section holds a key of ``part``: one read.

    Retryable failures are tried again (on the member the transport moves on to) until ``ctx``
    ends; then ``ctx``'s error is raised, never False. ``rpc_timeout`` bounds each read.
    Raises a :class:`~lessor.errors.LessorError` on etcd's permanent answers.
    """
    what = f"section {keys.section_id!r}: looking for holders"
    snapshot = _Wait(ctx, transport, keys, rpc_timeout, watching=None, what=what).read()
    if snapshot is None:
        err = ctx.err
        assert err is not None  # a read gives up only once ctx is done
        raise err
    return bool(holding(snapshot, part))


def holding(snapshot: Snapshot, part: Partition) -> dict[Owner, int]:
    """The live entries of ``snapshot`` that hold a key of ``part``: owner -> marker token
    (its create revision, which a new marker of the same owner would not share)."""
    return {
        e.owner: snapshot.markers[e.owner]
        for e in snapshot.live()
        if any(r.overlaps(part) for r in e.ranges)
    }


class _Wait:
    """The calls of one :func:`wait_free` or :func:`is_held`, and its back-off after
    retryable failures."""

    def __init__(
        self,
        ctx: Context,
        transport: Transport,
        keys: SectionKeys,
        rpc_timeout: float,
        *,
        watching: Callable[[int], None] | None,
        what: str,
    ) -> None:
        self._ctx = ctx
        self._transport = transport
        self._keys = keys
        self._txns = SectionTxns(transport.rpc, keys)
        self._rpc_timeout = rpc_timeout
        self._watching = watching
        self._backoff = Backoff()
        self._what = what

    def read(self) -> Snapshot | None:
        """The section now; None once ``ctx`` is done. Retryable failures are tried again."""
        while not self._ctx.done():
            try:
                return run(self._transport, self._txns.read(self._timeout()))
            except RetryableRpc as e:
                log.debug("%s: reading the section failed (%s); trying again", self._what, e)
                if self._pause():
                    break
        return None

    def watch(self, held: Mapping[Owner, int], revision: int, waker: _Waker) -> bool | None:
        """Watch the markers from ``revision + 1``: True when a ``held`` one is deleted, False
        when ``ctx`` is done, None when the stream broke (the section must be read again)."""
        keys = self._keys
        try:
            stream = self._transport.watch(
                keys.markers, keys.markers_end, revision + 1, self._timeout(), self._what,
                no_put=True,
            )  # fmt: skip
            with stream:
                if not waker.attach(stream):
                    return False  # ctx ended while the watch was being set up
                self._backoff = Backoff()  # a watch in place: later failures start afresh
                if self._watching is not None:
                    self._watching(revision)
                for event in stream:
                    if event.deleted and keys.owner(event.key) in held:
                        return True
            return False  # the stream ends without an error only when ctx is done
        except Compacted as e:
            log.debug("%s: %s; reading the section again", self._what, e)
        except RetryableRpc as e:
            log.debug("%s: watch failed (%s); reading the section again", self._what, e)
            if self._pause():
                return False
        return False if self._ctx.done() else None

    def _timeout(self) -> float:
        return max(0.001, min(self._rpc_timeout, self._ctx.remaining()))

    def _pause(self) -> bool:
        """Back off after a retryable failure; whether ``ctx`` is done."""
        return self._ctx.wait(self._backoff.after_transient(self._ctx.remaining()))


class _WakerKey:
    """The key of the child context a :class:`_Waker` waits on."""


class _Waker:
    """A thread that cancels the watch in progress when ``ctx`` ends.

    It waits on a child of ``ctx``, which is cancelled with ``ctx`` (deadline or cancel) and
    by leaving the ``with`` block; leaving also joins the thread.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx.with_value(_WakerKey, None)
        self._lock = threading.Lock()
        self._stream: Watch | None = None
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="lessor wait_free", daemon=True)

    def __enter__(self) -> _Waker:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ctx.cancel()
        self._thread.join()

    def attach(self, stream: Watch) -> bool:
        """Make ``stream`` the one to cancel; False (and nothing attached) once ended."""
        with self._lock:
            if not self._ended:
                self._stream = stream
                return True
        return False

    def _run(self) -> None:
        while not self._ctx.wait():  # a timed wait may end a hair before the deadline
            pass
        with self._lock:
            self._ended = True
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()
