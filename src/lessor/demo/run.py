"""``lessor demo``: three datacenters of sweepers share one key space through etcd.

1. etcd: a local cluster of three members on loopback
   (:class:`~lessor.testing.LocalEtcdCluster`, no root needed), or the cluster at
   ``--endpoints``, checked first.
2. A SQLite store of ``--rows`` reminders with random 8-byte ids (:mod:`lessor.demo.store`).
3. ``--workers-per-dc`` worker processes (:mod:`lessor.demo.worker`) in each of three
   simulated datacenters; each datacenter's workers talk to "their" etcd member first.
   Processing is paced (simulated work per reminder) so that all the workers together would
   sweep the store in about 60 % of ``--seconds``.
4. At 40 % of ``--seconds``: the datacenter of the etcd leader is lost. Its workers are
   SIGKILLed holding their leases, and the leader is killed (with ``--endpoints``, only a
   datacenter's workers die: the demo does not kill members it did not start).
5. The run ends when every reminder is done (given up at twice ``--seconds``); the workers
   are stopped and :mod:`lessor.demo.verdict` checks the logs. Exit status 1 names each
   broken invariant.

Every process and temporary file is removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from lessor.demo import processes
from lessor.demo.arguments import float_at_least, int_at_least
from lessor.demo.display import DcLine, ProgressDisplay
from lessor.demo.store import ReminderStore
from lessor.demo.table import render
from lessor.demo.verdict import Fault, judge
from lessor.errors import LessorError, PermissionDenied, Unavailable

__all__ = ["DemoError", "add_arguments", "run"]

DCS = ("dc-a", "dc-b", "dc-c")
FAULT_AT = 0.4  # share of --seconds
SWEEP_SHARE = 0.6  # share of --seconds the whole sweep should take with every worker up
PROBE_SECONDS = 5.0
START_TIMEOUT = 60.0  # for the first reminder to be processed
LIMIT = 2.0  # the sweep is given up after this many times --seconds


class DemoError(Exception):
    """The demo could not run (as opposed to: it ran and an invariant broke)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int_at_least(1), default=100_000,
                   help="reminders in the store (default: %(default)s)")  # fmt: skip
    p.add_argument("--seconds", type=float_at_least(5), default=40.0,
                   help="planned sweep time: faults at 40%% of it, and the work is paced to end by "
                   "~70%%; given up at twice it (default: %(default)s)")  # fmt: skip
    p.add_argument("--workers-per-dc", type=int_at_least(1), default=2,
                   help="workers in each of the 3 datacenters (default: %(default)s)")  # fmt: skip
    p.add_argument("--no-faults", action="store_true",
                   help="kill nothing: no datacenter loss, no leader kill")  # fmt: skip
    p.add_argument("--endpoints", help="use this etcd cluster (comma-separated host:port; TLS "
                   "and auth from LESSOR_ETCD_*) instead of starting a local one")  # fmt: skip
    p.add_argument("--prefix", help="etcd key prefix (default: $LESSOR_ETCD_PREFIX or /lessor/)")
    p.add_argument("--lease-seconds", type=float_at_least(0.5), default=3.0,
                   help="lease duration the workers ask for (default: %(default)s)")  # fmt: skip
    p.add_argument("--shards", type=int_at_least(1), default=16,
                   help="shards of the key space (default: %(default)s)")  # fmt: skip
    p.add_argument("--work-ms", type=float_at_least(0),
                   help="simulated work per reminder in ms (default: paced so that the sweep "
                   "takes ~60%% of --seconds)")  # fmt: skip
    p.add_argument("--section", default="demo", help="lessor section (default: %(default)s)")


@dataclass(slots=True)
class _Run:
    args: argparse.Namespace
    out: TextIO
    workdir: Path
    endpoints: list[str]
    cluster: Any = None  # LocalEtcdCluster when the demo started etcd itself
    workers: list[processes.Worker] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    died: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the demo; its exit status (0: every invariant held)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="lessor-demo-") as tmp,
            _etcd(args, out) as (
                endpoints,
                cluster,
            ),
        ):
            state = _Run(args, out, Path(tmp), endpoints, cluster)
            try:
                return _main(state)
            finally:
                processes.stop(state.workers, graceful=False)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


@contextlib.contextmanager
def _etcd(args: argparse.Namespace, out: TextIO) -> Iterator[tuple[list[str], Any]]:
    """The etcd endpoints, member i serving datacenter i; the local cluster or None."""
    from lessor.etcd.transport import parse_endpoint  # noqa: PLC0415  (grpc: only when run)
    from lessor.testing import (  # noqa: PLC0415
        SAFE_LEASE_VERSION,
        LocalEtcdCluster,
        etcd_version,
    )

    if args.endpoints:
        try:
            endpoints = [parse_endpoint(e) for e in args.endpoints.split(",")]
        except ValueError as e:
            raise DemoError(f"--endpoints: {e}") from None
        _probe(endpoints, args)
        print(f"etcd: {', '.join(endpoints)} (given)", file=out, flush=True)
        yield endpoints, None
        return
    try:
        cluster = LocalEtcdCluster(3, isolation=False)
    except FileNotFoundError as e:
        raise DemoError(f"cannot start a local etcd: {e}") from None
    version = etcd_version(cluster.binary)
    shown = ".".join(map(str, version)) if version else "version unknown"
    print(f"etcd: starting a local 3-member cluster (etcd {shown}, {cluster.binary}) ...",
          file=out, flush=True)  # fmt: skip
    if version is not None and version < SAFE_LEASE_VERSION:
        print(
            f"etcd: note: etcd {shown} can revoke leases early after a leader change (etcd "
            "issues #15247, #12528); the demo checks every lease, but production must run "
            ">= 3.5.13 (set LESSOR_ETCD_BINARY to use another etcd)",
            file=out,
            flush=True,
        )
    try:
        cluster.start()
    except (RuntimeError, OSError) as e:
        cluster.close()
        raise DemoError(f"the local etcd cluster did not start: {e}") from None
    try:
        yield cluster.endpoints, cluster
    finally:
        cluster.close()


def _probe(endpoints: list[str], args: argparse.Namespace) -> None:
    """Fail early, in one line, when the given etcd cannot be used."""
    from lessor.etcd import EtcdLessor, EtcdSettings  # noqa: PLC0415
    from lessor.etcd.admin import inspect  # noqa: PLC0415

    s = EtcdSettings.from_environment(dict(os.environ, LESSOR_ETCD_ENDPOINTS=",".join(endpoints)))
    deadline = time.monotonic() + PROBE_SECONDS
    with EtcdLessor(endpoints, prefix=args.prefix or s.prefix, ca_cert=s.ca_cert,
                    cert_cert=s.cert_cert, cert_key=s.cert_key, user=s.user,
                    password=s.password) as lessor:  # fmt: skip
        while True:
            try:
                inspect(lessor, args.section)
                return
            except PermissionDenied as e:
                raise DemoError(
                    f"etcd at {', '.join(endpoints)} denied access (check LESSOR_ETCD_USER and "
                    f"LESSOR_ETCD_PASSWORD or the client certificate, and that the user may "
                    f"read and write the prefix {lessor.prefix!r}): {e}"
                ) from None
            except Unavailable as e:
                if time.monotonic() >= deadline:
                    raise DemoError(f"etcd at {', '.join(endpoints)} did not answer within "
                                    f"{PROBE_SECONDS:g}s: {e}") from None  # fmt: skip
                time.sleep(0.2)  # a refused connection fails at once: do not spin
            except LessorError as e:
                raise DemoError(f"etcd at {', '.join(endpoints)}: {e}") from None


def _pacing(args: argparse.Namespace, workers: int) -> tuple[float, int, int]:
    """Work per reminder (s), batch size and split threshold for the workers."""
    if args.work_ms is not None:
        work = args.work_ms / 1000
    else:
        work = SWEEP_SHARE * args.seconds * workers / args.rows
    if work <= 0:
        return 0.0, 100, 1000
    # A lease should cover about a third of its time in work, and a batch a tenth of it, so
    # that few batches are cut short by the deadline.
    threshold = max(10, min(1000, int(args.lease_seconds / 3 / work)))
    batch = max(1, min(100, int(args.lease_seconds / 10 / work)))
    return work, batch, threshold


def _main(state: _Run) -> int:
    args, out = state.args, state.out
    t0 = time.monotonic()
    store = ReminderStore.create(state.workdir / "reminders.db", args.rows)
    n_workers = len(DCS) * args.workers_per_dc
    work, batch, threshold = _pacing(args, n_workers)
    print(f"store: {args.rows:,} reminders in {time.monotonic() - t0:.1f}s; "
          f"{len(DCS)} datacenters x {args.workers_per_dc} workers, {work * 1e3:.2f} ms of work "
          f"per reminder, {args.lease_seconds:g}s leases", file=out, flush=True)  # fmt: skip
    try:
        _spawn_workers(state, work, batch, threshold)
        started, ended = _sweep(state, store)
        processes.stop(state.workers, graceful=True)
        for w in state.workers:
            code = w.process.returncode
            if not w.killed and code != 0:
                state.problems.append(f"worker {w.dc}/{w.name} exited with status {code}: "
                                      f"{w.tail(3)}")  # fmt: skip
        verdict = judge(store, state.faults, started=started, ended=ended, dcs=list(DCS),
                        died=state.died, section_id=args.section,
                        lease_seconds=args.lease_seconds)  # fmt: skip
        verdict.problems.extend(state.problems)
    finally:
        store.close()
    print(render(verdict, args, list(DCS), state.died, started), file=out, flush=True)
    return 1 if verdict.failures else 0


def _member_of(state: _Run, i: int) -> str:
    return state.endpoints[i % len(state.endpoints)]


def _spawn_workers(state: _Run, work: float, batch: int, threshold: int) -> None:
    args = state.args
    env = dict(os.environ)
    if state.cluster is not None:
        # TLS, auth and holder settings in the environment are for some other etcd; the
        # demo's own cluster has none (only --prefix applies).
        env = {k: v for k, v in env.items() if not k.startswith("LESSOR_ETCD_")}
    if args.prefix:
        env["LESSOR_ETCD_PREFIX"] = args.prefix
    for i, dc in enumerate(DCS):
        n = len(state.endpoints)
        mine = [state.endpoints[(i + k) % n] for k in range(n)]  # own member first
        for k in range(args.workers_per_dc):
            name = f"w{k + 1}"
            log = state.workdir / f"{dc}-{name}.log"
            command = [
                sys.executable, "-m", "lessor.demo.worker",
                "--store", str(state.workdir / "reminders.db"), "--dc", dc, "--worker", name,
                # A bound should the demo itself die without stopping them.
                "--seconds", str(args.seconds + 60),
                "--lease-seconds", str(args.lease_seconds), "--shards", str(args.shards),
                "--section", args.section, "--work-ms", str(work * 1000),
                "--batch-size", str(batch), "--split-threshold", str(threshold),
                "--endpoints", ",".join(mine),
            ]  # fmt: skip
            state.workers.append(processes.start(dc, name, command, log, env))


def _sweep(state: _Run, store: ReminderStore) -> tuple[float, float]:
    """Show progress and inject the faults; returns when the sweep started and ended.

    The sweep's clock starts at the first processed reminder (starting six Python processes
    on two cores takes seconds). It ends when every reminder is done or, at the latest, at
    ``LIMIT`` times ``--seconds``: a datacenter's orphaned leases must first expire.
    """
    args = state.args
    display = ProgressDisplay(state.out, total=args.rows, seconds=args.seconds)
    swept = dict.fromkeys(DCS, 0)
    faulted = args.no_faults
    spawned = time.monotonic()
    started: float | None = None
    exited: set[int] = set()
    end = ""
    while True:
        now = time.monotonic()
        progress = store.progress()
        for dc, n in progress.per_dc.items():
            swept[dc] += n
        if started is None:
            if progress.per_dc:
                started = now
            elif now - spawned > START_TIMEOUT:
                raise DemoError(f"no worker processed a reminder within {START_TIMEOUT:g}s of "
                                "starting; their output:\n"
                                f"{processes.tails(state.workers)}")  # fmt: skip
        elapsed = 0.0 if started is None else now - started
        display.update(elapsed, _lines(state, swept), progress.left)
        for text in _early_exits(state, exited):
            display.event(elapsed, text)
        if progress.left == 0:
            end = "every reminder is done"
        elif all(w.process.poll() is not None for w in state.workers):
            end = "every worker has exited"
        elif elapsed >= LIMIT * args.seconds:
            end = f"gave up after {LIMIT:g} x --seconds with {progress.left:,} reminders left"
        if end:
            break
        if started is not None and not faulted and elapsed >= FAULT_AT * args.seconds:
            faulted = True
            for text in _inject(state):
                display.event(time.monotonic() - started, text)
        time.sleep(0.25)  # the display's refresh period: nothing announces progress
    display.finish()  # the last progress block stays on screen
    display.event(elapsed, end)
    return spawned if started is None else started, time.monotonic()


def _early_exits(state: _Run, seen: set[int]) -> list[str]:
    """Workers that exited on their own since last asked: each is a problem of the run."""
    events = []
    for w in state.workers:
        code = w.process.poll()
        if code is not None and not w.killed and w.process.pid not in seen:
            seen.add(w.process.pid)
            state.problems.append(f"worker {w.dc}/{w.name} exited early with status {code}: "
                                  f"{w.tail(3)}")  # fmt: skip
            events.append(f"worker {w.dc}/{w.name} exited with status {code}")
    return events


def _lines(state: _Run, swept: dict[str, int]) -> list[DcLine]:
    lines = []
    for i, dc in enumerate(DCS):
        mine = [w for w in state.workers if w.dc == dc]
        alive = sum(1 for w in mine if w.process.poll() is None)
        member = _member_of(state, i)
        if state.cluster is not None:
            member = f"m{i}" + ("" if state.cluster.member(i).running else " (down)")
        lines.append(DcLine(dc, member, alive, len(mine), swept[dc]))
    return lines


def _inject(state: _Run) -> list[str]:
    """Lose one datacenter: SIGKILL its workers and, with a local cluster, the etcd leader
    (its datacenter is the one lost). Returns what happened, for the display."""
    events = []
    leader: int | None = None
    if state.cluster is not None:
        try:
            leader = state.cluster.leader(timeout=5.0)
        except TimeoutError as e:
            state.problems.append(f"no etcd leader to kill: {e}")
    index = leader if leader is not None else 1
    dc = DCS[index]
    victims = [w for w in state.workers if w.dc == dc]
    at = leader_at = time.monotonic()
    for w in victims:
        w.killed = True
        w.process.kill()
    if leader is not None:
        state.cluster.kill(leader)  # returns once the member is dead
        # Measured from here: a lease asked for between ``at`` and now could still be
        # granted by the old leader, in a few milliseconds, and would tell nothing.
        leader_at = time.monotonic()
    for w in victims:
        w.process.wait()
    state.died[dc] = at
    state.faults.append(Fault("dc", at, dc, f"{dc}'s {len(victims)} workers SIGKILLed"))
    events.append(f"FAULT: {dc} lost: its {len(victims)} workers SIGKILLed while holding leases")
    if leader is not None:
        member = f"m{leader}"
        state.faults.append(Fault("leader", leader_at, member, f"etcd leader {member} killed"))
        events.append(f"FAULT: etcd leader {member} ({state.endpoints[leader]}) killed")
    return events
