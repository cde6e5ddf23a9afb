"""High availability across datacenters: one whole datacenter dies while the others sweep.

Two tests. :func:`test_losing_a_datacenter`, described here, checks safety through the loss
with many workers. :func:`test_losing_the_leader_s_datacenter_at_once` checks issue 11's
recovery target: one holder per datacenter, the leader's datacenter killed without warning,
every key it held granted again within :data:`LOST_TARGET` (6 s) of the kill, for 3 s leases.
The etcd members miss a leader after :data:`~.conftest.ELECTION_MS` (500 ms).

Three datacenters (network namespaces joined by a bridge, harness.py), one etcd member and
:data:`WORKERS_PER_DC` worker processes (tests/safety/worker.py, :data:`THREADS` threads
each) in each, :data:`DELAY` one way on every link between datacenters, made by userspace
proxies. The workers lease random ranges of :data:`SECTIONS` for :data:`SECONDS`; at
:data:`KILL_AT` the datacenter of the raft leader (the worst one to lose) is cut off the
bridge and, :data:`KILL_AFTER_CUT` later, its member, workers and agent are SIGKILLed. The
cut comes first so that the doomed workers record what they held when their site went dark
(their releases cannot reach a quorum any more: those ranges stay taken until the etcd
leases expire).

Checked with lessor.testing.history, over every datacenter's records: no two holders of one key at
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
datacenters``) and ``slow``; they run in the default session (about 40 s and 15 s).
"""

from __future__ import annotations

import json
import math
import os
import queue
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
from lessor.testing import Holding, find_overlaps, find_token_inversions
from lessor.testing.child import Child, Sink
from tests.support.record import holding_of, read_records

from .conftest import ELECTION_MS
from .harness import HOLDER, Datacenters

pytestmark = [pytest.mark.datacenters, pytest.mark.slow]

SECONDS = float(os.environ.get("LESSOR_DC_SECONDS", "30"))  # how long the workers run
KILL_AT = SECONDS / 3  # when the leader's datacenter is cut off
# ... and then killed, once the cut-off workers have given up releasing what they held (the
# release needs a quorum, and is tried on one member after another for release_timeout, 1 s)
# and have recorded it.
KILL_AFTER_CUT = 3.0
DELAY = 0.005  # one way, between datacenters (Datacenters' default)
WORKERS_PER_DC = 2
THREADS = 2
SECTIONS = ["alpha", "beta"]
DUR = 1.5
MARGIN = 0.2  # EtcdLessor's default
ELECTION = ELECTION_MS / 1000
RECOVERY = 3.0  # every surviving worker acquires keys again within this long after the cut
# Keys the lost datacenter held at the cut are acquired again within this long after it: a new
# leader is elected within twice the election timeout and restarts every etcd lease's TTL,
# ceil(DUR + margin), plus one election timeout (etcd's lessor Promote); etcd then checks for
# expired leases every 0.5 s; and a surviving worker must happen to ask for those keys (its
# ranges are random): a second for that.
LOST_RELEASE = 2 * ELECTION + ELECTION + math.ceil(DUR + MARGIN) + 0.5 + 1.0  # 5 s


def _holder(r: dict[str, Any]) -> str:
    return f"dc{r['dc']}.w{r['worker']}.t{r['thread']}"


def _read_records(path: Path, dc: int) -> list[dict[str, Any]]:
    return [r | {"dc": dc} for r in read_records(path)]


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
    workers: dict[int, Child] = {}
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
    holdings = [holding_of(r, _holder(r)) for r in granted]
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


# -- the leader's datacenter lost at once (issue 11) -------------------------------------------

LOST_DUR = 3.0  # issue 11's lease length for this target
# Issue 11's target: every range the dead datacenter held is granted again within this long
# after the kill. Where the time goes: the survivors elect a leader (one to two election
# timeouts), which restarts every etcd lease's TTL, ceil(LOST_DUR + margin) = 4 s, plus one
# election timeout (etcd's lessor Promote); etcd checks for expired leases every 0.5 s; then
# the revoke is committed and a survivor waiting with wait_free is granted the ranges.
LOST_TARGET = 6.0
LOST_ELECTION = 0.5  # the election timeout of this test's cluster
UNIVERSE = 256
WARM_UP = 3  # leases the victim is granted (and renews its etcd lease for) before it dies


def _keys(ranges: list[str]) -> set[int]:
    return {k for r in ranges for k in range(*_bounds(r))}


def _bounds(text: str) -> tuple[int, int]:
    p = Partition.from_string(text)
    return p.low, p.high


def test_losing_the_leader_s_datacenter_at_once(
    datacenters: Datacenters, summary: Callable[[str], None]
) -> None:
    """One holder process per datacenter, all leasing the whole key space for 3 s, again and
    again (``dc_holder.py``); the etcd leader's datacenter is cut off and all of its processes
    SIGKILLed at once, just after its holder was granted a lease. Every key it held must be
    granted again to the survivors within :data:`LOST_TARGET` of the kill, and none before the
    dead holder's deadline; no two holders ever share a key."""
    dcs = datacenters
    n = len(dcs.dcs)
    victim, term = dcs.wait_for_leader(range(n), after_term=0, timeout=10)
    survivors = [j for j in range(n) if j != victim]
    prefix = f"/datacenters-{uuid.uuid4().hex[:8]}/"
    section = "lost"
    sink: Sink = queue.Queue()
    procs: dict[int, Child] = {}
    for j in range(n):
        cfg = {
            "endpoints": dcs.endpoints(j), "prefix": prefix, "section": section, "worker": j,
            "universe": UNIVERSE, "dur": LOST_DUR, "rpc_timeout": 1.0, "wait_cap": 2.0,
            # The victim holds long (it must hold when it dies), the others briefly.
            "hold": 1.0 if j == victim else 0.05, "pause": 0.2,
        }  # fmt: skip
        procs[j] = dcs.start_worker(j, cfg, program=HOLDER, sink=sink)
    dc_of = {p.name: j for j, p in procs.items()}
    events: list[dict[str, Any]] = []
    ended: set[int] = set()

    def next_event(timeout: float) -> dict[str, Any] | None:
        """The next event of any holder (its ``dc`` added); None at the end of one's output."""
        name, line = sink.get(timeout=max(0.0, timeout))
        j = dc_of[name]
        if line is None:
            ended.add(j)
            return None
        event: dict[str, Any] = json.loads(line) | {"dc": j}
        events.append(event)
        return event

    def log_tails() -> str:
        return "\n".join(f"--- {p.name}:\n{p.log_tail()}" for p in procs.values())

    ready: set[int] = set()
    while len(ready) < n:
        e = next_event(dcs.startup_timeout)
        assert e is not None and e["event"] == "ready", f"{e}; ended {ended}:\n{log_tails()}"
        ready.add(e["dc"])
    for p in procs.values():
        p.send("go")

    # The victim's holder is killed just after a grant: it holds, and has just renewed.
    grants = 0
    while True:
        e = next_event(30)
        assert e is not None, f"a holder ended early ({ended}):\n{log_tails()}"
        if e["dc"] == victim and e["event"] == "granted" and e["ranges"]:
            grants += 1
            if grants > WARM_UP:
                break
    held = e
    killed = time.monotonic()
    dcs.cut(victim)
    dcs.kill(victim)
    cut_and_killed = time.monotonic() - killed
    new_leader, _ = dcs.wait_for_leader(survivors, after_term=term, timeout=30)
    elected = time.monotonic() - killed  # an upper bound: the members are polled

    lost = _keys(held["ranges"])
    covered: set[int] = set()
    recovered: float | None = None
    limit = killed + LOST_TARGET + 6.0  # see how late it comes, if it does
    while recovered is None:
        try:
            e = next_event(limit - time.monotonic())
        except queue.Empty:
            break
        if e is None:
            continue
        if e["dc"] != victim and e["event"] == "granted" and e["t"] >= killed:
            covered |= lost & _keys(e["ranges"])
            if covered == lost:
                recovered = e["t"]
    for j in survivors:
        procs[j].send("stop")
    while not set(survivors) <= ended:
        next_event(30)

    # Every lease held, from its grant to its give-back or (the victim's last) its deadline.
    ends = {(e["dc"], e["n"]): e["end"] for e in events if e["event"] == "released"}
    holdings = [
        Holding(f"dc{e['dc']}", section, tuple(map(Partition.from_string, e["ranges"])),
                e["t"], ends.get((e["dc"], e["n"]), e["deadline"]), e["token"])
        for e in events if e["event"] == "granted" and e["ranges"]
    ]  # fmt: skip
    overlaps = find_overlaps(holdings)
    inversions = find_token_inversions(holdings)
    regrants = [
        e for e in events
        if e["dc"] != victim and e["event"] == "granted" and e["t"] >= killed
        and lost & _keys(e["ranges"])
    ]  # fmt: skip
    early = [e for e in regrants if e["t"] < held["deadline"]]
    errors = Counter(e["error"].split(":")[0] for e in events if e["event"] == "error")
    took = None if recovered is None else recovered - killed
    first = min((e["t"] for e in regrants), default=None)
    summary(
        f"leader's datacenter lost at once: dc{victim} (leader, term {term}) cut off and "
        f"killed {cut_and_killed * 1e3:.0f} ms after the kill began, "
        f"{(killed - held['t']) * 1e3:.1f} ms after its holder was granted {held['ranges']} "
        f"(deadline +{held['deadline'] - killed:.3f}s); new leader dc{new_leader} within "
        f"{elected:.2f}s; the dead holder's keys granted again from "
        f"{'-' if first is None else f'+{first - killed:.3f}s'}, all of them "
        f"{'never' if took is None else f'+{took:.3f}s'} after the kill (target "
        f"{LOST_TARGET}s); overlaps {len(overlaps)}, token inversions {len(inversions)}; "
        f"leases with keys per dc {dict(Counter(h.holder for h in holdings))}; failed attempts "
        f"{dict(errors)}"
    )
    assert held["dc"] == victim
    last = (victim, held["n"])
    gave_back = [e for e in events if e["event"] == "released" and (e["dc"], e["n"]) == last]
    assert not gave_back, f"the victim gave its lease back before it died: {gave_back}"
    assert not overlaps, "overlaps:\n" + "\n".join(map(str, overlaps[:5]))
    assert not inversions, f"token inversions: {inversions[:3]}"
    assert not early, f"granted before the dead holder's deadline: {early[:3]}"
    assert took is not None, (
        f"keys {sorted(lost - covered)[:10]}... of the dead holder's were not granted again "
        f"within {limit - killed:.0f}s of the kill"
    )
    # etcd's own part depends on how long the election took (0.55-1.2 s measured): after it,
    # the lease's full TTL plus one election timeout, then up to 0.5 s to its expiry check.
    # The lessor's part after that (the watch event, the grant) is allowed 0.1 s. The test
    # holds the lessor to the target whenever etcd's part leaves room for it.
    etcd_part = elected + LOST_ELECTION + math.ceil(LOST_DUR + 0.2) + 0.5
    assert took <= max(LOST_TARGET, etcd_part + 0.1), (
        f"the dead holder's keys were all granted again {took:.3f}s after the kill, target "
        f"{LOST_TARGET}s (new leader within {elected:.2f}s; etcd's part at most "
        f"{etcd_part:.2f}s)"
    )
