"""An asyncio transport whose calls pass gates a test controls: cancel a task at an exact await.

:class:`GatedTransport` wraps an :class:`~lessor.etcd.aio_transport.AsyncTransport`. Before
and after each call (``kv``, ``lease``, ``keep_alive``, the opening of a ``watch``) it passes a
:class:`Point` through its :class:`Gates`, which records it and, at the point the test chose,
holds the caller until the test releases it (or cancels the task). So a test can

* run an acquisition once to learn its points (:attr:`Gates.passed`),
* run it again once for each point ``n``, held at ``n`` (``Gates(hold_at=n)``), wait until it is
  held there (:meth:`Gates.held`), and cancel the task: a cancellation at every await point;
* or release it (:meth:`Gates.release`) after doing something else first: an injected delay;
* or lose the reply of a call that etcd applied (``Gates(lose=...)``): the caller gets the
  :class:`~lessor.etcd.rpc_errors.RetryableRpc` a timeout would give it.

:class:`GatedLessor` is an :class:`~lessor.etcd.AsyncEtcdLessor` whose transport is gated: a
test-only subclass, through the lessor's own hooks for its connection and its sections'
shells. The product code knows nothing of this: the gates live in the wrapper.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import grpc

from lessor.etcd.aio_lessor import AsyncEtcdLessor
from lessor.etcd.aio_shell import AsyncSectionShell
from lessor.etcd.aio_transport import AsyncTransport, AsyncWatch, RetryableRpc
from lessor.etcd.ops import Op, Wait, WaitTurn
from lessor.etcd.options import Options

T = TypeVar("T")

BEFORE, AFTER = "before", "after"


@dataclass(frozen=True, slots=True)
class Point:
    """Where a caller of a :class:`GatedTransport` stands."""

    call: str  # "kv.Txn", "lease.LeaseGrant", "keep_alive", "watch"; GatedLessor's "wait.Wait"
    ordinal: int  # the call's number among the transport's calls, from 1
    side: str  # BEFORE or AFTER the call

    def __str__(self) -> str:
        return f"{self.side} call {self.ordinal} ({self.call})"


class Gates:
    """The points a :class:`GatedTransport`'s callers passed, and where to hold one.

    ``hold_at`` is the index, in :attr:`passed`, of the point to hold a caller at (0 is the
    first point passed), or a predicate on points (the first point it accepts), or None (hold
    nobody). ``sides`` are the points that count: BEFORE and AFTER each call, or one of them.
    One caller is held, once; the others pass. ``lose`` picks a call whose reply is lost: the
    first whose AFTER point it accepts (once past any hold there) fails as a timeout would,
    though etcd applied it.
    """

    def __init__(
        self,
        hold_at: int | Callable[[Point], bool] | None = None,
        *,
        sides: tuple[str, ...] = (BEFORE, AFTER),
        lose: Callable[[Point], bool] | None = None,
    ) -> None:
        self.passed: list[Point] = []
        self.lost: Point | None = None
        self._hold_at = hold_at
        self._sides = sides
        self._lose = lose
        self._held: Point | None = None
        self._reached = asyncio.Event()
        self._release = asyncio.Event()
        self._awaited: list[tuple[Callable[[Point], bool], asyncio.Future[Point]]] = []

    async def at(self, point: Point) -> None:
        """Pass ``point``: recorded, and held there if it is the point to hold at."""
        if point.side not in self._sides:
            return
        self.passed.append(point)
        for accepts, passed in self._awaited:
            if not passed.done() and accepts(point):
                passed.set_result(point)
        if self._held is None and self._holds(point):
            self._held = point
            self._reached.set()
            await self._release.wait()

    def loses(self, point: Point) -> bool:
        """Whether the reply of the call ``point`` (an AFTER point) is to be lost."""
        if self.lost is not None or self._lose is None or not self._lose(point):
            return False
        self.lost = point
        return True

    def _holds(self, point: Point) -> bool:
        if self._hold_at is None:
            return False
        if isinstance(self._hold_at, int):
            return len(self.passed) - 1 == self._hold_at
        return self._hold_at(point)

    async def held(self, task: asyncio.Task[Any]) -> Point | None:
        """The point ``task`` is held at, once it is; None if ``task`` ended first."""
        reached = asyncio.ensure_future(self._reached.wait())
        try:
            await asyncio.wait({reached, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reached.cancel()
        return self._held

    async def reached(self, accepts: Callable[[Point], bool], timeout: float = 10.0) -> Point:
        """The first point from now on that ``accepts`` takes, once a caller passes it (a
        :class:`TimeoutError` if none does within ``timeout`` seconds)."""
        passed: asyncio.Future[Point] = asyncio.get_running_loop().create_future()
        self._awaited.append((accepts, passed))
        return await asyncio.wait_for(passed, timeout)

    def release(self) -> None:
        """Let the held caller (and any later one) go on."""
        self._release.set()


class GatedTransport:
    """``inner``, with every call passing :attr:`gates` before and after it. A test may put
    new gates in place between two runs; the calls are numbered on from where they were."""

    def __init__(self, inner: AsyncTransport, gates: Gates) -> None:
        self._inner = inner
        self.gates = gates
        self.closed = False
        self._calls = itertools.count(1)
        self.rpc: ModuleType = inner.rpc

    @property
    def endpoint(self) -> str:
        return self._inner.endpoint

    @property
    def endpoints(self) -> list[str]:
        return self._inner.endpoints

    async def gate(
        self,
        call: str,
        make: Callable[[], Awaitable[T]],
        drop: Callable[[T], None] = lambda result: None,
    ) -> T:
        """``await make()`` between the gates, as ``call``; ``drop(result)`` if the task does
        not get past the gate after it (a watch nobody will cancel must not stay open)."""
        ordinal = next(self._calls)
        gates = self.gates
        await gates.at(Point(call, ordinal, BEFORE))
        result = await make()
        after = Point(call, ordinal, AFTER)
        try:
            await gates.at(after)
            if gates.loses(after):
                lost = f"the reply was lost ({after}: a test's gate dropped it)"
                raise RetryableRpc(self.endpoint, grpc.StatusCode.DEADLINE_EXCEEDED, lost)
        except BaseException:
            drop(result)
            raise
        return result

    async def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return await self.gate(
            f"kv.{method}", lambda: self._inner.kv(method, request, timeout, what)
        )

    async def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return await self.gate(
            f"lease.{method}", lambda: self._inner.lease(method, request, timeout, what)
        )

    async def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        return await self.gate(
            "keep_alive", lambda: self._inner.keep_alive(lease_id, timeout, what)
        )

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncWatch:
        """The transport's ``watch(key, range_end, start_revision, timeout, what, *,
        no_put=False)``."""
        return await self.gate(
            "watch", lambda: self._inner.watch(*args, **kwargs), lambda watch: watch.cancel()
        )

    async def close(self) -> None:
        self.closed = True
        await self._inner.close()


class GatedLessor(AsyncEtcdLessor):
    """An :class:`~lessor.etcd.AsyncEtcdLessor` (same arguments) whose calls to etcd pass
    :attr:`gated`'s gates (none held at first: put a :class:`Gates` of the test's in
    ``gated.gates``), and so do the waits between them (``"wait.Wait"``, a pause between two
    attempts, and ``"wait.WaitTurn"``, an acquisition queued behind its section's leader): so
    every await point of an acquisition is a point of the gates. Its sections' shells are in
    :attr:`shells`, for a test to see who waits at a section's gate
    (``shells[section_id].gate.queued``)."""

    gated: GatedTransport
    shells: dict[str, AsyncSectionShell]

    def _connect(self, options: Options) -> AsyncTransport:
        self.gated = GatedTransport(super()._connect(options), Gates())
        return self.gated

    def _new_section(self, section_id: str) -> AsyncSectionShell:
        shell = super()._new_section(section_id)
        perform = shell.perform

        async def gated(op: Op) -> Any:
            if isinstance(op, Wait | WaitTurn):
                return await self.gated.gate(f"wait.{type(op).__name__}", lambda: perform(op))
            return await perform(op)

        shell.perform = gated  # type: ignore[method-assign]  # what its drive() calls
        self.shells[section_id] = shell
        return shell

    def _prepare(self) -> None:
        super()._prepare()
        self.shells = {}
