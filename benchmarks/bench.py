"""The lessor benchmark: leases per second and acquisition latency, against its peers, on the
same etcd, in one run.

    python benchmarks/bench.py [--quick] [--seconds S] [--rounds N] [--delay-ms D] [--local]
    python -m nox -s bench [-- --quick]

etcd runs in Docker through testcontainers (one member, then three); where no Docker daemon
answers it runs as local processes instead, and the output says so. Scenarios:

* S1 uncontended: one thread, one section: acquire, an empty callback, release.
* S2 many sections: 64 sections, 4 processes x 4 threads, each thread on 4 sections of its own.
* S3 hot section: 16 threads (4 processes x 4) on one section, random overlapping ranges.
* S4 three members with latency: S1 and S3 on a 3-member cluster, a userspace delay proxy in
  front of every member's client port and on every peer link (``--delay-ms`` one way, per hop).

Every scenario runs three contenders at the same concurrency on the same etcd: the lessor
(``EtcdLessor``: ``with lessor.lease(section, part, dur): pass``), pyetcd's ``Lock`` (one lock
per section; in S3 all threads share one) and raw ``put``s of a small value (one key per
section), the ceiling of what etcd can write. S1 and S2 run a fourth, the asyncio lessor
(``AsyncEtcdLessor``: ``async with lessors.lease(section, part, dur): pass``, see
``bench_aio.py``): in S1 one task, in S2 1,000 tasks of one process over the same 64 sections,
against the threaded lessor's 16 threads. Each contender's time is split into rounds whose
order rotates, so that noise from the rest of the machine hits all alike. Then, on the same
etcd, ``bench_memory.py`` measures the memory of an idle lessor and of a held lease, asyncio
and threaded.

Per scenario and contender: cycles/s, acquisition latency p50/p99/max (HDR histogram of the
time from asking to holding), compare-and-swap retries per acquisition, etcd round trips and
writes per cycle (etcd's own counters, scraped from every member's ``/metrics`` around each
round), fairness (each thread's cycles against an equal share), and the ratios against the
peers. Every holding (range, start, end) is recorded and checked for overlaps across every
process and thread: a run where two holders overlapped exits 1, loudly, as does one whose
lessor cycles failed. Missed targets are reported, not failed: these are figures, not tests.

Outputs: ``benchmarks/results/<date>.json``, ``.md`` and ``.png`` (``<date>-quick.*`` with
``--quick``, so the checked-in full results stay), and a full run rewrites the results section
of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from bench_breakdown import Told, breakdown
from bench_report import update_readme, write_markdown, write_plot
from etcd_metrics import Counts, cluster_delta, scrape_all
from etcd_targets import Target, docker_problem, one_member, three_members
from lessor.partition import Partition
from lessor.testing import Holding, find_overlaps
from lessor.testing.child import Child, Children

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORKER = HERE / "bench_worker.py"
MEMORY = HERE / "bench_memory.py"
CONTENDERS = ["lessor", "lock", "put"]
PROCESSES = 4
UNIVERSE = 1 << 20  # keys 0 .. 2^20: S3's random ranges are 1/16 to 1/4 of it
DUR = 10.0  # seconds asked for each lease and each Lock's TTL: longer than any round
# Past a round's end, the longest a worker may take to answer: an acquisition gives up within
# the lessor's acquire_timeout (30 s), a Lock's wait ends with the round.
ANSWER_TIMEOUT = 120.0


@dataclass(frozen=True)
class Spec:
    id: str
    title: str
    members: int  # 1 or 3
    processes: int
    threads: int  # per process
    sections: str  # "own" or "shared"
    sections_per_thread: int
    ranges: str  # "whole" or "random"
    aio_tasks: int = 0  # the asyncio contender's tasks, all in the first process; 0: none

    @property
    def contenders(self) -> list[str]:
        return CONTENDERS + (["aio"] if self.aio_tasks else [])

    def units(self, contender: str) -> int:
        """How many threads (tasks, for the asyncio contender) run ``contender``."""
        return self.aio_tasks if contender == "aio" else self.processes * self.threads


SCENARIOS = [
    Spec("S1", "uncontended: 1 thread, 1 section", 1, 1, 1, "own", 1, "whole", aio_tasks=1),
    Spec(
        "S2",
        "many sections: 64 sections, 4 processes x 4 threads",
        members=1,
        processes=4,
        threads=4,
        sections="own",
        sections_per_thread=4,
        ranges="whole",
        aio_tasks=1000,
    ),
    Spec(
        "S3", "hot section: 16 workers, random overlapping ranges", 1, 4, 4, "shared", 1, "random"
    ),
    Spec("S4a", "S1 on 3 members with delay", 3, 1, 1, "own", 1, "whole"),
    Spec("S4b", "S3 on 3 members with delay", 3, 4, 4, "shared", 1, "random"),
]


# -- worker processes --------------------------------------------------------------------------


class Worker(Child):
    """One bench_worker.py process and its line protocol: a :class:`lessor.testing.Child`, so
    answers are awaited with a bound and the process is always reaped. Its stderr is ours."""

    def __init__(
        self, index: int, argv: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"bench worker {index}", argv or [sys.executable, str(WORKER)], env=env)
        self.index = index

    def receive(self, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        return self.expect_json(timeout)

    def close(self, grace: float = 30.0) -> None:
        """End of input (the worker closes its scenario and exits), then up to ``grace``."""
        super().close(grace)


@contextlib.contextmanager
def workers(n: int) -> Iterator[list[Worker]]:
    with Children() as started:
        yield [started.add(Worker(i)) for i in range(n)]


def ask_all(pool: list[Worker], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send each worker its message, then collect every answer."""
    for w, m in zip(pool, messages, strict=True):
        w.send_json(m)
    now = time.monotonic()
    wait = ANSWER_TIMEOUT + max(0.0, *(m.get("end", now) - now for m in messages))
    return [w.receive(wait) for w in pool]


# -- aggregation -------------------------------------------------------------------------------


@dataclass
class Tally:
    """One contender's results in one scenario, over every round."""

    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 120_000_000, 3))
    per_thread: dict[int, int] = field(default_factory=dict)  # thread -> cycles
    elapsed: float = 0.0  # seconds of measured rounds
    empty: int = 0
    asked: int = 0
    granted: int = 0
    tries: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    cpu: float = 0.0
    conflicts: int | None = 0
    counts: Counts = field(default_factory=Counts)
    holdings: list[Holding] = field(default_factory=list)
    told: Told = field(default_factory=Told)  # what the lessor's observers were told

    @property
    def cycles(self) -> int:
        return sum(self.per_thread.values())

    def add_round(
        self, start: float, end: float, answers: list[dict[str, Any]], counts: Counts
    ) -> int:
        last = end  # workers kept trying until the end, even those that finished no cycle
        for a in answers:
            self.cpu += a["cpu"]
            if a["conflicts"] is None or self.conflicts is None:
                self.conflicts = None
            else:
                self.conflicts += a["conflicts"]
            self.told.add(a.get("breakdown"), a["worker"], a["cpu"])
            for encoded in a["histograms"]:
                self.histogram.add(HdrHistogram.decode(encoded))
            for t in a["threads"]:
                self.per_thread[t["thread"]] = self.per_thread.get(t["thread"], 0) + t["cycles"]
                for key in ("empty", "asked", "granted", "tries", "errors"):
                    setattr(self, key, getattr(self, key) + t[key])
                self.error_samples += t["error_samples"][: 3 - len(self.error_samples)]
                last = max(last, t["last"])
                holder, sections = f"t{t['thread']}", t["sections"]
                for h in t["holdings"]:
                    ranges = tuple(
                        Partition(lo, hi) for lo, hi in zip(h[4::2], h[5::2], strict=True)
                    )
                    self.holdings.append(Holding(holder, sections[h[0]], ranges, h[1], h[2], h[3]))
        self.elapsed += last - start
        self.counts += counts
        return sum(t["cycles"] for a in answers for t in a["threads"])


def summarise(name: str, tally: Tally, threads: int) -> dict[str, Any]:
    cycles = tally.cycles
    h = tally.histogram

    def per(n: float) -> float:
        return n / cycles if cycles else float("nan")

    shares = [tally.per_thread.get(t, 0) * threads / cycles for t in range(threads) if cycles]
    if name in ("lessor", "aio"):
        if tally.conflicts is not None:
            retries, source = per(tally.conflicts), "lessor.observe conflict events"
        else:  # every acquisition is one Txn when it wins at once; each lost swap one more
            retries = max(0.0, per(tally.counts.rpcs["Txn"]) - 1)
            source = "etcd Txn calls per acquisition, minus one"
    elif name == "lock":
        retries, source = per(tally.tries) - 1, "failed Lock tries (each a LeaseGrant and a Txn)"
    else:
        retries, source = None, "none: a put does not compare"
    c = tally.counts
    return {
        "cycles": cycles,
        "seconds": tally.elapsed,
        "cycles_per_s": cycles / tally.elapsed if tally.elapsed > 0 else 0.0,
        "p50_ms": h.get_value_at_percentile(50) / 1e3,
        "p99_ms": h.get_value_at_percentile(99) / 1e3,
        "max_ms": h.get_max_value() / 1e3,
        "mean_ms": h.get_mean_value() / 1e3,
        "cas_retries_per_acquisition": retries,
        "cas_retries_source": source,
        "round_trips_per_cycle": per(c.round_trips),
        "writes_per_cycle": per(c.writes),
        "leases_left_per_cycle": per(c.leases_granted - c.leases_revoked),
        "rpcs_per_cycle": {m: per(n) for m, n in sorted(c.rpcs.items())},
        "stream_messages_per_cycle": {m: per(n) for m, n in sorted(c.stream_messages.items())},
        "failed_rpcs": c.failed_rpcs,
        "leases_expired": c.leases_expired,
        "fairness_min": min(shares) if shares else None,
        "fairness_max": max(shares) if shares else None,
        "per_thread_cycles": [tally.per_thread.get(t, 0) for t in range(threads)],
        "empty_grants": tally.empty,
        "keys_granted_of_asked": tally.granted / tally.asked if tally.asked else None,
        "client_cpu_ms_per_cycle": per(tally.cpu) * 1e3,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "holdings_checked": len(tally.holdings),
        "breakdown": (
            breakdown(tally.told, h, cpu=tally.cpu, cycles=cycles, c=c, elapsed=tally.elapsed)
            if name in ("lessor", "aio")
            else None
        ),
    }


# -- one scenario ------------------------------------------------------------------------------


def run_scenario(
    spec: Spec, target: Target, pool: list[Worker], args: argparse.Namespace, run_id: str
) -> dict[str, Any]:
    procs = pool[: spec.processes]
    leader = target.leader()
    n = len(target.client_endpoints)
    # Worker w's home member: the one after the leader, then onwards, so that S4a's single
    # worker talks to a follower (as two clients in three do) and S4b's spread over all.
    homes = [((leader if leader is not None else -1) + 1 + w) % n for w in range(len(procs))]
    setup = [
        {
            "cmd": "setup",
            "name": spec.id,
            "run_id": run_id,
            "worker": w,
            "threads": spec.threads,
            "all_threads": spec.processes * spec.threads,
            "sections": spec.sections,
            "sections_per_thread": spec.sections_per_thread,
            "ranges": spec.ranges,
            "universe": UNIVERSE,
            "dur": DUR,
            "seed": args.seed,
            "endpoints": target.client_endpoints[homes[w] :] + target.client_endpoints[: homes[w]],
            "contenders": spec.contenders,
            "aio_tasks": spec.aio_tasks if w == 0 else 0,
            "warmup": args.warmup,
        }
        for w in range(len(procs))
    ]
    ask_all(procs, setup)
    contenders = spec.contenders
    tallies = {c: Tally() for c in contenders}
    seconds = args.seconds_s4 if spec.members == 3 else args.seconds
    per_round = seconds / args.rounds
    for r in range(args.rounds):
        shift = r % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            before = scrape_all(target.member_endpoints)
            start = time.monotonic() + 0.1  # every worker has its command by then
            answers = ask_all(
                procs,
                [{"cmd": "run", "contender": contender, "start": start, "end": start + per_round}]
                * len(procs),
            )
            counts = cluster_delta(before, scrape_all(target.member_endpoints))
            done = tallies[contender].add_round(start, start + per_round, answers, counts)
            ask_all(procs, [{"cmd": "tidy"}] * len(procs))
            print(
                f"  {spec.id} round {r + 1}/{args.rounds} {contender}: {done:,} cycles", flush=True
            )
    if args.profile and spec.sections == "shared":
        tallies["lessor"].told.profile = profile_round(spec, procs, args, per_round)
    ask_all(procs, [{"cmd": "teardown"}] * len(procs))
    for tally in tallies.values():
        tally.told.members_of_cluster = spec.members

    threads = spec.processes * spec.threads
    result: dict[str, Any] = {
        "id": spec.id,
        "title": spec.title,
        "members": spec.members,
        "delay_ms": target.delay_ms,
        "processes": spec.processes,
        "threads_per_process": spec.threads,
        "sections": 1 if spec.sections == "shared" else threads * spec.sections_per_thread,
        "aio_tasks": spec.aio_tasks,
        "seconds_per_contender": seconds,
        "rounds": args.rounds,
        "leader": leader,
        "homes": homes,
        "contenders": {},
        "overlaps": {},
    }
    for name, tally in tallies.items():
        result["contenders"][name] = summarise(name, tally, spec.units(name))
        overlaps = find_overlaps(tally.holdings)
        if overlaps:  # said at once; the run goes on to write its evidence, then exits 1
            print(f"  SAFETY VIOLATED: {spec.id} {name}: {len(overlaps)} overlapping holdings, "
                  f"e.g. {overlaps[0]}", file=sys.stderr, flush=True)  # fmt: skip
        result["overlaps"][name] = [str(o) for o in overlaps[:20]]
        result["contenders"][name]["overlaps"] = len(overlaps)
    lessor, lock, put = (result["contenders"][c] for c in CONTENDERS)
    result["ratios"] = {
        "lessor_vs_lock_cycles": _ratio(lessor["cycles_per_s"], lock["cycles_per_s"]),
        "lessor_vs_put_cycles": _ratio(lessor["cycles_per_s"], put["cycles_per_s"]),
        "lessor_vs_lock_p99": _ratio(lessor["p99_ms"], lock["p99_ms"]),
    }
    aio = result["contenders"].get("aio")
    if aio is not None:
        result["ratios"] |= {
            "aio_vs_lessor_cycles": _ratio(aio["cycles_per_s"], lessor["cycles_per_s"]),
            "aio_vs_lock_cycles": _ratio(aio["cycles_per_s"], lock["cycles_per_s"]),
            "aio_vs_lessor_p99": _ratio(aio["p99_ms"], lessor["p99_ms"]),
            "aio_vs_lessor_cpu": _ratio(
                aio["client_cpu_ms_per_cycle"], lessor["client_cpu_ms_per_cycle"]
            ),
        }
    return result


def profile_round(
    spec: Spec, procs: list[Worker], args: argparse.Namespace, seconds: float
) -> dict[str, Any] | None:
    """One more lessor round, not counted in the figures, in which every worker's threads run
    under cProfile on their own CPU time (``bench_profile.py``; all alike, so that none loses
    more races for being slower): where the client's CPU goes, summed over the workers."""
    start = time.monotonic() + 0.1
    run = {"cmd": "run", "contender": "lessor", "start": start, "end": start + seconds}
    paths = [args.out / f"{args.stem}-{spec.id}-worker{w}.prof" for w in range(len(procs))]
    answers = ask_all(procs, [{**run, "profile": str(path)} for path in paths])
    ask_all(procs, [{"cmd": "tidy"}] * len(procs))
    profiles = [a["profile"] for a in answers if a.get("profile")]
    if not profiles:
        return None
    merged: dict[str, Any] = {"paths": [p["path"] for p in profiles], "categories": {}}
    for key in ("cycles", "cpu_s"):
        merged[key] = sum(p[key] for p in profiles)
    merged["process_cpu_s"] = sum(a["cpu"] for a in answers)
    top: dict[str, dict[str, Any]] = {}
    for p in profiles:
        for category, t in p["categories"].items():
            merged["categories"][category] = merged["categories"].get(category, 0.0) + t
        for f in p["top"]:
            entry = top.setdefault(f["function"], {**f, "seconds": 0.0})
            entry["seconds"] += f["seconds"]
    merged["categories"] = dict(sorted(merged["categories"].items(), key=lambda kv: -kv[1]))
    merged["top"] = sorted(top.values(), key=lambda f: -f["seconds"])[:12]
    print(f"  {spec.id} profiled round: {merged['cycles']:,} cycles", flush=True)
    return merged


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


# -- memory ----------------------------------------------------------------------------------


def measure_memory(target: Target, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """``bench_memory.py`` for the asyncio and the threaded lessor, side by side (memory, not
    time, is measured): each one's figures."""
    endpoint = target.client_endpoints[0]
    counts = ["--lessors", str(args.memory_lessors), "--leases", str(args.memory_leases)]

    def argv(kind: str) -> list[str]:
        prefix = f"/bench/{run_id}/memory-{kind}/"
        return [sys.executable, str(MEMORY), endpoint, prefix, "--lessor", kind, *counts]

    with Children() as started:
        children = {
            kind: started.add(Child(f"bench memory {kind}", argv(kind))) for kind in ("aio", "sync")
        }
        return {kind: child.expect_json(ANSWER_TIMEOUT) for kind, child in children.items()}


# -- targets -----------------------------------------------------------------------------------


def check_targets(scenarios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with its figure and whether it was met."""
    targets: list[dict[str, Any]] = []

    def target(name: str, figure: float | None, met: bool, shown: str) -> None:
        targets.append({"target": name, "figure": figure, "met": met, "shown": shown})

    s1, s2, s3 = scenarios.get("S1"), scenarios.get("S2"), scenarios.get("S3")
    if s1:
        r = s1["ratios"]["lessor_vs_lock_cycles"] or 0.0
        target("S1: lessor >= 1.0x Lock cycles/s (aim 1.5x)", r, r >= 1.0, f"{r:.2f}x")
    if s2:
        r = s2["ratios"]["lessor_vs_put_cycles"] or 0.0
        target("S2: lessor >= 25% of the raw-put ceiling", r, r >= 0.25, f"{r:.0%}")
    if s3:
        lessor = s3["contenders"]["lessor"]
        low = lessor["fairness_min"] or 0.0
        target("S3: no worker below 50% of its fair share", low, low >= 0.5, f"lowest {low:.0%}")
        p99 = lessor["p99_ms"]
        target("S3: p99 acquisition <= 50 ms (1 member)", p99, p99 <= 50, f"{p99:.1f} ms")
        if s1:
            r = lessor["cycles_per_s"] / s1["contenders"]["lessor"]["cycles_per_s"]
            target("S3: aggregate >= 50% of S1", r, r >= 0.5, f"{r:.0%}")
    if s2 and "aio" in s2["contenders"]:
        aio, threaded = s2["contenders"]["aio"], s2["contenders"]["lessor"]
        r = s2["ratios"]["aio_vs_lessor_cycles"] or 0.0
        target(
            f"S2: {s2['aio_tasks']:,} asyncio tasks in 1 process >= the threaded lessor's "
            f"cycles/s ({s2['processes'] * s2['threads_per_process']} threads in "
            f"{s2['processes']} processes)",
            r,
            r >= 1.0,
            f"{r:.2f}x (p99 {aio['p99_ms']:.1f} ms, threaded {threaded['p99_ms']:.1f} ms)",
        )
    return targets


# -- the machine -------------------------------------------------------------------------------


def machine(target_how: str, etcd_version: str, docker_why: str | None) -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    docker_version = None
    if docker_why is None and shutil.which("docker"):
        out = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            check=False,
        )
        docker_version = out.stdout.strip() or None
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "etcd": etcd_version,
        "etcd_runs_in": target_how,
        "docker": docker_version,
        "docker_absent_because": docker_why,
        "load_average_before": os.getloadavg()[0],
    }


def code_version() -> str:
    """The commit measured, and whether the lessor's sources differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True,
                              check=False)  # fmt: skip
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", str(HERE.parent / "src"))
    return commit + (" with uncommitted changes in src/" if dirty else "")


# -- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short rounds (CI): the whole run in well under two minutes",
    )
    parser.add_argument("--seconds", type=float, help="per contender and scenario (default 10)")
    parser.add_argument("--rounds", type=int, help="rounds per contender (default 5)")
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=2.0,
        help="S4: one-way delay per proxy hop, client and peer links (2)",
    )
    parser.add_argument(
        "--local", action="store_true", help="run etcd as local processes even where Docker answers"
    )
    parser.add_argument("--no-fsync", action="store_true", help="etcd with --unsafe-no-fsync")
    parser.add_argument(
        "--only", help="comma-separated scenario ids (S1,S2,S3,S4a,S4b) and/or 'memory'"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds of S3 and S4b (one shared section), one more lessor round with "
        "every worker's threads under cProfile (CPU time): its split goes into the breakdown, "
        "the .prof files beside the results",
    )
    args = parser.parse_args()
    args.seconds = args.seconds or (2.5 if args.quick else 10.0)
    args.seconds_s4 = 2.0 if args.quick else args.seconds
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.warmup = 0.3 if args.quick else 1.0
    args.memory_lessors = 10 if args.quick else 40
    args.memory_leases = 1000
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    args.today, args.stem = today, today + ("-quick" if args.quick else "")
    return args


def main() -> int:
    args = parse_args()
    began = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    measured = code_version()  # now: the sources may change while the run goes on
    wanted = [s for s in SCENARIOS if not args.only or s.id in args.only.split(",")]
    memory_wanted = not args.only or "memory" in args.only.split(",")
    memory: dict[str, Any] | None = None
    docker_why = "not used: --local given" if args.local else docker_problem()
    docker = docker_why is None
    if docker:
        print("etcd: in Docker, through testcontainers", flush=True)
    elif args.local:
        print("etcd: local processes (--local)", flush=True)
    else:
        print(
            f"etcd: Docker is absent ({docker_why}): FALLING BACK TO LOCAL etcd PROCESSES",
            flush=True,
        )
    fsync = not args.no_fsync
    scenarios: dict[str, dict[str, Any]] = {}
    how = version = ""
    load = os.getloadavg()[0]
    with workers(PROCESSES) as pool:  # their imports overlap etcd's start
        for members in (1, 3):
            group = [s for s in wanted if s.members == members]
            if not group and not (members == 1 and memory_wanted):
                continue
            if members == 1:
                starting = one_member(docker=docker, fsync=fsync)
            else:
                starting = three_members(docker=docker, fsync=fsync, delay_ms=args.delay_ms)
            with starting as target:
                how, version = target.how, target.etcd_version
                print(
                    f"etcd {version}, {members} member(s), {how}"
                    + (f", {target.delay_ms:g} ms one-way delay per hop" if members == 3 else ""),
                    flush=True,
                )
                for spec in group:
                    print(f"{spec.id}: {spec.title}", flush=True)
                    scenarios[spec.id] = run_scenario(spec, target, pool, args, run_id)
                if members == 1 and memory_wanted:
                    print("memory: an idle lessor and a held lease, asyncio and threaded",
                          flush=True)  # fmt: skip
                    memory = measure_memory(target, args, run_id)
    info = machine(how, version, docker_why)
    info["load_average_before"] = load
    info["load_average_after"] = os.getloadavg()[0]
    info["lessor_commit"] = measured
    targets = check_targets(scenarios)
    today, stem = args.today, args.stem
    command = shlex.join(["python", "benchmarks/bench.py", *sys.argv[1:]])
    unsafe = {f"{s}/{c}": o for s, r in scenarios.items() for c, o in r["overlaps"].items() if o}
    failed = {
        f"{s}/{c}": r["contenders"][c]["error_samples"]
        for s, r in scenarios.items()
        for c in ("lessor", "aio")
        if c in r["contenders"] and r["contenders"][c]["errors"]
    }
    report = {
        "date": today,
        "command": command,
        "quick": args.quick,
        "settings": {
            "seconds_per_contender": args.seconds,
            "seconds_per_contender_s4": args.seconds_s4,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "delay_ms": args.delay_ms,
            "fsync": fsync,
            "lease_dur_s": DUR,
            "universe": UNIVERSE,
            "seed": args.seed,
            "memory_idle_lessors": args.memory_lessors,
            "memory_held_leases": args.memory_leases,
        },
        "machine": info,
        "scenarios": list(scenarios.values()),
        "memory": memory,
        "targets": targets,
        "safety": {"overlaps": unsafe, "lessor_errors": failed},
        "wall_seconds": time.monotonic() - began,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    png_path = write_plot(report, args.out / f"{stem}.png")
    md_path, markdown = write_markdown(report, args.out / f"{stem}.md", png_path.name)
    print("\n" + markdown)
    print(f"wrote {json_path}, {md_path}, {png_path} in {report['wall_seconds']:.0f} s")
    if (
        not args.quick
        and not args.no_readme
        and not unsafe
        and not failed
        and not args.only
        and args.out == RESULTS
    ):
        update_readme(HERE / "README.md", markdown, png_path.relative_to(HERE))
        print(f"updated {HERE / 'README.md'}")
    for where, overlaps in unsafe.items():
        print(
            f"SAFETY VIOLATED in {where}: {len(overlaps)} overlapping holdings, e.g.",
            file=sys.stderr,
        )
        for o in overlaps[:5]:
            print(f"  {o}", file=sys.stderr)
    for where, samples in failed.items():
        print(f"LESSOR CYCLES FAILED in {where}: {samples}", file=sys.stderr)
    return 1 if unsafe or failed else 0


if __name__ == "__main__":
    sys.exit(main())
