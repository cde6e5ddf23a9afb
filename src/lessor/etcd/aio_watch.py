"""``wait_free`` and ``is_held`` of the asyncio etcd lessor.

The same steps as the threaded ones (``watch.py``, whose documentation holds here): one read,
then one watch on the section's markers from that read's revision, deletions only; a broken
stream is a new read. The steps are ``watch.waiting``'s, the read is the section's own Txn
(``state.py``), and the answer is ``watch.holding``'s: only the awaiting is here. ``ctx``
ending needs no thread: a task waits on it and cancels the stream in progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from lessor.aio.wait import wait
from lessor.context import Context
from lessor.etcd.aio_transport import AsyncTransport
from lessor.etcd.calls import arun
from lessor.etcd.keys import Owner, SectionKeys
from lessor.etcd.retry import Backoff
from lessor.etcd.state import SectionTxns, Snapshot
from lessor.etcd.transport import Compacted, RetryableRpc
from lessor.etcd.watch import Watching, holding, waiting
from lessor.partition import Partition

__all__ = ["is_held", "wait_free"]

log = logging.getLogger("lessor")


async def wait_free(
    ctx: Context,
    transport: AsyncTransport,
    keys: SectionKeys,
    part: Partition,
    *,
    rpc_timeout: float,
) -> bool:
    """As :func:`lessor.etcd.watch.wait_free`, awaited."""
    what = f"section {keys.section_id!r}: waiting for ranges to come free"
    calls = _Wait(ctx, transport, keys, rpc_timeout, what=what)
    steps = waiting(part)
    step = next(steps)
    try:
        while True:
            if isinstance(step, Watching):
                step = steps.send(await calls.watch(step.held, step.revision))
            else:
                step = steps.send(await calls.read())
    except StopIteration as end:
        return bool(end.value)


async def is_held(
    ctx: Context,
    transport: AsyncTransport,
    keys: SectionKeys,
    part: Partition,
    *,
    rpc_timeout: float,
) -> bool:
    """As :func:`lessor.etcd.watch.is_held`, awaited."""
    what = f"section {keys.section_id!r}: looking for holders"
    snapshot = await _Wait(ctx, transport, keys, rpc_timeout, what=what).read()
    if snapshot is None:
        err = ctx.err
        assert err is not None  # a read gives up only once ctx is done
        raise err
    return bool(holding(snapshot, part))


class _Wait:
    """The calls of one :func:`wait_free` or :func:`is_held`, and its back-off after
    retryable failures (as ``watch._Wait``)."""

    def __init__(
        self, ctx: Context, transport: AsyncTransport, keys: SectionKeys, rpc_timeout: float,
        *, what: str,
    ) -> None:  # fmt: skip
        self._ctx = ctx
        self._transport = transport
        self._keys = keys
        self._txns = SectionTxns(transport.rpc, keys)
        self._rpc_timeout = rpc_timeout
        self._backoff = Backoff()
        self._what = what

    async def read(self) -> Snapshot | None:
        """The section now; None once ``ctx`` is done. Retryable failures are tried again."""
        while not self._ctx.done():
            try:
                return await arun(self._transport, self._txns.read(self._timeout()))
            except RetryableRpc as e:
                log.debug("%s: reading the section failed (%s); trying again", self._what, e)
                if await self._pause():
                    break
        return None

    async def watch(self, held: Mapping[Owner, int], revision: int) -> bool | None:
        """Watch the markers from ``revision + 1``: True when a ``held`` one is deleted, False
        when ``ctx`` is done, None when the stream broke (the section must be read again)."""
        keys = self._keys
        try:
            stream = await self._transport.watch(
                keys.markers, keys.markers_end, revision + 1, self._timeout(), self._what,
                no_put=True,
            )  # fmt: skip
            ended = asyncio.get_running_loop().create_task(wait(self._ctx))
            ended.add_done_callback(lambda _: stream.cancel())
            try:
                self._backoff = Backoff()  # a watch in place: later failures start afresh
                async for event in stream:
                    if event.deleted and keys.owner(event.key) in held:
                        return True
            finally:
                ended.cancel()
                stream.cancel()
            return False  # the stream ends without an error only when ctx is done
        except Compacted as e:
            log.debug("%s: %s; reading the section again", self._what, e)
        except RetryableRpc as e:
            log.debug("%s: watch failed (%s); reading the section again", self._what, e)
            if await self._pause():
                return False
        return False if self._ctx.done() else None

    def _timeout(self) -> float:
        return max(0.001, min(self._rpc_timeout, self._ctx.remaining()))

    async def _pause(self) -> bool:
        """Back off after a retryable failure; whether ``ctx`` is done."""
        return await wait(self._ctx, self._backoff.after_transient(self._ctx.remaining()))
