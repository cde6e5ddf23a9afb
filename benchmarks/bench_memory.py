"""The memory of an idle lessor and of a held lease, for the asyncio and the threaded lessor.

    python benchmarks/bench_memory.py ENDPOINT PREFIX --lessor aio|sync [--lessors N] [--leases M]

Prints one JSON object. ``bench.py`` runs it once per lessor, in a process of its own that does
nothing else, against the etcd of its one-member scenarios. Each figure is the growth of this
process's **resident set** (``/proc/self/statm``, after :func:`gc.collect`) while many instances
are alive at once, divided by their number:

* **idle lessor**: ``N`` lessors (``AsyncEtcdLessor`` or ``EtcdLessor``), each connected and
  having done one cycle, ``lease("idle", part, dur): pass``; measured against a first lessor
  that did the same before, so that imports, gRPC's start and first-use caches are not counted;
* **waiting task** (thread, for the threaded lessor): ``M`` tasks blocked on an event, holding
  nothing: what a holder costs by itself;
* **held lease**: the same ``M`` tasks (threads) then each acquire a lease through the first
  lessor and hold it, all at once, on 64 sections in S2's layout (``bench_aio.task_layout``:
  no two ask for a common key); the growth over the waiting tasks, per lease. The first lessor
  did a cycle on every section before, so the figure is the lease's, not its section's.

The resident set, not ``tracemalloc``: an idle lessor is mostly gRPC's C core (its channel, the
connection's buffers, its threads), which ``tracemalloc`` does not see. A delta counts whole
pages and the allocators' slack, which is why it is taken over many instances.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_aio import task_layout
from lessor.etcd import AsyncEtcdLessor, EtcdLessor
from lessor.partition import Partition

SECTIONS = 64
DUR = 60.0  # longer than the measurement, so no lease reaches its deadline during it
WAIT = 120.0  # the longest any step may take
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident() -> int:
    """This process's resident set, in bytes, after a full collection."""
    gc.collect()
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def per(grown: int, n: int) -> float:
    return grown / n if n else float("nan")


# -- the asyncio lessor ------------------------------------------------------------------------


async def aio(endpoint: str, prefix: str, lessors: int, leases: int) -> dict[str, Any]:
    part = Partition(0, 1 << 20)

    async def one_cycle(lessor: AsyncEtcdLessor, section: str) -> None:
        async with lessor.lease(section, part, DUR):
            pass

    first = AsyncEtcdLessor([endpoint], prefix=prefix)
    await one_cycle(first, "idle")
    for s in range(SECTIONS):
        await one_cycle(first, f"s{s}")
    before = resident()
    idle = [AsyncEtcdLessor([endpoint], prefix=prefix) for _ in range(lessors)]
    for lessor in idle:
        await one_cycle(lessor, "idle")
    idle_growth = resident() - before

    go, done = asyncio.Event(), asyncio.Event()
    waiting = held = 0
    all_waiting, all_held = asyncio.Event(), asyncio.Event()

    async def holder(section: str, slot: Partition) -> None:
        nonlocal waiting, held
        waiting += 1
        if waiting == leases:
            all_waiting.set()
        await go.wait()
        async with first.lease(section, slot, DUR) as lease:
            if not lease.partitions:
                raise RuntimeError(f"bench_memory: an empty grant of {slot} in {section}")
            held += 1
            if held == leases:
                all_held.set()
            await done.wait()

    before = resident()
    tasks = [asyncio.create_task(holder(s, p)) for s, p in task_layout(leases, SECTIONS, part)]
    try:
        await asyncio.wait_for(all_waiting.wait(), WAIT)
        waiting_at = resident()
        go.set()
        # A task that failed ends the wait at once instead of after WAIT.
        held_or_failed = asyncio.ensure_future(all_held.wait())
        finished, _ = await asyncio.wait(
            [held_or_failed, *tasks], timeout=WAIT, return_when=asyncio.FIRST_COMPLETED
        )
        if held_or_failed not in finished:
            for t in finished:
                t.result()  # its error
            raise TimeoutError(f"bench_memory: {held} of {leases} leases held after {WAIT:g} s")
        held_at = resident()
    finally:
        done.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    for lessor in (first, *idle):
        await lessor.aclose()
    return figures(lessors, idle_growth, leases, waiting_at - before, held_at - waiting_at)


# -- the threaded lessor -----------------------------------------------------------------------


def sync(endpoint: str, prefix: str, lessors: int, leases: int) -> dict[str, Any]:
    part = Partition(0, 1 << 20)

    def one_cycle(lessor: EtcdLessor, section: str) -> None:
        with lessor.lease(section, part, DUR):
            pass

    first = EtcdLessor([endpoint], prefix=prefix)
    one_cycle(first, "idle")
    for s in range(SECTIONS):
        one_cycle(first, f"s{s}")
    before = resident()
    idle = [EtcdLessor([endpoint], prefix=prefix) for _ in range(lessors)]
    for lessor in idle:
        one_cycle(lessor, "idle")
    idle_growth = resident() - before

    go, done = threading.Event(), threading.Event()
    counted = threading.Condition()
    counts = {"waiting": 0, "held": 0, "failed": 0}
    errors: list[BaseException] = []

    def count(what: str) -> None:
        with counted:
            counts[what] += 1
            counted.notify_all()

    def holder(section: str, slot: Partition) -> None:
        count("waiting")
        go.wait()
        try:
            with first.lease(section, slot, DUR) as lease:
                if not lease.partitions:
                    raise RuntimeError(f"bench_memory: an empty grant of {slot} in {section}")
                count("held")
                done.wait()
        except BaseException as e:
            errors.append(e)
            count("failed")

    def reached(what: str) -> None:
        with counted:
            if not counted.wait_for(lambda: counts[what] + counts["failed"] >= leases, WAIT):
                raise TimeoutError(f"bench_memory: {counts[what]} of {leases} {what} after "
                                   f"{WAIT:g} s")  # fmt: skip
        if errors:
            raise errors[0]

    before = resident()
    threads = [
        threading.Thread(target=holder, args=(s, p), daemon=True)
        for s, p in task_layout(leases, SECTIONS, part)
    ]
    for t in threads:
        t.start()
    try:
        reached("waiting")
        waiting_at = resident()
        go.set()
        reached("held")
        held_at = resident()
    finally:
        go.set()
        done.set()
        for t in threads:
            t.join(WAIT)
    for lessor in (first, *idle):
        lessor.close()
    return figures(lessors, idle_growth, leases, waiting_at - before, held_at - waiting_at)


def figures(
    lessors: int, idle_growth: int, leases: int, waiting_growth: int, held_growth: int
) -> dict[str, Any]:
    return {
        "method": "RSS growth (/proc/self/statm) over many at once, per instance",
        "idle_lessors": lessors,
        "idle_lessor_bytes": per(idle_growth, lessors),
        "held_leases": leases,
        "waiting_holder_bytes": per(waiting_growth, leases),
        "held_lease_bytes": per(held_growth, leases),
    }


MEASURE: dict[str, Callable[[str, str, int, int], dict[str, Any]]] = {
    "aio": lambda *a: asyncio.run(aio(*a)),
    "sync": sync,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="host:port of etcd")
    parser.add_argument("prefix", help="the lessors' key prefix, unused by anyone else")
    parser.add_argument("--lessor", choices=sorted(MEASURE), required=True)
    parser.add_argument("--lessors", type=int, default=20, help="idle lessors (20)")
    parser.add_argument("--leases", type=int, default=1000, help="leases held at once (1000)")
    args = parser.parse_args()
    began = time.monotonic()
    result = MEASURE[args.lessor](args.endpoint, args.prefix, args.lessors, args.leases)
    result |= {"lessor": args.lessor, "seconds": time.monotonic() - began}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
