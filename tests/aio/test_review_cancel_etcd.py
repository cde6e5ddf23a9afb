"""Adversarial review of the asyncio etcd lessor against a real etcd: many tasks, random
cancellations (so grpc.aio calls are cancelled mid-flight, some after they committed), a tiny
switch interval. Checked: no two bodies inside their leases hold a common key, fencing tokens
strictly increase per key, and once every task and give-back has ended, no marker of ours is
left in etcd (before closing, which would revoke the shared lease)."""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

import pytest

from lessor import Partition
from lessor.aio.give_backs import give_backs
from lessor.etcd import AsyncEtcdLessor
from lessor.etcd.keys import SectionKeys
from tests.support.etcd_admin import admin_client
from tests.support.holdings import Holdings

BOUND = 60.0


def markers(endpoint: str, prefix: str, section_id: str) -> list[bytes]:
    keys = SectionKeys.of(prefix, section_id)
    with admin_client(endpoint) as c:
        return [m.key for _, m in c.get_prefix(keys.markers)]


async def _stress(endpoints: list[str], prefix: str, seed: int, seconds: float = 3.0) -> Any:
    rng = random.Random(seed)
    lessor = AsyncEtcdLessor(endpoints, prefix=prefix, acquire_timeout=5.0)
    check = Holdings()
    ids = iter(range(10**9))

    async def one() -> None:
        me = next(ids)
        lo = rng.randrange(0, 40)
        part = Partition(lo, lo + rng.randrange(1, 20))
        try:
            async with lessor.lease("s", part, 20.0) as lease:
                check.enter(me, lease.token, [(p.low, p.high) for p in lease.partitions],
                            lease.deadline)  # fmt: skip
                try:
                    for _ in range(rng.randrange(3)):
                        await asyncio.sleep(0)
                finally:
                    check.leave(me)
        except asyncio.CancelledError:
            pass

    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        while len(tasks) < 12:
            t = asyncio.create_task(one())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.sleep(rng.random() * 0.004)
        for victim in list(tasks):
            if rng.random() < 0.15:
                victim.cancel()
    async with asyncio.timeout(BOUND):
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await give_backs(lessor).wait()
        await lessor._clean_ups.join(BOUND)
    return lessor, check, results


@pytest.mark.parametrize("seed", range(3))
def test_real_etcd_random_cancellations(etcd_server: Any, seed: int) -> None:
    prefix = f"/review{seed}-{random.randrange(10**9)}/"
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:

        async def main() -> tuple[Any, ...]:
            lessor, check, results = await _stress(etcd_server.endpoints, prefix, seed)
            left = markers(etcd_server.endpoint, prefix, "s")
            async with asyncio.timeout(BOUND):
                await lessor.aclose()
            return check, results, left

        check, results, left = asyncio.run(main())
    finally:
        sys.setswitchinterval(before)
    assert check.violations == []
    assert [r for r in results if r is not None] == []
    assert left == []
