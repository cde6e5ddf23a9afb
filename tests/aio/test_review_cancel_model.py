"""Adversarial review of the asyncio etcd lessor: many tasks, random cancellations at every
await, on the in-memory etcd model (calls in flight across awaits, cancelled ones that commit
anyway). Invariants checked: no two live entries in etcd overlap; no two bodies inside their
leases hold a common key; fencing tokens strictly increase per key; at the end nothing is held
and nothing hangs."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from lessor import LessorError, Partition
from lessor.aio.give_backs import give_backs
from lessor.etcd import section as codec
from lessor.etcd.keys import SectionKeys
from tests.support.aio_model import AsyncModelTransport, model, model_lessor
from tests.support.etcd_model import EtcdModel
from tests.support.holdings import Holdings, overlapping

BOUND = 30.0


def live(etcd: EtcdModel, prefix: str, sid: str) -> list[codec.Entry]:
    keys = SectionKeys.of(prefix, sid)
    raw = etcd.kvs.get(keys.value)
    if raw is None:
        return []
    return [e for e in codec.decode(sid, raw.value) if keys.marker(e.lease, e.seq) in etcd.kvs]


def ranges(entry: codec.Entry) -> list[tuple[int, int]]:
    return [(p.low, p.high) for p in entry.ranges]


class Checker(Holdings):
    """:class:`Holdings`, and the section's live entries as the etcd model holds them."""

    def __init__(self, etcd: EtcdModel, prefix: str, sid: str) -> None:
        super().__init__()
        self.etcd, self.prefix, self.sid = etcd, prefix, sid

    def state(self) -> None:
        entries = live(self.etcd, self.prefix, self.sid)
        for i, a in enumerate(entries):
            for b in entries[i + 1 :]:
                if overlapping(ranges(a), ranges(b)):
                    self.violations.append(f"live entries overlap: {a} {b}")


async def _stress(seed: int, workers: int = 8, rounds: int = 400, faults: float = 0.0) -> None:
    rng = random.Random(seed)
    etcd = model()
    transport = AsyncModelTransport(etcd, rng, faults=faults)
    lessor = model_lessor(transport, prefix="/r/", acquire_timeout=5.0)
    check = Checker(etcd, "/r/", "s")
    ids = iter(range(10**9))
    names = iter(range(10**9))

    async def one() -> None:
        me = next(ids)
        lo = rng.randrange(0, 40)
        part = Partition(lo, lo + rng.randrange(1, 20))
        try:
            async with lessor.lease("s", part, 20.0) as lease:
                check.enter(me, lease.token, [(p.low, p.high) for p in lease.partitions])
                try:
                    for _ in range(rng.randrange(4)):
                        await asyncio.sleep(0)
                        check.state()
                finally:
                    check.leave(me)
        except asyncio.CancelledError:
            pass
        except LessorError:
            if not faults:
                raise

    tasks: set[asyncio.Task[None]] = set()
    for _ in range(rounds):
        while len(tasks) < workers:
            t = asyncio.create_task(one(), name=f"{next(names):09d}")
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.sleep(0)
        check.state()
        if rng.random() < 0.3 and tasks:
            victim = rng.choice(sorted(tasks, key=lambda t: t.get_name()))
            victim.cancel()
            if rng.random() < 0.2:  # a second cancel on the way out
                await asyncio.sleep(0)
                victim.cancel()
    async with asyncio.timeout(BOUND):
        await asyncio.gather(*tasks, return_exceptions=True)
        await give_backs(lessor).wait()
        await lessor._clean_ups.join(BOUND)
    # before closing (which revokes the pool's lease): every marker was deleted, or (when a
    # call failed) is on a retired etcd lease, never renewed again, that ends at its TTL
    assert check.violations == []
    left = live(etcd, "/r/", "s")
    if faults:
        current = lessor._pool._current
        renewable = None if current is None or current.retired else current.id
        assert [e for e in left if e.lease == renewable] == [], (
            left,
            current,
            transport.cancelled_after_apply[-5:],
        )
    else:
        assert left == []
    async with asyncio.timeout(BOUND):
        await lessor.aclose()
    # everything given back and cleaned up: nothing of ours left held in etcd
    assert check.violations == []
    assert live(etcd, "/r/", "s") == []


@pytest.mark.parametrize("seed", range(6))
async def test_random_cancellations_leave_nothing_held_and_never_overlap(seed: int) -> None:
    await _stress(seed)


async def _timed_stress(seed: int, workers: int = 8, seconds: float = 2.0) -> None:
    """Short leases in real time: bodies that overrun (cancelled at their deadline, their
    markers deleted by the reaper's timers), contexts cancelled, tasks cancelled, and the
    lessor closed while acquisitions are under way."""
    from lessor import Context  # noqa: PLC0415

    rng = random.Random(seed)
    etcd = model()
    transport = AsyncModelTransport(etcd, rng)
    lessor = model_lessor(transport, prefix="/r/", acquire_timeout=1.0, margin=0.05)
    check = Checker(etcd, "/r/", "s")
    ids = iter(range(10**9))
    names = iter(range(10**9))
    errors: list[BaseException] = []
    closing = False

    async def one() -> None:
        me = next(ids)
        lo = rng.randrange(0, 40)
        part = Partition(lo, lo + rng.randrange(1, 20))
        ctx = Context.background()
        if rng.random() < 0.2:
            asyncio.get_running_loop().call_later(rng.random() * 0.2, ctx.cancel)
        try:
            async with lessor.lease("s", part, rng.choice([0.05, 0.1, 0.3]), ctx=ctx) as lease:
                check.enter(me, lease.token, [(p.low, p.high) for p in lease.partitions],
                            lease.deadline)  # fmt: skip
                try:
                    await asyncio.sleep(rng.random() * 0.2)
                    check.state()
                finally:
                    check.leave(me)
        except asyncio.CancelledError:
            pass
        except Exception as e:
            if not (closing or type(e).__name__ in ("DeadlineExceeded", "Cancelled")):
                errors.append(e)

    tasks: set[asyncio.Task[None]] = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        while len(tasks) < workers:
            t = asyncio.create_task(one(), name=f"{next(names):09d}")
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.sleep(rng.random() * 0.01)
        check.state()
        if rng.random() < 0.2 and tasks:
            victim = rng.choice(sorted(tasks, key=lambda t: t.get_name()))
            victim.cancel()
    closing = True
    async with asyncio.timeout(BOUND):
        await lessor.aclose()  # while acquisitions are under way
        await asyncio.gather(*tasks, return_exceptions=True)
        while lessor._usage.in_use:  # the last one shuts the lessor down
            await asyncio.sleep(0.01)
        await lessor._clean_ups.join(BOUND)
    assert check.violations == []
    assert errors == []
    assert live(etcd, "/r/", "s") == []


@pytest.mark.parametrize("seed", range(4))
async def test_short_leases_cancels_and_closing_leave_nothing_held(seed: int) -> None:
    await _timed_stress(seed)
