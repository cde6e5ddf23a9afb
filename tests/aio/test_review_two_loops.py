"""Adversarial review: one AsyncEtcdLessor reached from two event loops.

``lessor.aio.get(ctx, "etcd")`` keeps one lessor per settings and loop, but a call made while
no loop runs is keyed to no loop (None): every such call, from any thread, gets the same
lessor. Its connections serve the loop of their first call only, yet its section gates are
shared: a task of the second loop queued behind the first loop's acquisitions is granted by
the first loop's leader (group commit), and only its release meets the loop check. The release
then fails (a log line) and the marker stays in etcd, past the release, until the first loop's
timer at the deadline, or the etcd lease's TTL if that loop has ended."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from lessor import Context, Partition
from lessor.aio.registry import get as aio_get
from lessor.etcd import AsyncEtcdLessor
from lessor.etcd.aio_channels import AsyncChannels
from lessor.etcd.aio_transport import AsyncTransport
from lessor.etcd.keys import SectionKeys
from lessor.etcd.options import Options
from lessor.etcd.settings import EtcdSettings
from tests.support.etcd_admin import admin_client

BOUND = 30.0


def test_the_factory_hands_one_lessor_to_every_caller_outside_a_loop() -> None:
    settings = EtcdSettings(endpoints=("127.0.0.1:1",), prefix="/two-loops/")
    ctx = Context.background().with_value(EtcdSettings, settings)
    first = aio_get(ctx, "etcd")
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(aio_get(ctx, "etcd")))
    thread.start()
    thread.join(BOUND)
    # Two threads that will each run their own loop get one lessor, whose connections can
    # serve only one of those loops.
    assert seen[0] is not first


class _HeldSwaps:
    """The first loop's calls wait, before each swap, until the test lets them go."""

    def __init__(self, inner: AsyncTransport, go: threading.Event) -> None:
        self._inner, self._go = inner, go
        self.rpc = inner.rpc

    @property
    def endpoint(self) -> str:
        return self._inner.endpoint

    @property
    def endpoints(self) -> list[str]:
        return self._inner.endpoints

    async def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        if method == "Txn" and list(request.success) and not self._go.is_set():
            await asyncio.to_thread(self._go.wait, BOUND)
        return await self._inner.kv(method, request, timeout, what)

    async def lease(self, *args: Any) -> Any:
        return await self._inner.lease(*args)

    async def keep_alive(self, *args: Any) -> Any:
        return await self._inner.keep_alive(*args)

    async def watch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._inner.watch(*args, **kwargs)

    async def close(self) -> None:
        await self._inner.close()


def test_a_second_loop_is_refused_or_released(etcd_server: Any) -> None:
    """Schedule: loop A's a1 leads and is held before its swap; a2 (loop A) and b (loop B,
    another thread) queue behind it; a1's swap goes; a2 leads and settles [a2, b] in one swap.
    b's body ends; its release goes through channels bound to loop A."""
    go = threading.Event()

    class Lessor(AsyncEtcdLessor):
        def _connect(self, options: Options) -> AsyncTransport:
            assert options.endpoints is not None
            return _HeldSwaps(AsyncChannels(options.endpoints), go)  # type: ignore[return-value]

    prefix = "/review-two-loops/"
    lessor = Lessor(etcd_server.endpoints, prefix=prefix)
    b_done = threading.Event()
    b_outcome: list[Any] = []

    def loop_b() -> None:
        async def b() -> None:
            try:
                async with lessor.lease("s", Partition(20, 30), 1.0) as lease:
                    b_outcome.append(("granted", lease.deadline))
            except BaseException as e:
                b_outcome.append(("raised", e))

        try:
            asyncio.run(b())
        finally:
            b_done.set()

    async def loop_a() -> list[bytes]:
        async def a(lo: int) -> None:
            async with lessor.lease("s", Partition(lo, lo + 10), 1.0):
                pass

        a1 = asyncio.create_task(a(0))
        while not lessor._sections.get("s").gate.leading:
            await asyncio.sleep(0.001)
        a2 = asyncio.create_task(a(10))
        thread = threading.Thread(target=loop_b)
        async with asyncio.timeout(BOUND):
            while lessor._sections.get("s").gate.queued < 1:  # a2 first behind a1
                await asyncio.sleep(0.001)
            thread.start()
            while lessor._sections.get("s").gate.queued < 2:  # a2 and b behind a1
                await asyncio.sleep(0.001)
            go.set()
            await asyncio.gather(a1, a2)
            await asyncio.to_thread(b_done.wait, BOUND)
            thread.join(BOUND)
            if b_outcome[0][0] == "granted":
                # Loop A goes on acquiring another section (renewing the shared etcd lease)
                # until well past b's deadline and an etcd lease's TTL after it.
                until = b_outcome[0][1] + 4.0  # b's deadline, then twice a TTL of 2s
                while time.monotonic() < until:
                    async with lessor.lease("t", Partition(0, 1), 1.0):
                        await asyncio.sleep(0.05)
        keys = SectionKeys.of(prefix, "s")
        with admin_client(etcd_server.endpoint) as c:
            left = [m.key for _, m in c.get_prefix(keys.markers)]
        await lessor.aclose()
        return left

    left = asyncio.run(loop_a())
    kind = b_outcome[0][0]
    # Either b was refused with a clear error, or its ranges came free (at its release, or at
    # the latest at its deadline).
    assert kind == "raised" or left == [], (b_outcome, left)
