"""High availability across datacenters: one whole datacenter dies while the others sweep.

Three datacenters (network namespaces joined by a bridge, harness.py), one etcd member and
:data:`WORKERS_PER_DC` worker processes (tests/safety/worker.py, :data:`THREADS` threads
each) in each, :data:`DELAY` one way on every link between datacenters, made by userspace
proxies. The workers lease random ranges of :data:`SECTIONS` for :data:`SECONDS`; at
:data:`KILL_AT` the datacenter of the raft leader (the worst one to lose) is cut off the
bridge and, :data:`KILL_AFTER_CUT` later, its member, workers and agent are SIGKILLed. The
cut comes first so that the doomed workers record what they held when their site went dark
(their releases cannot reach a quorum any more: those ranges stay taken until the etcd
leases expire).

Checked with lessor.history, over every datacenter's records: no two holders of one key at
once, no token inversion; the doomed datacenter acquired nothing it asked for after the cut;
every surviving worker acquired keys again within :data:`RECOVERY` of the cut; the keys the
lost datacenter held at the cut were acquired again within :data:`LOST_RELEASE` of it (no
lost release). Reported, in one line: acquisitions per datacenter, overlaps, the time to a
new leader and to the first acquisition after the cut (per surviving worker), each
surviving worker's longest gap between acquisitions, when the lost datacenter's keys came
free, and the round trips (a serializable read inside a datacenter and across, a quorum
write).

The latency is checked before the workers start: from every datacenter, a read answered by
the local member takes < 5 ms (the fastest of 20), one answered by a remote member through
the proxy >= 2 x DELAY (every call), and a write, which a quorum of members must accept,
>= 2 x DELAY (every call): raft's traffic crosses the proxies too. And every member
advertises its service address as its one peer URL.

``LESSOR_DC_SECONDS`` sets how long the workers run (default 30; the cut comes at a third of
it), ``LESSOR_DC_SEED`` their random choices. Marked ``datacenters`` (``pytest -m
datacenters``) and ``slow``; it runs in the default session (about 40 s).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from lessor import Partition
from lessor.history import Holding, find_overlaps, find_token_inversions

from .harness import Datacenters, NsProcess

pytestmark = [pytest.mark.datacenters, pytest.mark.slow]

SECONDS = float(os.environ.get("LESSOR_DC_SECONDS", "30"))  # how long the workers run
KILL_AT = SECONDS / 3  # when the leader's datacenter is cut off
# ... and then killed, once the cut-off workers have given up releasing what they held (the
# release needs etcd, and waits release_timeout, 1 s, for the marker's delete and again for
# the lease's revoke) and have recorded it.
KILL_AFTER_CUT = 3.0
DELAY = 0.005  # one way, between datacenters (Datacenters' default)
WORKERS_PER_DC = 2
THREADS = 2
SECTIONS = ["alpha", "beta"]
DUR = 1.5
RECOVERY = 10.0  # every surviving worker acquires keys again within this long after the cut
# Keys the lost datacenter held at the cut are acquired again within this long after it: its
# etcd leases of 4 s (ceil(DUR + margin 0.2 + lease_reuse 2)) restart their TTL when a new
# leader takes over, one election timeout (1 s) later, and expire after etcd's check (0.5 s).
LOST_RELEASE = 15.0


def _holder(r: dict[str, Any]) -> str:
    return f"dc{r['dc']}.w{r['worker']}.t{r['thread']}"


def _read_records(path: Path, dc: int) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line) | {"dc": dc})
        except json.JSONDecodeError:
            break  # a line cut short by SIGKILL
    return out


def _check_latency(dcs: Datacenters) -> str:
    """Assert the latency is real; a summary of it.

    Lower bounds use the fastest call (load only slows calls down); so does the bound on
    reads inside a datacenter, since a delay on the path would slow every call."""
    n = len(dcs.dcs)
    problems = []
    local, remote, writes = [], [], []
    for j in range(n):
        ms = dcs.round_trips(j, j, "range", 20)
        local.append(statistics.median(ms))
        if min(ms) >= 5:
            problems.append(f"dc{j} -> its own member: {min(ms):.2f} ms at best")
        for i in range(n):
            if i != j:
                ms = dcs.round_trips(j, i, "range", 10)
                remote.append(min(ms))
                if min(ms) < 2e3 * DELAY:
                    problems.append(f"dc{j} -> member dc{i}: {min(ms):.2f} ms, under 2 x delay")
        ms = dcs.round_trips(j, j, "put", 10)
        writes.append(min(ms))
        if min(ms) < 2e3 * DELAY:
            problems.append(f"a write through dc{j}'s member: {min(ms):.2f} ms, under 2 x delay")
    for j in range(n):  # every member advertises its service address, proxied elsewhere
        urls = {m["name"]: m["peer_urls"] for m in dcs.members(j)}
        assert urls == {dc.name: [dc.peer_url] for dc in dcs.dcs}, urls
    assert not problems, "latency is not what the test needs:\n" + "\n".join(problems)
    return (
        f"serializable read in-DC {statistics.median(local):.2f} ms (median), cross-DC "
        f"{min(remote):.1f}-{max(remote):.1f} ms (fastest per pair), quorum write "
        f"{min(writes):.1f}-{max(writes):.1f} ms (fastest per DC)"
    )


def test_losing_a_datacenter(
    datacenters: Datacenters, tmp_path: Path, summary: Callable[[str], None]
) -> None:
    dcs = datacenters
    n = len(dcs.dcs)
    latency = _check_latency(dcs)

    seed = int(os.environ.get("LESSOR_DC_SEED", random.randrange(2**32)))
    prefix = f"/datacenters-{uuid.uuid4().hex[:8]}/"
    outs: dict[int, tuple[int, Path]] = {}  # worker -> (datacenter, record file)
    workers: dict[int, NsProcess] = {}
    for j in range(n):
        for k in range(WORKERS_PER_DC):
            w = j * WORKERS_PER_DC + k
            outs[w] = (j, tmp_path / f"records-{w}.jsonl")
            cfg = {
                "endpoints": dcs.endpoints(j), "endpoint_order": "given",  # local member first
                "prefix": prefix, "worker": w,
                "threads": THREADS, "sections": SECTIONS, "universe": 256, "dur": DUR,
                "hold": 0.1, "acquire_within": 5.0, "rpc_timeout": 1.0, "seconds": SECONDS,
                "seed": seed, "out": str(outs[w][1]),
            }  # fmt: skip
            workers[w] = dcs.start_worker(j, cfg)
    for p in workers.values():
        p.send("go")
    began = time.monotonic()

    time.sleep(max(0.0, began + KILL_AT - time.monotonic()))
    victim, term = dcs.wait_for_leader(range(n), after_term=0, timeout=10)
    survivors = [j for j in range(n) if j != victim]
    cut = dcs.cut(victim)
    new_leader, _ = dcs.wait_for_leader(survivors, after_term=term, timeout=30)
    elected = time.monotonic()
    time.sleep(max(0.0, cut + KILL_AFTER_CUT - time.monotonic()))
    dcs.kill(victim)
    statuses = {}
    for w, p in workers.items():
        if outs[w][0] != victim:
            statuses[w] = p.proc.wait(timeout=SECONDS + 60)
    ended = time.monotonic()

    records = [r for w, (j, path) in outs.items() for r in _read_records(path, j)]
    granted = [r for r in records if "error" not in r]
    holdings = [
        Holding(_holder(r), r["section"], tuple(Partition.from_string(p) for p in r["ranges"]),
                r["start"], r["end"], r["token"])
        for r in granted
    ]  # fmt: skip
    overlaps = find_overlaps(holdings)
    inversions = find_token_inversions(holdings)

    problems = []
    recovery: dict[int, float | None] = {}  # worker -> first acquisition of keys after the cut
    gaps: dict[int, float] = {}  # worker -> longest time without an acquisition of keys
    for w, (j, _) in outs.items():
        mine = sorted(r["answered"] for r in granted if r["worker"] == w and r["ranges"])
        if j == victim:
            if not any(t < cut for t in mine):
                problems.append(f"worker {w} of dc{j} acquired nothing before the cut")
            late = [r for r in granted if r["worker"] == w and r["asked"] > cut]
            if late:
                problems.append(f"dc{j} (cut off) acquired after the cut: {late[:3]}")
            continue
        after = sorted(r["answered"] for r in granted
                       if r["worker"] == w and r["ranges"] and r["asked"] > cut)  # fmt: skip
        recovery[w] = after[0] - cut if after else None
        bounds = [began, *mine, ended]
        gaps[w] = max(b - a for a, b in pairwise(bounds))
        if not after or after[0] - cut > RECOVERY:
            problems.append(f"worker {w} of dc{j} acquired no keys within {RECOVERY}s of the cut")
    # The keys the lost datacenter held around the cut: when survivors acquired them again.
    lost = f"dc{victim}."
    freed = []
    for h in holdings:
        if h.holder.startswith(lost) and h.ranges and h.end >= cut - 0.1:
            later = [s.start for s in holdings
                     if not s.holder.startswith(lost) and s.section_id == h.section_id
                     and s.start > cut and any(p.overlaps(q) for p in h.ranges
                                               for q in s.ranges)]  # fmt: skip
            freed.append((h.end - cut, min(later) - cut if later else None, h.token))
    never = [(e, t) for e, f, t in freed if f is None or f > LOST_RELEASE]
    if never and ended - cut > LOST_RELEASE:
        problems.append(
            f"keys dc{victim} held at the cut (holdings ending at +s, token) were not "
            f"acquired again within {LOST_RELEASE}s: {never}"
        )
    acquired = Counter(f"dc{r['dc']}" for r in granted if r["ranges"])
    errors = Counter(r["error"].split(":")[0] for r in records if "error" in r)
    first = min((t for t in recovery.values() if t is not None), default=None)
    summary(
        f"datacenters: dc{victim} (the leader's) cut at {cut - began:.1f}s, killed "
        f"{KILL_AFTER_CUT:.0f}s later; new leader dc{new_leader} {elected - cut:.2f}s after the "
        f"cut; acquisitions of keys {dict(sorted(acquired.items()))} "
        f"({len(granted) - sum(acquired.values())} empty); overlaps {len(overlaps)}, token "
        f"inversions {len(inversions)}; first acquisition after the cut "
        f"{'none' if first is None else f'{first:.2f}s'}, per surviving worker "
        + ", ".join(f"w{w} {'-' if t is None else f'{t:.2f}s'}" for w, t in recovery.items())
        + "; longest gap per surviving worker "
        + ", ".join(f"w{w} {g:.2f}s" for w, g in gaps.items())
        + "; lost DC's keys held near the cut (end, re-acquired, token) "
        + ", ".join(f"({e:+.3f}s, {'-' if f is None else f'{f:.2f}s'}, {t})" for e, f, t in freed)
        + f"; failed attempts {dict(errors)}; {latency}; seed {seed}; run {ended - began:.0f}s, "
        f"cluster up in {dcs.startup_seconds:.1f}s"
    )
    if overlaps:
        problems.append("overlaps:\n" + "\n".join(map(str, overlaps[:5])))
    if inversions:
        problems.append(f"token inversions: {inversions[:3]}")
    bad = {w: s for w, s in statuses.items() if s != 0}
    if bad:
        problems.append(f"surviving workers' exit statuses {bad}; see {tmp_path}")
    assert not problems, "\n".join(problems)
