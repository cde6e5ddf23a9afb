"""A lessor client in a process of its own, driven by tests/etcd/test_contention.py,
test_sweep.py and test_wait_free.py through its stdin and stdout.

    python -m tests.etcd.lessor_child crash '<json config>'     (from the repository's root)
    python -m tests.etcd.lessor_child contend '<json config>'

Both modes build one ``EtcdLessor``, print ``ready`` and wait for a ``go`` line on stdin, so
the parent decides when the work starts:

* ``crash`` acquires one lease, prints ``{"token": ..., "ranges": [...]}`` and then blocks on
  stdin, holding the lease, until the parent kills it.
* ``contend`` runs threads that lease random ranges of one section until a time limit
  (:class:`tests.support.record.RecordLoop`), writes every acquisition (or failed one, with its
  ``error``) as a line of JSON to a file, prints ``done <count>`` and exits 0, or 1 if any
  acquisition raised (the first tracebacks go to stderr).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from lessor import Partition
from lessor.etcd import EtcdLessor
from tests.support.record import RecordLoop, Workload


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
    workload = Workload(Path(cfg["out"]), cfg["worker"], cfg["seconds"], cfg["seed"],
                        [cfg["section"]], cfg["universe"], cfg["dur"], hold=0.003)  # fmt: skip
    loop = RecordLoop(lessor, workload, cfg["threads"])
    if not _await_go():
        return 2
    count, failures = loop.run()
    lessor.close()
    for failure in failures[:5]:
        print(failure, file=sys.stderr, flush=True)
    if len(failures) > 5:
        print(f"... and {len(failures) - 5} more failed acquisitions", file=sys.stderr)
    print(f"done {count}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    modes = {"crash": crash, "contend": contend}
    sys.exit(modes[sys.argv[1]](json.loads(sys.argv[2])))
