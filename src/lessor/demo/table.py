"""The table the demo ends with: per datacenter, the invariants, and recovery per fault."""

from __future__ import annotations

import argparse

from lessor.demo.verdict import Verdict

__all__ = ["render"]

_LABEL = 46


def _row(label: str, cells: list[str], note: str = "") -> str:
    text = f"{label:<{_LABEL}}" + "".join(f"{c:>12}" for c in cells)
    return f"{text}   {note}" if note else text


def render(
    verdict: Verdict,
    args: argparse.Namespace,
    dcs: list[str],
    died: dict[str, float],
    started: float,
) -> str:
    """The end table; ``started`` is when the sweep began (fault times are shown from it)."""
    v = verdict
    per = [v.per_dc[dc] for dc in dcs]
    etcd = f"etcd at {args.endpoints}" if args.endpoints else "a local 3-member etcd cluster"
    workers = [f"{args.workers_per_dc}" + (" killed" if dc in died else "") for dc in dcs]
    rates = [f"{s.processed / s.alive_seconds:,.0f}" if s.alive_seconds > 0 else "-" for s in per]
    lines = [
        "",
        f"lessor demo: {v.rows:,} reminders, {len(dcs)} datacenters x {args.workers_per_dc} "
        f"workers, {etcd}, {v.seconds:.1f}s of sweeping",
        _row("", [*dcs, "total"]),
        _row("workers", [*workers, str(args.workers_per_dc * len(dcs))]),
        _row("reminders processed", [*(f"{s.processed:,}" for s in per), f"{v.processed:,}"]),
        _row(
            "leases granted (with ranges)",
            [*(f"{s.leases:,}" for s in per), f"{sum(s.leases for s in per):,}"],
        ),
        _row("throughput (reminders/s)", [*rates, f"{v.throughput:,.0f}"]),
        "",
        _row("reminders never processed", [f"{v.left:,}"], "must be 0"),
        _row("processed by two holders at once", [f"{len(v.item_overlaps):,}"], "must be 0"),
        _row("leases holding a common key at once", [f"{len(v.lease_overlaps):,}"], "must be 0"),
        _row("fencing-token inversions", [f"{len(v.inversions):,}"], "must be 0"),
        _row("processed again later (at least once)", [f"{v.repeats:,}"]),
        _row("writes refused by the fence", [f"{v.rejected:,}"]),
    ]
    if v.recoveries:
        lines += ["", _row("time to recover after each fault", ["took", "target"])]
        for r in v.recoveries:
            took = "not recovered" if r.seconds is None else f"{r.seconds:.2f} s"
            aim = "" if r.target is None else f"{r.target:g} s"
            note = f"MISSED: {r.note}" if r.target is not None and r.missed else r.note
            what = f"t={r.fault.at - started:.1f}s {r.fault.detail}"
            lines.append(f"  {what:<{_LABEL - 2}}{took:>12}{aim:>12}   {note}")
        lines += [
            "  (a datacenter's loss: from the kill until every reminder left in the ranges its "
            "workers held was processed",
            "   by another datacenter, which first waits for those leases to expire; a leader "
            "kill: from the kill until the first",
            "   lease asked for after it was granted)",
        ]
    elif args.no_faults:
        lines += ["", "no faults injected (--no-faults)"]
    else:
        lines += ["", "no faults injected: the sweep ended before 40% of --seconds"]
    failures = v.failures
    lines.append("")
    if failures:
        lines.append("FAILED:")
        lines.extend(f"  - {f}" for f in failures)
    else:
        lines.append("OK: every reminder processed, none by two holders at once.")
    return "\n".join(lines)
