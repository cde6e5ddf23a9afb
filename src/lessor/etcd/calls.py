"""Calls to etcd as values, and the two ways to make them: on this thread, or awaited.

What to send to etcd and what its answers mean is decided once, by generators that yield a
:class:`Unary` or a :class:`KeepAlive` and receive the response (or have the failure thrown
into them): the Txns of a section (``state.py``) and the etcd leases of a lessor
(``leases.py``). :func:`run` makes those calls through a synchronous
:class:`~lessor.etcd.transport.Transport`; :func:`arun` awaits them through an
:class:`~lessor.etcd.aio_transport.AsyncTransport`; both send them through one loop
(:func:`_make`). Neither decides anything: a failed call, or an exception that reaches the
caller while it waits (KeyboardInterrupt, a task's cancellation), is thrown into the
generator, which knows what it means.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from lessor.etcd.aio_transport import AsyncTransport
    from lessor.etcd.transport import Transport

__all__ = ["Call", "Calls", "KeepAlive", "Unary", "arun", "blocking", "run"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Unary:
    """One unary call: ``method`` of etcd's KV or Lease service with ``request``."""

    service: Literal["kv", "lease"]
    method: str
    request: Any
    timeout: float
    what: str  # for error messages: what the call was for


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """One ``LeaseKeepAlive`` round trip for ``lease_id``; the response is the renewed TTL."""

    lease_id: int
    timeout: float
    what: str


Call = Unary | KeepAlive

Calls = Generator[Call, Any, T]
"""A piece of logic that talks to etcd: yields calls, receives their responses, returns a T."""


def run(transport: Transport, calls: Calls[T]) -> T:
    """Make ``calls``' calls through ``transport`` on this thread; what ``calls`` returns."""

    async def send(call: Call) -> Any:  # never suspends: the transport blocks instead
        if isinstance(call, Unary):
            method = transport.kv if call.service == "kv" else transport.lease
            return method(call.method, call.request, call.timeout, call.what)
        return transport.keep_alive(call.lease_id, call.timeout, call.what)

    return blocking(_make(calls, send))


async def arun(transport: AsyncTransport, calls: Calls[T]) -> T:
    """Await ``calls``' calls through ``transport``; what ``calls`` returns. A cancellation
    that arrives while a call is awaited is thrown into ``calls`` like any failure."""

    async def send(call: Call) -> Any:
        if isinstance(call, Unary):
            method = transport.kv if call.service == "kv" else transport.lease
            return await method(call.method, call.request, call.timeout, call.what)
        return await transport.keep_alive(call.lease_id, call.timeout, call.what)

    return await _make(calls, send)


async def _make(calls: Calls[T], send: Callable[[Call], Awaitable[Any]]) -> T:
    """Send each call ``calls`` yields, and hand it the response or throw the failure in."""
    response: Any = None
    error: BaseException | None = None
    while True:
        try:
            call = calls.send(response) if error is None else calls.throw(error)
        except StopIteration as end:
            return end.value  # type: ignore[no-any-return]
        response, error = None, None
        try:
            response = await send(call)
        except BaseException as e:
            error = e


def blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end on this thread, with no event loop: for a coroutine whose
    awaits never suspend, because what it awaits blocks instead (the threaded shell's calls
    and operations). That is how the threaded and the asyncio shells share one loop of code
    (:func:`_make` here, ``drive.py``) that only the asyncio one suspends in."""
    try:
        coroutine.send(None)
    except StopIteration as end:
        return end.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a coroutine run by blocking() suspended: it awaited real asyncio work")
