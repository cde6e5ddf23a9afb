"""One asyncio etcd lessor, two event loops (from the review of ``lessor.aio``).

An ``AsyncEtcdLessor``'s connections, clean-up tasks and timers serve one loop. Reached from
a second loop, a task used to share the section gates with the first loop's tasks, was
granted by their leader's swap, and then could not give its ranges back: its marker lived on
the renewed etcd lease. Now the lessor belongs to the loop of its first use and refuses any
other before it joins anything; and the registry's factory, called while no loop runs, no
longer hands every such caller one shared lessor.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from lessor import Context, Partition
from lessor.aio.registry import get as aio_get
from lessor.etcd import AsyncEtcdLessor
from lessor.etcd.keys import SectionKeys
from lessor.etcd.settings import EtcdSettings
from tests.support.etcd_admin import admin_client

BOUND = 30.0


def test_the_factory_gives_callers_outside_a_loop_lessors_of_their_own() -> None:
    settings = EtcdSettings(endpoints=("127.0.0.1:1",), prefix="/two-loops/")
    ctx = Context.background().with_value(EtcdSettings, settings)
    first = aio_get(ctx, "etcd")
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(aio_get(ctx, "etcd")))
    thread.start()
    thread.join(BOUND)
    assert seen[0] is not first

    async def twice() -> tuple[Any, Any]:
        return aio_get(ctx, "etcd"), aio_get(ctx, "etcd")

    a, b = asyncio.run(twice())
    assert a is b and a is not first  # one per running loop


def test_a_second_loop_is_refused_before_it_joins_anything(etcd_server: Any) -> None:
    prefix = "/two-loops/"
    lessor = AsyncEtcdLessor(etcd_server.endpoints, prefix=prefix)
    ctx = Context.background()
    held = threading.Event()
    refusals: list[BaseException] = []

    def loop_b() -> None:
        async def b() -> None:
            calls = [
                lambda: lessor.lease("s", Partition(20, 30), 1.0).__aenter__(),
                lambda: lessor.with_lease(ctx, "s", Partition(20, 30), 1.0, _body),
                lambda: lessor.wait_free(ctx, "s", Partition(0, 10)),
                lambda: lessor.is_held(ctx, "s", Partition(0, 10)),
                lessor.aclose,
            ]
            for call in calls:
                with pytest.raises(RuntimeError, match="one lessor per event loop") as e:
                    await call()
                refusals.append(e.value)

        asyncio.run(b())

    async def loop_a() -> list[bytes]:
        async with lessor.lease("s", Partition(0, 10), 30.0):
            held.set()
            thread = threading.Thread(target=loop_b)
            thread.start()
            await asyncio.to_thread(thread.join, BOUND)
            assert len(refusals) == 5, refusals
            gate = lessor._sections.get("s").gate
            assert not gate.leading and gate.queued == 0  # b never joined
            assert await lessor.is_held(ctx, "s", Partition(5, 6))  # loop A's lessor still works
        async with lessor.lease("s", Partition(20, 30), 1.0):
            pass
        with admin_client(etcd_server.endpoint) as c:
            left = [m.key for _, m in c.get_prefix(SectionKeys.of(prefix, "s").markers)]
        await lessor.aclose()
        return left

    assert asyncio.run(loop_a()) == []


def test_a_lessor_whose_loop_has_ended_can_be_closed_from_another(etcd_server: Any) -> None:
    lessor = AsyncEtcdLessor(etcd_server.endpoints, prefix="/two-loops-closed/")

    async def use() -> None:
        async with lessor.lease("s", Partition(0, 1), 5.0):
            pass

    asyncio.run(use())
    asyncio.run(lessor.aclose())  # its loop is closed: nothing left to shut on it

    async def again() -> None:
        async with lessor.lease("s", Partition(0, 1), 5.0):
            pass

    with pytest.raises(RuntimeError, match="now closed"):
        asyncio.run(again())


async def _body(ctx: Context, parts: Any) -> None:
    return None
