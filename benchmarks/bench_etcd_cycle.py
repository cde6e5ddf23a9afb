"""One uncontended acquire/release cycle against etcd: lessor's EtcdLessor against pyetcd's Lock.

One thread acquires and releases, with nothing in between, as fast as it can:

* lessor: ``with lessor.lease(section, Partition(0, 1000), dur): pass`` on an
  ``EtcdLessor(endpoints)`` with default settings (consecutive acquisitions share one etcd
  lease);
* lessor, ``share_leases=False``: the same with one etcd lease per acquisition, revoked on
  release;
* pyetcd's ``Lock``: ``lock.acquire(); lock.release()``. Its release deletes the lock key but
  does not revoke the lock's etcd lease: etcd expires it ``ttl`` seconds later.

All three run against the same etcd (``LocalEtcd``, fsync on unless ``--no-fsync``), after a
warm-up, in interleaved short rounds whose order rotates, so that noise from the rest of the
machine hits each alike. Round trips and writes are etcd's own counts, not assumptions: its
Prometheus ``/metrics`` is scraped before and after every round and diffed
(``grpc_server_handled_total`` per method, ``etcd_server_proposals_committed_total`` for raft
writes, and the lease counters). The duration asked for (the Lock's TTL) outlasts the run, so
no lease expires inside a round; the script checks that too. Every cycle checks that it got
what it asked for. "client CPU" is what this process (all its threads) spent per cycle.

    python benchmarks/bench_etcd_cycle.py [--seconds S] [--rounds N] [--quick] [--no-fsync]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyetcd

from etcd_metrics import Counts, scrape
from lessor.etcd import EtcdLessor
from lessor.partition import Partition
from lessor.testing import LocalEtcd

PART = Partition(0, 1000)
METHODS = ["Txn", "Range", "DeleteRange", "LeaseGrant", "LeaseRevoke"]  # shown in this order

Cycle = Callable[[], None]

# -- the contenders --------------------------------------------------------------------------


def fresh_name() -> str:
    return f"bench-cycle-{uuid.uuid4().hex[:8]}"


def lessor_cycle(lessor: EtcdLessor, dur: float) -> Cycle:
    """Acquire and release ``PART`` of a fresh section with ``lessor``."""
    section = fresh_name()

    def cycle() -> None:
        with lessor.lease(section, PART, dur) as lease:
            pass
        if list(lease.partitions) != [PART]:  # an empty lease writes nothing: not a cycle
            raise RuntimeError(f"{section}: asked for {PART}, got {lease.partitions}")

    return cycle


@contextlib.contextmanager
def lock_cycle(etcd: LocalEtcd, dur: float) -> Iterator[Cycle]:
    """Acquire and release a pyetcd Lock, the way its documentation shows."""
    client = pyetcd.client(etcd.host, etcd.client_port)
    name = fresh_name()
    lock = client.lock(name, ttl=math.ceil(dur))

    def cycle() -> None:
        if not lock.acquire():
            raise RuntimeError(f"pyetcd Lock {name!r} not acquired")
        if not lock.release():
            raise RuntimeError(f"pyetcd Lock {name!r} not released")

    try:
        yield cycle
    finally:
        client.close()


@dataclass
class Contender:
    name: str
    cycle: Cycle
    latencies: list[float] = field(default_factory=list)  # seconds, one per measured cycle
    elapsed: float = 0.0  # seconds spent in measured rounds
    cpu: float = 0.0  # CPU seconds this process (all its threads) spent in measured rounds
    counts: Counts = field(default_factory=Counts)  # etcd's counts during measured rounds

    def warm_up(self, cycles: int) -> None:
        for _ in range(cycles):
            self.cycle()

    def run(self, seconds: float, endpoint: str) -> int:
        """Cycle for ``seconds``, adding to the totals; the number of cycles run."""
        before = scrape(endpoint)
        cycle, latencies, done = self.cycle, self.latencies, len(self.latencies)
        cpu = time.process_time()
        start = now = time.perf_counter()
        end = start + seconds
        while now < end:
            cycle()
            finished = time.perf_counter()
            latencies.append(finished - now)
            now = finished
        self.elapsed += now - start
        self.cpu += time.process_time() - cpu
        self.counts += scrape(endpoint) - before
        return len(latencies) - done

    @property
    def cycles(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.cycles / self.elapsed

    def per_cycle(self, n: float) -> float:
        return n / self.cycles


# -- the report ------------------------------------------------------------------------------


def summary_table(contenders: list[Contender]) -> str:
    rows = [
        "| contender | cycles | cycles/s | mean ms | p50 ms | p99 ms "
        "| etcd round trips / cycle | etcd writes / cycle | etcd leases left / cycle "
        "| client CPU ms / cycle |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in contenders:
        cuts = statistics.quantiles(c.latencies, n=100, method="inclusive")
        left = c.counts.leases_granted - c.counts.leases_revoked
        rows.append(
            f"| {c.name} | {c.cycles:,} | {c.per_second:,.1f} "
            f"| {statistics.fmean(c.latencies) * 1e3:.2f} | {cuts[49] * 1e3:.2f} "
            f"| {cuts[98] * 1e3:.2f} | {c.per_cycle(c.counts.rpcs.total()):.2f} "
            f"| {c.per_cycle(c.counts.writes):.2f} | {c.per_cycle(left):.2f} "
            f"| {c.per_cycle(c.cpu) * 1e3:.2f} |"
        )
    return "\n".join(rows)


def methods_table(contenders: list[Contender]) -> str:
    seen = {m for c in contenders for m in c.counts.rpcs}
    methods = METHODS + sorted(seen - set(METHODS))
    rows = [
        "| contender | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for c in contenders:
        cells = [f"{c.per_cycle(c.counts.rpcs[m]):.3f}" for m in methods]
        rows.append(f"| {c.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def etcd_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    first = out.stdout.splitlines()[0]  # "etcd Version: 3.5.16"
    return first.split(":", 1)[1].strip()


def machine_line(etcd: LocalEtcd, load: float) -> str:
    command = shlex.join(["python", *sys.argv])
    return (
        f"`{command}`: {len(os.sched_getaffinity(0))} cores (nproc), "
        f"Python {platform.python_version()}, etcd {etcd_version(etcd.binary)}, "
        f"fsync {'on' if etcd.fsync else 'off'}, load average {load:.2f} before the run"
    )


def report(contenders: list[Contender], etcd: LocalEtcd, load: float) -> None:
    lessor, no_reuse, lock = contenders
    print("\n" + summary_table(contenders))
    print("\netcd gRPC calls per cycle, by method:\n")
    print(methods_table(contenders))
    print()
    for a, b in [(lessor, lock), (no_reuse, lock), (lessor, no_reuse)]:
        print(f"{a.name} / {b.name} cycles/s: {a.per_second / b.per_second:.2f}")
    print("\n" + machine_line(etcd, load))


def check(contenders: list[Contender]) -> list[str]:
    """What went wrong according to etcd."""
    problems = []
    for c in contenders:
        if c.counts.failed_rpcs:
            problems.append(f"{c.name}: etcd answered {c.counts.failed_rpcs} calls with an error")
        if c.counts.leases_expired:
            problems.append(
                f"{c.name}: {c.counts.leases_expired} etcd leases expired during its rounds; "
                "its write counts include their revocations"
            )
    return problems


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per contender (default 10)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per contender (10)")
    parser.add_argument("--quick", action="store_true", help="2 s per contender, short warm-up")
    parser.add_argument("--no-fsync", action="store_true", help="run etcd with --unsafe-no-fsync")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    warm_up = 20 if args.quick else 200
    # Longer than the whole run: no lease (the Lock's are never revoked) expires in a round.
    dur = max(60.0, math.ceil(4 * seconds + 30))
    load = os.getloadavg()[0]  # other work on the machine slows every contender

    with LocalEtcd(fsync=not args.no_fsync) as etcd, contextlib.ExitStack() as stack:
        default = stack.enter_context(EtcdLessor(etcd.endpoints))
        no_reuse = stack.enter_context(EtcdLessor(etcd.endpoints, share_leases=False))
        contenders = [
            Contender("lessor", lessor_cycle(default, dur)),
            Contender("lessor share_leases=False", lessor_cycle(no_reuse, dur)),
            Contender("pyetcd Lock", stack.enter_context(lock_cycle(etcd, dur))),
        ]
        for c in contenders:
            c.warm_up(warm_up)
        for r in range(args.rounds):
            shift = r % len(contenders)
            for c in contenders[shift:] + contenders[:shift]:
                n = c.run(seconds / args.rounds, etcd.endpoint)
                print(f"round {r + 1}/{args.rounds} {c.name}: {n:,} cycles", flush=True)
        report(contenders, etcd, load)
    problems = check(contenders)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
