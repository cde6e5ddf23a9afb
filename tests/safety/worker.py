"""A safety-suite worker: threads leasing random ranges of a few sections, recording all.

    python worker.py '<json config>'

Prints ``ready``, waits for ``go`` on stdin, then for ``seconds`` each thread leases a random
range of a random section through one ``EtcdLessor`` and holds it for a random time. Every
attempt becomes one JSON line in ``out``: a grant with ``ranges``, ``start`` (callback entry),
``end`` (the earlier of callback exit and the lease deadline) and ``token``; or a failure
with ``error``. Failures are expected while faults are injected: the thread waits a little
and goes on. Exits 0 after ``seconds`` (and prints ``done``).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from typing import Any

from lessor import Context, LessorError, Partition, SortedPartitions, fencing_token
from lessor.etcd import EtcdLessor


def main(cfg: dict[str, Any]) -> int:
    lessor = EtcdLessor(
        cfg["endpoints"],
        prefix=cfg["prefix"],
        rpc_timeout=cfg["rpc_timeout"],
        endpoint_order=cfg.get("endpoint_order", "random"),
    )
    out = open(cfg["out"], "w", encoding="utf-8")  # noqa: SIM115  (closed after the threads)
    out_lock = threading.Lock()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    stop = time.monotonic() + cfg["seconds"]

    def write(record: dict[str, Any]) -> None:
        line = json.dumps(record)
        with out_lock:
            out.write(line + "\n")
            out.flush()  # the test may SIGKILL us: keep what happened

    def run(thread: int) -> None:
        rng = random.Random(f"{cfg['seed']}-{cfg['worker']}-{thread}")

        def work(ctx: Context, parts: SortedPartitions) -> dict[str, Any]:
            start = time.monotonic()
            ctx.wait(rng.uniform(0, cfg["hold"]))  # the work; a SIGSTOP may land here
            deadline = ctx.deadline
            assert deadline is not None
            return {
                "ranges": parts.to_strings(),
                "start": start,
                "end": min(time.monotonic(), deadline),
                "token": fencing_token(ctx),
            }

        while time.monotonic() < stop:
            section = rng.choice(cfg["sections"])
            a, b = sorted(rng.sample(range(cfg["universe"] + 1), 2))
            asked = time.monotonic()
            base = {"worker": cfg["worker"], "thread": thread, "section": section, "asked": asked}
            try:
                ctx = Context.background().with_timeout(cfg["acquire_within"])
                record = lessor.with_lease(ctx, section, Partition(a, b), cfg["dur"], work)
            except LessorError as e:
                write(base | {"error": f"{type(e).__name__}: {e}", "answered": time.monotonic()})
                Context.background().wait(rng.uniform(0.01, 0.05))  # back off a little
                continue
            write(base | record | {"answered": time.monotonic()})

    threads = [threading.Thread(target=run, args=(t,)) for t in range(cfg["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    lessor.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
