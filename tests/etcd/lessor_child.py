"""A lessor client in a process of its own, driven by tests/etcd/test_crash.py and
tests/etcd/test_contention.py through its stdin and stdout.

    python lessor_child.py crash '<json config>'
    python lessor_child.py contend '<json config>'

Both modes build one ``EtcdLessor``, print ``ready`` and wait for a ``go`` line on stdin, so
the parent decides when the work starts:

* ``crash`` acquires one lease, prints ``{"token": ..., "ranges": [...]}`` and then blocks on
  stdin, holding the lease, until the parent kills it.
* ``contend`` runs threads that lease random ranges of one section until a time limit, writes
  every acquisition (or failed one, with its ``error``) as a line of JSON to a file, prints
  ``done <count>`` and exits 0, or 1 if any acquisition raised (the first tracebacks go to
  stderr).
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import traceback
from typing import Any

from lessor import Context, Partition, SortedPartitions, fencing_token
from lessor.etcd import EtcdLessor


def _await_go() -> bool:
    print("ready", flush=True)
    return sys.stdin.readline().strip() == "go"


def crash(cfg: dict[str, Any]) -> int:
    lessor = EtcdLessor(cfg["endpoints"], prefix=cfg["prefix"])
    part = Partition.from_string(cfg["range"])
    if not _await_go():
        return 2
    scope = lessor.lease(cfg["section"], part, cfg["dur"])
    lease = scope.__enter__()  # never exited: this process dies holding the lease
    print(json.dumps({"token": lease.token, "ranges": lease.partitions.to_strings()}), flush=True)
    sys.stdin.readline()  # blocks until SIGKILL (or until the parent closes our stdin)
    os._exit(0)  # even then, give nothing back


def contend(cfg: dict[str, Any]) -> int:
    lessor = EtcdLessor(cfg["endpoints"], prefix=cfg["prefix"])
    worker: int = cfg["worker"]
    section: str = cfg["section"]
    universe: int = cfg["universe"]
    dur: float = cfg["dur"]
    out = open(cfg["out"], "w", encoding="utf-8")  # noqa: SIM115  (closed below, after join)
    out_lock = threading.Lock()
    failures: list[str] = []
    counts = [0] * cfg["threads"]
    if not _await_go():
        return 2
    stop = time.monotonic() + cfg["seconds"]

    def run(thread: int) -> None:
        rng = random.Random(f"{cfg['seed']}-{worker}-{thread}")

        def work(ctx: Context, parts: SortedPartitions) -> dict[str, Any]:
            start = time.monotonic()
            ctx.wait(rng.uniform(0, 0.003))  # the work
            deadline = ctx.deadline
            assert deadline is not None
            return {
                "worker": worker,
                "thread": thread,
                "ranges": parts.to_strings(),
                "start": start,
                "end": min(time.monotonic(), deadline),
                "token": fencing_token(ctx),
            }

        while time.monotonic() < stop:
            a, b = sorted(rng.sample(range(universe + 1), 2))
            asked = time.monotonic()
            try:
                record = lessor.with_lease(
                    Context.background(), section, Partition(a, b), dur, work
                )
            except Exception as e:  # recorded, and the process fails; the thread goes on
                failures.append(f"worker {worker} thread {thread}:\n{traceback.format_exc()}")
                record = {"worker": worker, "thread": thread, "error": repr(e)}
            record["asked"] = asked
            record["answered"] = time.monotonic()
            line = json.dumps(record)
            with out_lock:
                out.write(line + "\n")
            counts[thread] += 1

    threads = [threading.Thread(target=run, args=(t,)) for t in range(cfg["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    lessor.close()
    for failure in failures[:5]:
        print(failure, file=sys.stderr, flush=True)
    if len(failures) > 5:
        print(f"... and {len(failures) - 5} more failed acquisitions", file=sys.stderr)
    print(f"done {sum(counts)}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    modes = {"crash": crash, "contend": contend}
    sys.exit(modes[sys.argv[1]](json.loads(sys.argv[2])))
