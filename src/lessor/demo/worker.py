"""One sweeper process of the demo: ``python -m lessor.demo.worker --store PATH --dc NAME
--worker NAME``.

It sweeps the reminders of the store at ``--store`` with a :class:`~lessor.sweep.Sweeper` on
the etcd lessor: scan a shard for reminders not done, lease the span found, and process the
granted ones in batches. Processing a batch is simulated work (``--work-ms`` per reminder,
waited on the lease's context, so it stops when the lease's deadline comes) followed by one
transaction that marks the reminders done, fenced by the lease's token (``UPDATE ... WHERE
fence < token``), and logs each processing with its times. Every lease granted is logged too,
with its ranges, token, deadline and release time: :mod:`lessor.demo.verdict` proves from
these logs that no reminder was processed by two holders at once.

etcd comes from ``--endpoints`` or ``LESSOR_ETCD_ENDPOINTS``; TLS, auth and the key prefix
from the other ``LESSOR_ETCD_*`` variables (``lessor.etcd.EtcdSettings``). Calls start on the
first endpoint (``endpoint_order="given"``): list the member of the worker's own datacenter
first. The worker runs for ``--seconds`` or until SIGTERM/SIGINT, then gives its lease back
and exits 0. This command line is also what the deploy/ worker container runs: keep it stable.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import cast

from lessor.context import Context
from lessor.contract import Grant, Lessor, fencing_token
from lessor.demo.arguments import float_at_least, int_at_least
from lessor.demo.store import KEY_SPACE_BYTES, ReminderStore
from lessor.errors import LessorError
from lessor.partition import Partition
from lessor.sweep import ShardReport, Sweeper

__all__ = ["RecordingLessor", "build_parser", "main"]

log = logging.getLogger("lessor.demo.worker")


class RecordingLessor(Lessor):
    """Leases from ``inner``, logging each grant and give-back in the store.

    :meth:`wait_free` and :meth:`is_held` are ``inner``'s own (for etcd, a watch on the
    section's holders and a read of them), so the sweeper retries a denied range as soon as it
    frees, not after the contract's polling default's back-off, and its probes follow the
    other workers' leases (a lessor that forwards ``_wait_free`` and ``_is_held`` observes its
    holders: :func:`lessor.sweep_waits.observes`).
    """

    backend = "etcd"

    def __init__(self, inner: Lessor, store: ReminderStore, *, worker: str, dc: str) -> None:
        self._inner = inner
        self._store = store
        self._worker = worker
        self._dc = dc

    @property
    def max_duration(self) -> float:
        return self._inner.max_duration

    def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        return self._inner.wait_free(ctx, section_id, part)

    def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        return self._inner.is_held(ctx, section_id, part)

    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        requested = time.monotonic()
        grant = self._inner._acquire(ctx, section_id, part, dur)
        try:
            deadline = grant.deadline if ctx.deadline is None else min(grant.deadline, ctx.deadline)
            row = self._store.record_lease(
                worker=self._worker,
                dc=self._dc,
                token=grant.token,
                ranges=grant.partitions,
                requested=requested,
                granted=time.monotonic(),
                deadline=deadline,
            )
        except BaseException:
            self._inner._release(grant)
            raise
        return Grant(grant.partitions, grant.deadline, grant.token, (grant, row))

    def _release(self, grant: Grant) -> None:
        inner, row = cast(tuple[Grant, int], grant.handle)
        # Logged before the give-back, when the holder stopped relying on the lease: a worker
        # killed in between leaves its ranges held in etcd until its lease ends, later than
        # the log says, which hides nothing. Logged after it, a worker killed in between left
        # a lease the log said it held to its deadline although etcd had freed its ranges,
        # and the next holder's grant showed as an overlap that never was.
        try:
            self._store.record_release(row, time.monotonic())
        finally:
            self._inner._release(inner)


class Worker:
    """The scan and process callbacks of one worker's sweeper."""

    def __init__(
        self, store: ReminderStore, *, worker: str, dc: str, work_seconds: float, limit: int
    ) -> None:
        self.store = store
        self.worker = worker
        self.dc = dc
        self.work_seconds = work_seconds
        self.limit = limit
        self.accepted = 0
        self.errors = 0

    def scan(self, ctx: Context, shard: Partition) -> list[str]:
        return self.store.scan(shard, self.limit)

    def process(self, ctx: Context, batch: Sequence[str]) -> None:
        start = time.monotonic()
        token = fencing_token(ctx)
        if token is None:
            raise RuntimeError("process called without a lease's context")
        # Scanned before the lease was granted: an earlier holder may have done some since.
        todo = self.store.undone(batch)
        if not todo:
            return
        if ctx.wait(self.work_seconds * len(todo)):
            return  # the lease ended during the work: leave the batch for a later sweep
        accepted = self.store.process(
            ctx, todo, worker=self.worker, dc=self.dc, token=token, start=start
        )
        self.accepted += accepted or 0

    def on_error(self, report: ShardReport, err: BaseException) -> None:
        self.errors += 1
        print(f"{self.dc}/{self.worker}: sweep of shard {report.shard} (level {report.level}): "
              f"{type(err).__name__}: {err}", file=sys.stderr, flush=True)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lessor.demo.worker",
        description="One sweeper of the lessor demo: sweeps the reminders of a SQLite store "
        "through the etcd lessor, fencing every write with the lease's token and logging what it "
        "processed and leased. etcd: --endpoints or LESSOR_ETCD_ENDPOINTS; TLS, auth and prefix "
        "from LESSOR_ETCD_* (see lessor.etcd.EtcdSettings). Runs for --seconds or until "
        "SIGTERM/SIGINT, then exits 0.",
    )
    p.add_argument("--store", required=True, help="the SQLite reminder store (made by the demo)")
    p.add_argument("--dc", required=True, help="this worker's datacenter name, e.g. dc-a")
    p.add_argument("--worker", required=True, help="this worker's name, e.g. w1")
    p.add_argument("--seconds", type=float_at_least(0, exclusive=True), default=math.inf,
                   help="stop after this many seconds (default: run until signalled)")  # fmt: skip
    p.add_argument("--lease-seconds", type=float_at_least(0, exclusive=True), default=3.0,
                   help="lease duration asked for (default: %(default)s)")  # fmt: skip
    p.add_argument("--shards", type=int_at_least(1), default=16,
                   help="shards of the key space (default: %(default)s)")  # fmt: skip
    p.add_argument("--section", default="demo",
                   help="lessor section the sweepers share (default: %(default)s)")  # fmt: skip
    p.add_argument("--work-ms", type=float_at_least(0), default=0.0,
                   help="simulated work per reminder, in ms (default: %(default)s)")  # fmt: skip
    p.add_argument("--batch-size", type=int_at_least(1), default=100,
                   help="reminders per process call (default: %(default)s)")  # fmt: skip
    p.add_argument("--split-threshold", type=int_at_least(1), default=1000,
                   help="most reminders leased per sweep of a shard; the rest of a crowded "
                   "shard is split (default: %(default)s)")  # fmt: skip
    p.add_argument("--endpoints", help="comma-separated etcd host:port list, own datacenter's "
                   "member first (default: $LESSOR_ETCD_ENDPOINTS)")  # fmt: skip
    p.add_argument("--metrics-port", type=int_at_least(1),
                   help="serve Prometheus metrics on this port (lessor[metrics])")  # fmt: skip
    return p


def _stop_on_signals(root: Context) -> None:
    """Cancel ``root`` on SIGTERM or SIGINT.

    The signals are blocked here (and so in every thread started later) and taken by a thread
    of their own: a Python signal handler runs on the main thread between bytecodes, possibly
    while that thread holds the very lock ``cancel`` takes.
    """
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)

    def wait() -> None:
        signal.sigwait(stops)
        root.cancel()

    threading.Thread(target=wait, name="signals", daemon=True).start()


def _serve_metrics(port: int) -> None:
    try:
        import prometheus_client  # noqa: PLC0415  (the optional metrics extra)

        from lessor.metrics import enable  # noqa: PLC0415
    except ImportError as e:
        raise SystemExit(
            f"lessor.demo.worker: error: --metrics-port needs the metrics extra "
            f"(pip install 'lessor[metrics]'): {e}"
        ) from None
    enable()
    prometheus_client.start_http_server(port)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    from lessor.etcd import EtcdLessor, EtcdSettings  # noqa: PLC0415  (after the arguments)

    env = dict(os.environ)
    if args.endpoints:
        env["LESSOR_ETCD_ENDPOINTS"] = args.endpoints
    name = f"{args.dc}/{args.worker}"
    try:
        settings = EtcdSettings.from_environment(env)
        store = ReminderStore(args.store)
    except (ValueError, OSError) as e:
        print(f"lessor.demo.worker: error: {e}", file=sys.stderr)
        return 2
    root = Context.background()
    _stop_on_signals(root)
    if args.metrics_port is not None:
        _serve_metrics(args.metrics_port)
    ctx = root.with_timeout(args.seconds) if math.isfinite(args.seconds) else root
    etcd = EtcdLessor(list(settings.endpoints), prefix=settings.prefix,
                      holder=settings.holder or name, ca_cert=settings.ca_cert,
                      cert_cert=settings.cert_cert, cert_key=settings.cert_key,
                      user=settings.user, password=settings.password,
                      endpoint_order="given")  # fmt: skip
    worker = Worker(store, worker=args.worker, dc=args.dc, work_seconds=args.work_ms / 1000,
                    limit=args.split_threshold + 1)  # fmt: skip
    sweeper: Sweeper[str] = Sweeper(
        RecordingLessor(etcd, store, worker=args.worker, dc=args.dc),
        args.section,
        Partition.universe(KEY_SPACE_BYTES),
        shards=args.shards,
        scan=worker.scan,
        process=worker.process,
        key=_key,
        lease_seconds=args.lease_seconds,
        batch_size=args.batch_size,
        split_threshold=args.split_threshold,
        rng=random.Random(),
        on_error=worker.on_error,
    )
    try:
        stats = sweeper.run(ctx)
    except LessorError as e:
        print(f"lessor.demo.worker: {name}: error: {e}", file=sys.stderr)
        return 1
    finally:
        etcd.close()
        store.close()
    print(f"{name}: {stats.shards_swept} shard sweeps ({stats.resweeps} on a wake-up, "
          f"{stats.probes} probes), {stats.processed} reminders handed over, "
          f"{worker.accepted} written, {stats.errors} errors", flush=True)  # fmt: skip
    return 0


def _key(item: str) -> int:
    return int(item, 16)


if __name__ == "__main__":
    sys.exit(main())
