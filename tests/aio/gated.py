"""An aio memory lessor whose acquisitions and give-backs wait at gates a test opens, so that a
test can cancel a lease's task at the exact step it wants (no sleeps)."""

from __future__ import annotations

import asyncio

from lessor import Context, Grant, Partition
from lessor.aio import AsyncMemoryLessor


class Gated(AsyncMemoryLessor):
    """``_acquire`` waits for ``grant`` and ``_release`` for ``release`` (both open unless
    closed by the test); ``acquiring`` and ``releasing`` are set when each has begun.

    A ``stubborn`` acquisition cannot be called off once begun (an RPC on the wire): it
    swallows the first cancel and still grants when ``grant`` opens (a second cancel, such as
    the one :func:`asyncio.run` sends on its way out, ends it). ``granted`` and ``released`` list
    the tokens in order.
    """

    def __init__(self, *, stubborn: bool = False) -> None:
        super().__init__()
        self.stubborn = stubborn
        self.grant, self.release = asyncio.Event(), asyncio.Event()
        self.grant.set()
        self.release.set()
        self.acquiring, self.releasing = asyncio.Event(), asyncio.Event()
        self.cancels_swallowed = 0
        self.granted: list[int] = []
        self.released: list[int] = []
        self.closed = False

    async def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        self.acquiring.set()
        while True:
            try:
                await self.grant.wait()
                break
            except asyncio.CancelledError:
                if not self.stubborn or self.cancels_swallowed:
                    raise
                self.cancels_swallowed += 1
        grant = await super()._acquire(ctx, section_id, part, dur)
        self.granted.append(grant.token)
        return grant

    async def _release(self, grant: Grant) -> None:
        self.releasing.set()
        await self.release.wait()
        await super()._release(grant)
        self.released.append(grant.token)

    async def _aclose(self) -> None:
        self.closed = True
