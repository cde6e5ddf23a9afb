"""The record loop of the tests' lease workers: threads lease random ranges and write down every
attempt, for the history checker (:mod:`lessor.testing.history`).

Run by ``tests/etcd/lessor_child.py contend`` (one section, every error a failure) and by
``tests/safety/worker.py`` (several sections while faults are injected: a
:class:`~lessor.LessorError` is expected, recorded, and followed by a short back-off).

Every attempt becomes one JSON line, flushed at once (the test may SIGKILL the process):
``worker``, ``thread``, ``section``, ``asked`` and ``answered`` (:func:`time.monotonic`, one
clock for every process of the machine), and either a grant — ``ranges``, ``start`` (callback
entry), ``end`` (the earlier of callback exit and the lease deadline) and ``token`` — or an
``error``.
"""

from __future__ import annotations

import json
import random
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lessor import Context, Lessor, Partition, SortedPartitions, fencing_token


@dataclass(frozen=True)
class RecordLoop:
    """``threads`` threads of worker ``worker``, each leasing for ``seconds`` a random range of
    ``[0, universe]`` in a random one of ``sections`` for ``dur`` seconds and holding it a
    random time up to ``hold``. ``acquire_within`` bounds each acquisition; ``expected``
    errors are recorded and backed off from; any other is recorded too, and :meth:`run`
    returns its traceback."""

    lessor: Lessor
    out: Path
    worker: int
    threads: int
    seconds: float
    seed: object
    sections: Sequence[str]
    universe: int
    dur: float
    hold: float
    acquire_within: float | None = None
    expected: tuple[type[Exception], ...] = ()
    backoff: tuple[float, float] = (0.01, 0.05)

    def run(self) -> tuple[int, list[str]]:
        """Run the threads to their end; how many attempts were made, and the tracebacks of
        the unexpected errors."""
        failures: list[str] = []
        attempts = [0] * self.threads
        lock = threading.Lock()
        stop = time.monotonic() + self.seconds
        with self.out.open("w", encoding="utf-8") as out:

            def write(record: dict[str, Any]) -> None:
                line = json.dumps(record)
                with lock:
                    out.write(line + "\n")
                    out.flush()  # the test may SIGKILL us: keep what happened

            def loop(thread: int) -> None:
                rng = random.Random(f"{self.seed}-{self.worker}-{thread}")

                def work(ctx: Context, parts: SortedPartitions) -> dict[str, Any]:
                    start = time.monotonic()
                    ctx.wait(rng.uniform(0, self.hold))  # the work; a SIGSTOP may land here
                    deadline = ctx.deadline
                    assert deadline is not None
                    return {
                        "ranges": parts.to_strings(),
                        "start": start,
                        "end": min(time.monotonic(), deadline),
                        "token": fencing_token(ctx),
                    }

                while time.monotonic() < stop:
                    attempts[thread] += 1
                    section = rng.choice(self.sections)
                    a, b = sorted(rng.sample(range(self.universe + 1), 2))
                    base = {"worker": self.worker, "thread": thread, "section": section,
                            "asked": time.monotonic()}  # fmt: skip
                    ctx = Context.background()
                    if self.acquire_within is not None:
                        ctx = ctx.with_timeout(self.acquire_within)
                    try:
                        record = self.lessor.with_lease(ctx, section, Partition(a, b), self.dur,
                                                        work)  # fmt: skip
                    except Exception as e:
                        write(base | {"error": f"{type(e).__name__}: {e}",
                                      "answered": time.monotonic()})  # fmt: skip
                        if isinstance(e, self.expected):
                            Context.background().wait(rng.uniform(*self.backoff))
                        else:  # the thread goes on; the process fails
                            failures.append(
                                f"worker {self.worker} thread {thread}:\n{traceback.format_exc()}"
                            )
                        continue
                    write(base | record | {"answered": time.monotonic()})

            running = [threading.Thread(target=loop, args=(t,)) for t in range(self.threads)]
            for t in running:
                t.start()
            for t in running:
                t.join()
        return sum(attempts), failures
