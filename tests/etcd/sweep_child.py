"""A sweeper in a process of its own, driven by tests/etcd/test_sweep.py.

    python sweep_child.py sweep '<json config>'

Builds an ``EtcdLessor`` and a :class:`lessor.sweep.Sweeper` over a SQLite table of rows
(``rows(id, done, fence)``), prints ``ready`` and waits for ``go`` on stdin. Then it sweeps
until a ``stop`` line (or the end of stdin):

* ``scan`` reads the ids of the rows not yet done in the shard;
* ``process`` prints ``working <token> <id>,<id>,...`` when a batch starts (so the
  parent can SIGKILL it mid-batch, holding its lease), then for each row does a little
  work, and in one transaction marks the row done, fenced by the lease's token (a row
  already written under a newer token is not taken), and logs ``(item, holder, token,
  start, end)`` of that processing;
* after every round it prints ``round scanned=<n> processed=<n> errors=<n>``: a round that
  scanned nothing means every row is done.

Errors reported by the sweeper go to stderr; on ``stop`` it prints ``errors <n> fenced <n>``
and exits 0.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from lessor import Context, Partition, fencing_token
from lessor.etcd import EtcdLessor
from lessor.sweep import ShardReport, Sweeper


def sweep(cfg: dict[str, Any]) -> int:
    name: str = cfg["name"]
    work: float = cfg["work"]
    db = sqlite3.connect(cfg["db"], timeout=30, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    errors: list[str] = []
    fenced = [0]

    def scan(ctx: Context, part: Partition) -> list[int]:
        cur = db.execute(
            "SELECT id FROM rows WHERE done = 0 AND id >= ? AND id < ? ORDER BY id",
            (part.low, part.high),
        )
        return [row[0] for row in cur]

    def process(ctx: Context, batch: Sequence[int]) -> None:
        token = fencing_token(ctx)
        assert token is not None
        print(f"working {token} {','.join(map(str, batch))}", flush=True)
        for item in batch:
            start = time.monotonic()
            if ctx.wait(work):  # the work; a lease that runs out ends it
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                taken = db.execute(
                    "UPDATE rows SET done = done + 1, fence = ? WHERE id = ? AND fence <= ?",
                    (token, item, token),
                ).rowcount
                if taken:
                    db.execute(
                        "INSERT INTO log (item, holder, token, start, end) VALUES (?, ?, ?, ?, ?)",
                        (item, name, token, start, time.monotonic()),
                    )
                else:
                    fenced[0] += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def on_error(report: ShardReport, err: BaseException) -> None:
        text = "".join(traceback.format_exception(err))
        errors.append(text)
        print(f"{name}: shard {report.shard}: {text}", file=sys.stderr, flush=True)

    lessor = EtcdLessor(cfg["endpoints"], prefix=cfg["prefix"], holder=name)
    sweeper = Sweeper(
        lessor,
        cfg["section"],
        Partition.universe(cfg["key_space_bytes"]),
        shards=cfg["shards"],
        scan=scan,
        process=process,
        lease_seconds=cfg["lease_seconds"],
        batch_size=cfg["batch_size"],
        split_threshold=cfg["split_threshold"],
        on_error=on_error,
    )
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    ctx = Context.background()

    def await_stop() -> None:
        sys.stdin.readline()  # "stop", or the end of stdin when the parent goes away
        ctx.cancel()

    threading.Thread(target=await_stop, daemon=True).start()
    with lessor:
        while not ctx.done():
            stats = sweeper.run(ctx, rounds=1)
            print(
                f"round scanned={stats.scanned} processed={stats.processed} errors={stats.errors}",
                flush=True,
            )
            if stats.processed == 0:
                ctx.wait(0.05)  # nothing to do here now: do not spin on etcd
    print(f"errors {len(errors)} fenced {fenced[0]}", flush=True)
    return 0


if __name__ == "__main__":
    modes = {"sweep": sweep}
    sys.exit(modes[sys.argv[1]](json.loads(sys.argv[2])))
