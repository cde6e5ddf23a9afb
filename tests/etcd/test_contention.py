"""Processes x threads contending for one section of a real etcd.

4 worker processes of 4 threads each (one ``EtcdLessor`` per process) lease random
overlapping ranges of one section for :data:`SECONDS`, holding each lease for 0-3 ms. Every
acquisition is recorded with :func:`time.monotonic` (CLOCK_MONOTONIC, one clock for every
process on Linux), and the merged history must show no key held twice at once, fencing
tokens ordering the leases of each key, and progress for every thread.

``LESSOR_CONTENTION_SECONDS`` shortens the run for local use; ``LESSOR_CONTENTION_SEED``
replays a run's random ranges (the seed is printed).
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lessor.testing import find_overlaps, find_token_inversions
from tests.support.programs import ready_set_go
from tests.support.record import holding_of, read_records

from .conftest import Spawn

SECONDS = float(os.environ.get("LESSOR_CONTENTION_SECONDS", "20"))
WORKERS = 4
THREADS = 4  # per worker process
UNIVERSE = 256  # ranges are drawn from [0, UNIVERSE)
DUR = 5.0  # each lease's duration; holders give it back after 0-3 ms
PREFIX = "/lessor/"


@pytest.mark.slow
def test_processes_never_hold_a_common_key(etcd_server: Any, spawn: Spawn, tmp_path: Path) -> None:
    section = f"contention-{uuid.uuid4().hex[:12]}"
    seed = int(os.environ.get("LESSOR_CONTENTION_SEED", random.randrange(2**32)))
    children = [
        spawn(
            f"worker {w}",
            "contend",
            {
                "endpoints": etcd_server.endpoints,
                "prefix": PREFIX,
                "section": section,
                "worker": w,
                "threads": THREADS,
                "seconds": SECONDS,
                "universe": UNIVERSE,
                "dur": DUR,
                "seed": seed,
                "out": str(tmp_path / f"worker-{w}.jsonl"),
            },
        )
        for w in range(WORKERS)
    ]
    began = ready_set_go(children)
    statuses = [child.wait(timeout=SECONDS + 60) for child in children]
    finished = time.monotonic()

    records = [r for w in range(WORKERS) for r in read_records(tmp_path / f"worker-{w}.jsonl")]
    errors = [r for r in records if "error" in r]
    holdings = [holding_of(r) for r in records if "error" not in r]
    granted = [h for h in holdings if h.ranges]
    holders = [f"w{w}.t{t}" for w in range(WORKERS) for t in range(THREADS)]
    starts: dict[str, list[float]] = {holder: [] for holder in holders}
    for h in sorted(granted, key=lambda h: h.start):
        starts[h.holder].append(h.start)
    counts = {holder: len(starts[holder]) for holder in holders}
    gaps = {  # the longest a thread went without a grant within the run
        holder: max(b - a for a, b in itertools.pairwise([began, *starts[holder], began + SECONDS]))
        for holder in holders
    }
    worst = max(holders, key=lambda holder: gaps[holder])
    waits = [r["answered"] - r["asked"] for r in records]
    kinds = Counter(r["error"].split(":", 1)[0] for r in errors)
    print(
        f"\ncontention: seed {seed}, {WORKERS} processes x {THREADS} threads, {SECONDS:g}s "
        f"(ran {finished - began:.1f}s): {len(records)} acquisitions "
        f"({len(records) / (finished - began):.0f}/s), {len(granted)} non-empty, "
        f"{len(errors)} raised {dict(kinds)}\n"
        f"non-empty grants per thread: min {min(counts.values())}, max {max(counts.values())}; "
        f"longest gap between a thread's grants {gaps[worst]:.3f}s ({worst}); "
        f"acquisition time median {statistics.median(waits) * 1e3:.1f} ms, "
        f"max {max(waits):.3f}s\n"
        f"per thread: {counts}"
    )

    problems = [
        f"{c.name} exited with status {status}; stderr:\n{c.log_text()}"
        for c, status in zip(children, statuses, strict=True)
        if status != 0
    ]
    overlaps = find_overlaps(holdings)
    if overlaps:
        first = "\n".join(map(str, overlaps[:5]))
        problems.append(f"{len(overlaps)} overlaps, first:\n{first}")
    inversions = find_token_inversions(granted)
    if inversions:
        problems.append(f"{len(inversions)} token inversions, first: {inversions[:3]}")
    starved = [holder for holder in holders if counts[holder] == 0]
    if starved:
        problems.append(f"threads that never got a range: {starved}")
    assert not problems, "\n\n".join(problems)
