"""The ``"etcd"`` lessor for asyncio programs: :class:`AsyncEtcdLessor`.

The same lessor as :class:`~lessor.etcd.lessor.EtcdLessor` (its documentation holds for this
one: data model, recovery, fencing tokens, settings), on one event loop. Every decision is the
acquisition core's (``core/``), the very code the threaded lessor runs; the asyncio shell
(``aio_shell.py``) awaits its operations through ``grpc.aio`` (``aio_transport.py``), a
clean-up is a task, and an overrun grant is ended at its deadline by a timer.

What asyncio adds is in :class:`lessor.aio.AsyncLessor`: the body of a lease is cancelled at
the lease's deadline. A task cancelled while it acquires leaves nothing held: its
cancellation is thrown into the core like any other exception, and whatever a swap of its
granted is given back, at once or by a clean-up task.

A lessor belongs to the event loop it is first used on: its connections, clean-up tasks and
timers live there. A call from any other loop raises :class:`RuntimeError` before it does
anything. Use one lessor per loop (the registry's factory keeps one per loop and settings).
"""

from __future__ import annotations

import asyncio
import logging

from lessor.aio.contract import AsyncLessor
from lessor.context import Context
from lessor.contract import Grant
from lessor.etcd import core
from lessor.etcd.aio_channels import AsyncChannels
from lessor.etcd.aio_client_transport import AsyncClientTransport
from lessor.etcd.aio_shell import AsyncCleanUps, AsyncReaper, AsyncSectionShell
from lessor.etcd.aio_transport import AsyncTransport
from lessor.etcd.base import EtcdLessorBase
from lessor.etcd.calls import arun
from lessor.etcd.keys import SectionKeys
from lessor.etcd.options import Options
from lessor.partition import Partition

__all__ = ["AsyncEtcdLessor"]

log = logging.getLogger("lessor")


class AsyncEtcdLessor(EtcdLessorBase[AsyncTransport, AsyncSectionShell], AsyncLessor):
    """Leases ranges through an etcd cluster, for asyncio programs.

    Takes the same arguments, with the same meaning, defaults and errors, as
    :class:`~lessor.etcd.lessor.EtcdLessor`. ``aclose()`` (or ``async with``) refuses new
    acquisitions; the lessor shuts down once its leases held or being acquired have ended.
    """

    def _prepare(self) -> None:
        self._reaper = AsyncReaper(self._expire)
        self._clean_ups = AsyncCleanUps()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of its first use

    def _own_loop(self) -> None:
        """Bind this lessor to the running loop at its first use; refuse any other loop.

        Its connections (``grpc.aio`` channels), clean-up tasks and timers serve one loop
        only. A task of another loop would share the section gates with this loop's tasks,
        be granted by their leader's swap, and then fail to give its ranges back: refused
        here, before it joins anything."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is None:
                self._loop = loop
            if self._loop is loop:
                return
            closed = " (now closed)" if self._loop.is_closed() else ""
        raise RuntimeError(
            f"this AsyncEtcdLessor belongs to the event loop it was first used on{closed}, "
            "not to the running one: use one lessor per event loop (lessor.aio.get(ctx, "
            '"etcd") called inside the loop returns that loop\'s own)'
        )

    def _connect(self, options: Options) -> AsyncTransport:
        if options.endpoints is None:
            return AsyncClientTransport(options.client)
        return AsyncChannels(options.endpoints, tls=options.tls, user=options.user,
                             password=options.password,
                             endpoint_order=options.endpoint_order)  # fmt: skip

    def _new_section(self, section_id: str) -> AsyncSectionShell:
        keys = SectionKeys.of(self._prefix, section_id)
        return AsyncSectionShell(
            self._transport, keys, self._pool, reaper=self._reaper, clean_ups=self._clean_ups
        )

    # -- AsyncLessor -------------------------------------------------------------------------

    async def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        self._own_loop()
        self._usage.begin()
        grant: Grant | None = None
        try:
            grant = await self._acquire_open(ctx, section_id, part, dur)
            return grant
        finally:
            if grant is None or grant.handle is None:
                await self._done_with_one()  # nothing to release: this acquisition is over

    async def _acquire_open(
        self, ctx: Context, section_id: str, part: Partition, dur: float
    ) -> Grant:
        turn = asyncio.Event()
        waiter = self._waiter(ctx, section_id, part, dur, turn.set)
        try:
            section, leads = self._join(section_id, waiter)
            grant: Grant = await section.drive(
                self._acquisition(section, waiter, leads=leads, turn=turn)
            )
            return grant
        except BaseException:
            # Wherever it arrived (a cancellation included): out of the gate, nothing held.
            shell, steps = self._giving_up(section_id, waiter)
            await shell.drive(steps)
            raise

    async def _release(self, grant: Grant) -> None:
        turn = asyncio.Event()
        ending = self._ending(grant, turn)
        if ending is None:
            return  # an empty lease wrote nothing
        section, steps = ending
        try:
            await section.drive(steps)
        finally:
            assert isinstance(grant.handle, core.Held)
            self._reaper.forget(grant.handle)
            await self._done_with_one()

    async def _done_with_one(self) -> None:
        if self._usage.end():
            await self._shut()

    def _expire(self, held: core.Held) -> None:
        """The reaper's: ``held``'s deadline passed before its release; end it apart."""
        section, steps = self._expiry(held)
        section.clean_up(steps)

    async def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """A read of the section, then a watch on its markers (:mod:`lessor.etcd.aio_watch`)."""
        from lessor.etcd.aio_watch import wait_free  # noqa: PLC0415  (only this method's import)

        self._own_loop()
        self._usage.check_open()
        keys = SectionKeys.of(self._prefix, section_id)
        return await wait_free(ctx, self._transport, keys, part, rpc_timeout=self._rpc_timeout)

    async def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """One read of the section (:func:`lessor.etcd.aio_watch.is_held`)."""
        from lessor.etcd.aio_watch import is_held  # noqa: PLC0415  (only this method's import)

        self._own_loop()
        self._usage.check_open()
        keys = SectionKeys.of(self._prefix, section_id)
        return await is_held(ctx, self._transport, keys, part, rpc_timeout=self._rpc_timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    async def _aclose(self) -> None:
        """Refuse new acquisitions (and ``wait_free``). As ``EtcdLessor.close()``: leases held
        and acquisitions under way stay valid, and the lessor shuts down when the last of them
        has ended: at once (awaited here) when there is none.

        From the lessor's own loop only; but once that loop is closed its connections, tasks
        and timers have gone with it, and closing from any loop just refuses what comes."""
        bound = self._loop
        if bound is not None and bound.is_closed():
            self._usage.close()
            return
        self._own_loop()
        if self._usage.close():
            await self._shut()
        elif self._usage.in_use:
            log.info("closing an asyncio etcd lessor once its %d leases held or being "
                     "acquired have ended", self._usage.in_use)  # fmt: skip

    async def _shut(self) -> None:
        self._reaper.close()
        # A clean-up's bound: its deletion's tries (release_timeout), then giving back its
        # etcd lease (one more call of at most release_timeout).
        if not await self._clean_ups.join(2 * self._release_timeout):
            log.info("closing an asyncio etcd lessor before its clean-ups ended (what they "
                     "were clearing ends with its etcd lease)")  # fmt: skip
        try:
            await arun(self._transport, self._pool.close(self._rpc_timeout))
        finally:
            await self._transport.close()
