"""The ``lessor`` command line."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from lessor.context import Context
from lessor.errors import LessorError
from lessor.history import History, Holding, find_overlaps, find_token_inversions
from lessor.partition import Partition
from lessor.registry import get

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    """Workers sweep one key space through one lessor; prove nobody overlapped."""
    ctx = Context.background()
    lessor = get(ctx, args.backend)
    universe = Partition.universe(args.key_space_bytes)
    shards = universe.split(args.shards)
    history = History()
    keys_done = [0] * args.workers
    stop = ctx.with_timeout(args.seconds)

    def worker(n: int) -> None:
        rng = random.Random(n)
        while not stop.done():
            # Two neighbouring shards: workers collide often, and each gets what is free.
            i = rng.randrange(len(shards) - 1)
            want = Partition(shards[i].low, shards[i + 1].high)
            with lessor.lease("demo", want, args.lease_seconds, ctx=stop) as lease:
                start = time.monotonic()
                for p in lease.partitions:
                    keys_done[n] += p.high - p.low
                lease.ctx.wait(rng.uniform(0, 0.002))  # the work itself
                end = min(time.monotonic(), lease.deadline)
                history.record(
                    Holding(f"worker-{n}", "demo", tuple(lease.partitions), start, end, lease.token)
                )

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    holdings = history.holdings
    overlaps = find_overlaps(holdings)
    inversions = find_token_inversions(holdings)
    granted = sum(1 for h in holdings if h.ranges)
    print(
        f"backend {args.backend!r}: {args.workers} workers, {args.seconds:g} s, "
        f"{len(shards)} shards of {universe}"
    )
    print(f"{'worker':<10} {'leases':>8} {'keys':>14}")
    for n in range(args.workers):
        leases = sum(1 for h in holdings if h.holder == f"worker-{n}")
        print(f"{f'worker-{n}':<10} {leases:>8} {keys_done[n]:>14}")
    print(
        f"leases {len(holdings)} ({granted} with ranges), "
        f"{len(holdings) / args.seconds:.0f}/s; overlaps {len(overlaps)}; "
        f"token inversions {len(inversions)}"
    )
    for o in overlaps[:10]:
        print(f"OVERLAP: {o}", file=sys.stderr)
    return 1 if overlaps or inversions else 0


def _etcd_lessor(args: argparse.Namespace) -> Any:
    """An EtcdLessor from --endpoints/--prefix, the rest (TLS, auth) from LESSOR_ETCD_*."""
    from lessor.etcd import EtcdLessor, EtcdSettings  # noqa: PLC0415  (etcd only when asked)

    env = dict(os.environ)
    if args.endpoints:
        env["LESSOR_ETCD_ENDPOINTS"] = args.endpoints
    if args.prefix:
        env["LESSOR_ETCD_PREFIX"] = args.prefix
    s = EtcdSettings.from_environment(env)
    return EtcdLessor(list(s.endpoints), prefix=s.prefix, ca_cert=s.ca_cert, cert_cert=s.cert_cert,
                      cert_key=s.cert_key, user=s.user, password=s.password)  # fmt: skip


def _inspect(args: argparse.Namespace) -> int:
    """Print every section's live leases."""
    from lessor.etcd.admin import inspect  # noqa: PLC0415

    with _etcd_lessor(args) as lessor:
        sections = inspect(lessor, args.section)
        if args.json:
            print(json.dumps([
                {"section": s.section_id, "corrupt": s.corrupt, "dead_entries": s.dead_entries,
                 "leases": [{"ranges": le.ranges.to_strings(), "holder": le.holder,
                             "token": le.token, "ttl": le.ttl, "etcd_lease": f"{le.lease:x}"}
                            for le in s.leases]}
                for s in sections
            ], indent=2))  # fmt: skip
            return 0
        if not sections:
            print(f"no sections under {lessor.prefix!r}")
        for s in sections:
            state = f"CORRUPT: {s.corrupt}" if s.corrupt else (
                f"{len(s.leases)} live leases, {s.dead_entries} dead entries")  # fmt: skip
            print(f"section {s.section_id!r}: {state}")
            if s.leases:
                print(f"  {'token':>10}  {'ttl':>5}  {'holder':<24}  ranges")
            for le in s.leases:
                print(f"  {le.token:>10}  {le.ttl:>4}s  {le.holder:<24}  "
                      f"{' '.join(le.ranges.to_strings())}")  # fmt: skip
    return 0


def _repair(args: argparse.Namespace) -> int:
    """Reset a section whose value cannot be decoded."""
    from lessor.etcd.admin import inspect, repair  # noqa: PLC0415

    with _etcd_lessor(args) as lessor:
        found = inspect(lessor, args.section)
        if found and found[0].corrupt is not None:
            print(f"section {args.section!r} will lose its stored value ({len(found[0].raw)} "
                  f"bytes): {found[0].raw[:200]!r}")  # fmt: skip
        if not args.yes:
            print("lessor: error: repair discards data: run again with --yes to do it",
                  file=sys.stderr)  # fmt: skip
            return 2
        discarded = repair(lessor, args.section, force=args.force)
        print(f"section {args.section!r} repaired: discarded {len(discarded)} bytes")
    return 0


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lessor", description="Lease ranges of a key space to cooperating workers."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run workers that share a key space through a lessor, and check them",
        description="Threads lease overlapping ranges of one key space; the recorded history "
        "is checked for overlaps. Exits 1 if any two holders overlapped.",
    )
    demo.add_argument("--backend", default="memory", help="lessor id (default: %(default)s)")
    demo.add_argument(
        "--workers", type=_at_least(1), default=8, help="threads (default: %(default)s)"
    )
    demo.add_argument(
        "--seconds",
        type=_positive_float,
        default=3.0,
        help="how long to run (default: %(default)s)",
    )
    demo.add_argument(
        "--shards",
        type=_at_least(2),
        default=16,
        help="shards of the key space (default: %(default)s)",
    )
    demo.add_argument(
        "--key-space-bytes",
        type=_at_least(1),
        default=4,
        help="key size in bytes (default: %(default)s)",
    )
    demo.add_argument(
        "--lease-seconds",
        type=_positive_float,
        default=1.0,
        help="lease duration asked for (default: %(default)s)",
    )
    demo.set_defaults(func=_demo)

    def etcd_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--endpoints", help="comma-separated host:port list "
                             "(default: $LESSOR_ETCD_ENDPOINTS)")  # fmt: skip
        command.add_argument("--prefix", help="key prefix (default: $LESSOR_ETCD_PREFIX or "
                             "/lessor/)")  # fmt: skip

    inspect = sub.add_parser(
        "inspect",
        help="show every section's live leases in etcd",
        description="Lists the sections under the prefix: each live lease's ranges, holder, "
        "fencing token and remaining TTL. TLS and auth come from LESSOR_ETCD_*.",
    )
    inspect.add_argument("--section", help="only this section id")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    etcd_options(inspect)
    inspect.set_defaults(func=_inspect)

    repair = sub.add_parser(
        "repair", help="reset a section whose stored value cannot be decoded",
        description="Deletes the stored value of a section that cannot be decoded, after "
                    "printing what it discards. An intact section is never touched.")  # fmt: skip
    repair.add_argument("--section", required=True, help="the section id")
    repair.add_argument("--yes", action="store_true", help="really discard the value")
    repair.add_argument("--force", action="store_true",
                        help="repair even while holders' markers are alive")  # fmt: skip
    etcd_options(repair)
    repair.set_defaults(func=_repair)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except (LessorError, ValueError) as e:
        print(f"lessor: error: {e}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
