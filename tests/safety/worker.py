"""A safety-suite worker: threads (or asyncio tasks) leasing random ranges of a few sections,
recording all.

    python -m tests.safety.worker '<json config>'     (from the repository's root)

Prints ``ready``, waits for ``go`` on stdin, then for ``seconds`` each thread leases a random
range of a random section through one ``EtcdLessor`` and holds it for a random time
(:class:`tests.support.record.RecordLoop`); with ``"tasks": n`` in the config, ``n`` tasks of
one event loop do the same through one ``AsyncEtcdLessor`` instead
(:class:`tests.support.record.AsyncRecordLoop`). Every attempt becomes one JSON line in ``out``:
a grant with ``ranges``, ``start`` (callback entry), ``end`` (the earlier of callback exit and
the lease deadline) and ``token``; or a failure with ``error``. Failures are expected while
faults are injected: the lane waits a little and goes on. A line on stdin after ``go`` (or its
end) stops the run early. Exits 0 at the end of the run (and prints ``done``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from lessor import LessorError
from lessor.etcd import AsyncEtcdLessor, EtcdLessor
from tests.support.record import AsyncRecordLoop, RecordLoop, Workload


def _stop_on_input() -> threading.Event:
    """An event set by the next line on stdin, or its end."""
    stop = threading.Event()

    def read() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=read, name="stop on input", daemon=True).start()
    return stop


def _options(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"prefix": cfg["prefix"], "rpc_timeout": cfg["rpc_timeout"],
            "endpoint_order": cfg.get("endpoint_order", "random")}  # fmt: skip


async def _tasks(cfg: dict[str, Any], workload: Workload, stop: threading.Event) -> list[str]:
    async with AsyncEtcdLessor(cfg["endpoints"], **_options(cfg)) as lessor:
        _, failures = await AsyncRecordLoop(lessor, workload, cfg["tasks"]).run(stop)
    return failures


def main(cfg: dict[str, Any]) -> int:
    workload = Workload(Path(cfg["out"]), cfg["worker"], cfg["seconds"], cfg["seed"],
                        cfg["sections"], cfg["universe"], cfg["dur"], cfg["hold"],
                        acquire_within=cfg["acquire_within"], expected=(LessorError,))  # fmt: skip
    lessor = None if "tasks" in cfg else EtcdLessor(cfg["endpoints"], **_options(cfg))
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    stop = _stop_on_input()
    if lessor is None:
        failures = asyncio.run(_tasks(cfg, workload, stop))
    else:
        _, failures = RecordLoop(lessor, workload, cfg["threads"]).run(stop)
        lessor.close()
    for failure in failures:  # a bug, not a fault: shown, as an uncaught one was before
        print(failure, file=sys.stderr, flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
