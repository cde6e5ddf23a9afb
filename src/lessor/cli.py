"""The ``lessor`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from lessor.demo.run import add_arguments as add_demo_arguments
from lessor.errors import LessorError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    """Sweepers in three datacenters share a key space through etcd; prove nobody overlapped."""
    from lessor.demo.run import DemoError, run  # noqa: PLC0415  (spawns etcd and workers)

    try:
        return run(args)
    except DemoError as e:
        print(f"lessor: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lessor: interrupted; every process and temporary file removed", file=sys.stderr)
        return 130


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
                            for le in s.leases],
                 "turn": None if s.turn is None else {
                     "holder": s.turn.holder, "etcd_lease": f"{s.turn.lease:x}",
                     "revision": s.turn.revision}}
                for s in sections
            ], indent=2))  # fmt: skip
            return 0
        if not sections:
            print(f"no sections under {lessor.prefix!r}")
        for s in sections:
            state = f"CORRUPT: {s.corrupt}" if s.corrupt else (
                f"{len(s.leases)} live leases, {s.dead_entries} dead entries")  # fmt: skip
            print(f"section {s.section_id!r}: {state}")
            if s.turn is not None:
                print(f"  turn: {s.turn.holder} (etcd lease {s.turn.lease:x}), the next to "
                      "win a swap")  # fmt: skip
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


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="lessor", description="Lease ranges of a key space to cooperating workers."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="sweep a store of reminders from three datacenters through etcd, with faults",
        description="Starts a local 3-member etcd cluster (or uses --endpoints), makes a SQLite "
        "store of synthetic reminders, and sweeps it with worker processes in three simulated "
        "datacenters, each talking to its own etcd member first. At 40% of --seconds the "
        "etcd leader's datacenter is lost: its workers are SIGKILLed holding leases and the "
        "leader is killed. Ends with a table: reminders processed, reminders processed by two "
        "holders at once (must be 0), throughput, and the time to recover after each fault. "
        "Exits 1, naming it, if any invariant broke.",
    )
    add_demo_arguments(demo)
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
        "fencing token and remaining TTL, and who holds the section's turn (a process whose "
        "swaps kept losing, which the others let win next). TLS and auth come from "
        "LESSOR_ETCD_*.",
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
