"""The benchmark's asyncio contender: tasks of one event loop on an ``AsyncEtcdLessor``.

A ``bench_worker.py`` process whose scenario has ``aio_tasks`` builds one :class:`AioContender`.
It keeps an event loop running on a thread of its own, as an asyncio program's loop runs, with
one :class:`lessor.etcd.AsyncEtcdLessor` on it (the same settings as the worker's
``EtcdLessor``, under a prefix of its own). In each round, every task cycles from the runner's
start to its end as fast as it can::

    async with lessors.lease(section, part, dur) as lease:
        pass

Task ``i`` of ``n`` works on section ``s{i % sections}`` and asks for the same slot of it every
time: the key space cut into ``ceil(n / sections)`` equal slots, slot ``i // sections``. So
no two tasks ask for a common key (every grant is a whole slot, as every grant of the threaded
S2 is a whole section), while the tasks that share a section queue at its gate and are granted
together by one swap, which is what a thousand tasks of one process are expected to gain.
With one task and one section this is S1's cycle.

Each task keeps the counters of a :class:`bench_worker.ThreadRecord` (its cycles, errors and
holdings, for the runner's overlap check); the acquisition latencies of every task go to one
histogram, since the loop runs them all on one thread.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from hdrh.histogram import HdrHistogram

from lessor.etcd import AsyncEtcdLessor
from lessor.partition import Partition

if TYPE_CHECKING:
    from bench_worker import ThreadRecord
    from lessor.aio.contract import AsyncLessor

__all__ = ["AioContender", "task_layout"]

T = TypeVar("T")


def task_layout(tasks: int, sections: int, universe: Partition) -> list[tuple[str, Partition]]:
    """Each task's section and the part it asks for; see the module documentation."""
    width = (universe.high - universe.low) // math.ceil(tasks / sections)

    def slot(k: int) -> Partition:
        low = universe.low + k * width
        return Partition(low, low + width)

    return [(f"s{i % sections}", slot(i // sections)) for i in range(tasks)]


class AioContender:
    """``tasks`` asyncio tasks on one ``AsyncEtcdLessor``, on an event loop of their own."""

    def __init__(
        self,
        *,
        tasks: int,
        sections: int,
        universe: Partition,
        dur: float,
        endpoints: list[str],
        prefix: str,
        holder: str,
        record: Callable[..., ThreadRecord],
        histogram: Callable[[], HdrHistogram],
    ) -> None:
        # bench_worker's record and histogram, passed in: that module runs as __main__.
        self._record, self._histogram = record, histogram
        self.layout = task_layout(tasks, sections, universe)
        self.dur = dur
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bench asyncio loop", daemon=True
        )
        self._thread.start()

        async def connect() -> AsyncLessor:  # on the loop that will use it
            return AsyncEtcdLessor(endpoints, prefix=prefix, holder=holder, endpoint_order="given")

        self.lessor = self._call(connect())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def run(self, start: float, end: float) -> list[ThreadRecord]:
        """Every task cycles from ``start`` to ``end`` (:func:`time.monotonic`); their records."""
        return self._call(self._run(start, end))

    async def _run(self, start: float, end: float) -> list[ThreadRecord]:
        histogram = self._histogram()
        records = [
            self._record(i, [section], histogram=histogram)
            for i, (section, _) in enumerate(self.layout)
        ]
        wait = start - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # every process starts at the runner's instant
        for rec in records:
            rec.last = start
        parts = [part for _, part in self.layout]
        await asyncio.gather(*map(self._cycles, records, parts, [end] * len(records)))
        return records

    async def _cycles(self, rec: ThreadRecord, part: Partition, end: float) -> None:
        lessor, dur, section = self.lessor, self.dur, rec.sections[0]
        while (started := time.monotonic()) < end:
            try:
                async with lessor.lease(section, part, dur) as lease:
                    got = held_until = time.monotonic()  # the body is empty
            except Exception as e:
                if rec.failed(e):
                    return
            else:
                rec.lessor_cycle(0, part, lease, started=started, got=got, until=held_until)

    def close(self) -> None:
        """Close the lessor (its give-backs awaited), then stop the loop and its thread."""
        try:
            self._call(self.lessor.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()
