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

A lessor belongs to the event loop it is first used on; use one per loop (the registry's
factory keeps one per loop and settings).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from lessor.aio.contract import AsyncLessor
from lessor.context import Context
from lessor.contract import Grant
from lessor.etcd import core
from lessor.etcd.aio_channels import AsyncChannels
from lessor.etcd.aio_client_transport import AsyncClientTransport
from lessor.etcd.aio_shell import AsyncCleanUps, AsyncReaper, AsyncSectionShell
from lessor.etcd.aio_transport import AsyncTransport
from lessor.etcd.calls import arun
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import SectionKeys
from lessor.etcd.leases import LeasePool
from lessor.etcd.options import Options
from lessor.etcd.sections import Sections
from lessor.etcd.usage import Usage
from lessor.partition import Partition

__all__ = ["AsyncEtcdLessor"]

log = logging.getLogger("lessor")


class AsyncEtcdLessor(AsyncLessor):
    """Leases ranges through an etcd cluster, for asyncio programs.

    Takes the same arguments, with the same meaning, defaults and errors, as
    :class:`~lessor.etcd.lessor.EtcdLessor`. ``aclose()`` (or ``async with``) refuses new
    acquisitions; the lessor shuts down once its leases held or being acquired have ended.
    """

    backend = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str] | None = None,
        *,
        client: Any = None,
        prefix: str = "/lessor/",
        holder: str | None = None,
        ca_cert: str | None = None,
        cert_cert: str | None = None,
        cert_key: str | None = None,
        user: str | None = None,
        password: str | None = None,
        rpc_timeout: float = 1.0,
        release_timeout: float = 1.0,
        endpoint_order: str = "random",
        acquire_timeout: float = 30.0,
        margin: float = 0.2,
        share_leases: bool = True,
        lease_reuse: float | None = None,
    ) -> None:
        o = Options.check(
            "AsyncEtcdLessor",
            endpoints,
            client=client,
            prefix=prefix,
            holder=holder,
            ca_cert=ca_cert,
            cert_cert=cert_cert,
            cert_key=cert_key,
            user=user,
            password=password,
            rpc_timeout=rpc_timeout,
            release_timeout=release_timeout,
            endpoint_order=endpoint_order,
            acquire_timeout=acquire_timeout,
            margin=margin,
            share_leases=share_leases,
            lease_reuse=lease_reuse,
        )
        self._prefix, self._rpc_timeout = o.prefix, o.rpc_timeout
        self._release_timeout, self._acquire_timeout = o.release_timeout, o.acquire_timeout
        self._transport: AsyncTransport
        if o.endpoints is not None:
            self._transport = AsyncChannels(o.endpoints, tls=o.tls, user=o.user,
                                            password=o.password,
                                            endpoint_order=o.endpoint_order)  # fmt: skip
        else:
            self._transport = AsyncClientTransport(o.client)
        self._pool = LeasePool(self._transport.rpc, margin=o.margin, share=o.share_leases)
        self._config = core.Config(
            holder=o.holder,
            rpc_timeout=o.rpc_timeout,
            release_timeout=o.release_timeout,
            endpoints=len(self._transport.endpoints),
        )
        # A threading lock, never held across an await: the bookkeeping it guards is shared
        # with nothing but this loop's tasks, and the shared Sections takes a lock.
        self._lock = threading.Lock()
        self._sections = Sections(self._new_section, self._lock)
        self._seq = 0
        self._reaper = AsyncReaper(self._expire)
        self._clean_ups = AsyncCleanUps()
        self._usage = Usage(f"the asyncio etcd lessor for {o.prefix!r}")

    @property
    def max_duration(self) -> float:
        """As :attr:`EtcdLessor.max_duration <lessor.etcd.lessor.EtcdLessor.max_duration>`."""
        return self._pool.max_duration

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def endpoint(self) -> str:
        """The etcd endpoint calls currently go to."""
        return self._transport.endpoint

    @property
    def transport(self) -> AsyncTransport:
        """The lessor's connection to etcd; it stays the lessor's to close."""
        return self._transport

    # -- AsyncLessor -------------------------------------------------------------------------

    async def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
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
        waiter: Waiter[core.Member] | None = None
        try:
            with self._lock:
                self._seq += 1
                section = self._sections.get(section_id)
                member = core.Member.of(ctx, part, dur, seq=self._seq, section_id=section_id,
                                        acquire_timeout=self._acquire_timeout)  # fmt: skip
                waiter = Waiter(member, turn.set)
                leads = section.gate.join(waiter)  # joined before any eviction sees the section
                self._sections.evict()
            grant: Grant = await section.drive(
                core.acquire(
                    section.known, section.gate, waiter, leads=leads, turn=turn, config=self._config
                )
            )
            return grant
        except BaseException:
            # Wherever it arrived (a cancellation included), once the waiter exists: out of
            # the gate, nothing held.
            if waiter is not None:
                await section.drive(core.give_up(section.known, section.gate, waiter, self._config))
            raise

    def _new_section(self, section_id: str) -> AsyncSectionShell:
        keys = SectionKeys.of(self._prefix, section_id)
        return AsyncSectionShell(
            self._transport, keys, self._pool, reaper=self._reaper, clean_ups=self._clean_ups
        )

    async def _release(self, grant: Grant) -> None:
        held = grant.handle
        if held is None:
            return  # an empty lease wrote nothing
        assert isinstance(held, core.Held)
        with self._lock:
            section = self._sections.get(held.known.keys.section_id)
        try:
            await section.drive(core.release(held, self._config))
        finally:
            self._reaper.forget(held)
            await self._done_with_one()

    async def _done_with_one(self) -> None:
        if self._usage.end():
            await self._shut()

    def _expire(self, held: core.Held) -> None:
        """The reaper's: ``held``'s deadline passed before its release; end it apart."""
        with self._lock:
            section = self._sections.get(held.known.keys.section_id)
        section.clean_up(core.expire(held, self._config))

    async def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """A read of the section, then a watch on its markers (:mod:`lessor.etcd.aio_watch`)."""
        from lessor.etcd.aio_watch import wait_free  # noqa: PLC0415  (only this method's import)

        self._usage.check_open()
        keys = SectionKeys.of(self._prefix, section_id)
        return await wait_free(ctx, self._transport, keys, part, rpc_timeout=self._rpc_timeout)

    async def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """One read of the section (:func:`lessor.etcd.aio_watch.is_held`)."""
        from lessor.etcd.aio_watch import is_held  # noqa: PLC0415  (only this method's import)

        self._usage.check_open()
        keys = SectionKeys.of(self._prefix, section_id)
        return await is_held(ctx, self._transport, keys, part, rpc_timeout=self._rpc_timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    async def _aclose(self) -> None:
        """Refuse new acquisitions (and ``wait_free``). As ``EtcdLessor.close()``: leases held
        and acquisitions under way stay valid, and the lessor shuts down when the last of them
        has ended: at once (awaited here) when there is none."""
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
