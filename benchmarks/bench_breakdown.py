"""Where an acquisition's time goes (issue 14): the breakdown of the lessor's figures.

Built from three sources, none of them the lessor's private state:

* what ``lessor.observe`` told each worker process (``bench_worker.Breakdown``): every attempt
  (its outcome — settled, lost, stale, error —, how long it took, how many of the process's
  acquisitions it carried, the pause after it), every acquisition's wait at its section's
  gate, and the grants;
* the workers' CPU time (:func:`time.process_time`) over the round, and with
  ``bench.py --profile`` one more round in which every worker's threads ran under cProfile
  (``bench_profile.py``);
* etcd's own counters and latency histograms, scraped around every round (``etcd_metrics.py``).

:func:`breakdown` turns them into figures per grant; :func:`render_breakdown` into the
report's tables, beside the raw single-client put of the same etcd (S1's for one member,
S4a's for three) that the issue's targets compare against.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from etcd_metrics import Counts

__all__ = ["Told", "breakdown", "render_breakdown"]


@dataclass
class Told:
    """What the lessor's observers told in every worker (``bench_worker.Breakdown``), summed
    over rounds; ``workers`` is empty when no worker's lessor tells its attempts."""

    workers: set[int] = field(default_factory=set)
    members_of_cluster: int = 1  # etcd members: each fsyncs every write
    grants: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    outcome_s: Counter[str] = field(default_factory=Counter)
    members: int = 0
    attempt_s: float = 0.0  # summed over processes, as are the other seconds
    pause_s: float = 0.0
    gap_s: float = 0.0
    gaps: int = 0
    wall_s: float = 0.0  # each process's round, summed
    queued_n: int = 0
    queued_s: float = 0.0
    leads: int = 0
    freed_n: int = 0
    rode: int = 0
    loss_runs: dict[int, list[int]] = field(default_factory=dict)  # worker -> runs of losses
    wait_runs: dict[int, list[int]] = field(default_factory=dict)  # the same, deferrals too
    attempt_hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 120_000_000, 3))
    queued_hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 120_000_000, 3))
    released_hist: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 120_000_000, 3))
    profile: dict[str, Any] | None = None

    def add(self, b: dict[str, Any] | None, worker: int, cpu: float) -> None:
        if b is None:
            return
        self.workers.add(worker)
        self.grants += b["grants"]
        self.outcomes.update(b["outcomes"])
        self.outcome_s.update(b["outcome_s"])
        self.members += b["members"]
        self.attempt_s += sum(b["outcome_s"].values())
        self.pause_s += b["pause_s"]
        self.gap_s += b["gap_s"]
        self.gaps += b["gaps"]
        self.wall_s += b["wall_s"]
        self.queued_n += b["queued_n"]
        self.queued_s += b["queued_s"]
        self.leads += b["leads"]
        if "released_hist" in b:  # a newer benchmark worker
            self.freed_n += b["freed_n"]
            self.rode += b["rode"]
            self.released_hist.add(HdrHistogram.decode(b["released_hist"]))
        self.loss_runs.setdefault(worker, []).extend(b["loss_runs"])
        self.wait_runs.setdefault(worker, []).extend(b.get("wait_runs", ()))
        self.attempt_hist.add(HdrHistogram.decode(b["attempt_hist"]))
        self.queued_hist.add(HdrHistogram.decode(b["queued_hist"]))


def breakdown(
    told: Told, latency: HdrHistogram, *, cpu: float, cycles: int, c: Counts, elapsed: float
) -> dict[str, Any] | None:
    """Where an acquisition's time went, from what the lessor's observers were ``told``, the
    contender's acquisition ``latency`` (µs), its workers' ``cpu`` seconds over its
    ``cycles``, and etcd's own counters ``c`` over the ``elapsed`` seconds of its rounds; None
    when the lessor does not tell attempts."""
    if not told.workers:
        return None  # a lessor that does not tell its attempts
    grants, attempts = told.grants, sum(told.outcomes.values())
    settled, lost = told.outcomes.get("settled", 0), told.outcomes.get("lost", 0)
    stale, errors = told.outcomes.get("stale", 0), told.outcomes.get("error", 0)

    def per(n: float, d: float) -> float | None:
        return n / d if d else None

    def ms(seconds: float, d: float) -> float | None:
        return seconds / d * 1e3 if d else None

    fsyncs = c.durations["wal_fsync_count"]
    mean_acq = latency.get_mean_value() / 1e3
    gate = ms(told.queued_s, told.queued_n)
    return {
        "grants_told": grants,
        "attempts": attempts,
        "attempts_per_grant": per(attempts, grants),
        "lost_per_grant": per(lost, grants),
        "stale_per_grant": per(stale, grants),
        "deferred_per_grant": per(told.outcomes.get("deferred", 0), grants),
        "longest_wait_run": max((max(r, default=0) for r in told.wait_runs.values()), default=0),
        "lost": lost,
        "stale": stale,
        "errors": errors,
        "lost_share_of_attempts": per(lost + stale, attempts),
        "longest_loss_run": max((max(r, default=0) for r in told.loss_runs.values()), default=0),
        "loss_runs_per_process_max": {
            str(w): max(r, default=0) for w, r in sorted(told.loss_runs.items())
        },
        "loss_run_mean": per(
            sum(sum(r) for r in told.loss_runs.values()),
            sum(len(r) for r in told.loss_runs.values()),
        ),
        "grants_per_settling_attempt": per(grants, settled),
        "members_per_attempt": per(told.members, attempts),
        "attempt_ms_p50": told.attempt_hist.get_value_at_percentile(50) / 1e3,
        "attempt_ms_p99": told.attempt_hist.get_value_at_percentile(99) / 1e3,
        "attempt_ms_mean": told.attempt_hist.get_mean_value() / 1e3,
        "attempt_ms_mean_by_outcome": {
            o: ms(told.outcome_s[o], n) for o, n in sorted(told.outcomes.items())
        },
        "pause_ms_per_attempt": ms(told.pause_s, attempts),
        "between_attempts_ms_mean": ms(told.gap_s, told.gaps),
        "process_time_in_attempts": per(told.attempt_s, told.wall_s),
        "process_time_in_pauses": per(told.pause_s, told.wall_s),
        "process_time_between_attempts": per(told.gap_s - told.pause_s, told.wall_s),
        "acquisition_ms_mean": mean_acq,
        "gate_ms_mean": gate,
        "gate_ms_p50": told.queued_hist.get_value_at_percentile(50) / 1e3,
        "gate_ms_p99": told.queued_hist.get_value_at_percentile(99) / 1e3,
        "leading_ms_mean": None if gate is None else mean_acq - gate,
        "led_share": per(told.leads, told.queued_n),
        "releases_rode_share": per(told.rode, told.freed_n),
        "release_ms_p50": told.released_hist.get_value_at_percentile(50) / 1e3,
        "release_ms_p99": told.released_hist.get_value_at_percentile(99) / 1e3,
        "client_cpu_ms_per_grant": ms(cpu, cycles),
        "client_cpu_share_of_wall": per(cpu, told.wall_s),
        "client_cpu_cores": per(cpu, elapsed),
        "etcd_cpu_ms_per_grant": ms(c.durations["cpu_seconds"], cycles),
        "etcd_cpu_cores": per(c.durations["cpu_seconds"], elapsed),
        "etcd_writes_per_grant": per(c.writes, cycles),
        "etcd_wal_fsync_ms_mean": c.mean_ms("wal_fsync"),
        "etcd_wal_fsyncs_per_write": per(fsyncs, c.writes * told.members_of_cluster),
        "etcd_backend_commit_ms_mean": c.mean_ms("backend_commit"),
        "etcd_apply_ms_mean": c.mean_ms("apply"),
        "etcd_peer_round_trip_ms_mean": c.mean_ms("peer_round_trip"),
        "etcd_proposals_failed": c.proposals_failed,
        "profile": told.profile,
    }


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def _baseline(report: dict[str, Any], members: int) -> dict[str, Any] | None:
    """The raw single-client put of the same etcd in this run: S1's on one member, S4a's on
    three (one thread putting one key, as fast as it can)."""
    wanted = "S1" if members == 1 else "S4a"
    for s in report["scenarios"]:
        if s["id"] == wanted:
            put: dict[str, Any] = s["contenders"]["put"]
            return put
    return None


ROWS: list[tuple[str, str, str]] = [
    # (label, key in the breakdown, format); keys starting with "=" are computed below
    ("lessor grants/s", "=rate", ",.1f"),
    ("raw single-client put/s on the same etcd (S1, S4a)", "=put_rate", ",.1f"),
    ("lessor grants/s / raw single-client put/s", "=put_ratio", ".2f"),
    ("acquisition p50 / p99 ms", "=p50_p99", ""),
    ("raw single-client put p50 ms", "=put_p50", ".2f"),
    ("attempts per grant", "attempts_per_grant", ".2f"),
    ("lost swaps per grant", "lost_per_grant", ".2f"),
    ("stale states (a re-read, no swap) per grant", "stale_per_grant", ".3f"),
    ("share of attempts lost or stale", "lost_share_of_attempts", ".0%"),
    ("longest run of losses in one process (attempts in a row)", "longest_loss_run", "d"),
    ("deferred to another's turn (a read, no swap) per grant", "deferred_per_grant", ".3f"),
    ("longest run of attempts without a win, deferrals included", "longest_wait_run", "d"),
    ("mean run of losses", "loss_run_mean", ".2f"),
    ("acquisitions carried per attempt (group commit)", "members_per_attempt", ".2f"),
    ("grants per settling attempt", "grants_per_settling_attempt", ".2f"),
    ("attempt ms p50 / p99", "=attempt_p50_p99", ""),
    ("attempt ms mean: settled / lost", "=attempt_by_outcome", ""),
    ("pause after an attempt (back-off) ms mean", "pause_ms_per_attempt", ".3f"),
    ("one attempt's end to the next one's start ms mean", "between_attempts_ms_mean", ".2f"),
    ("a process's time: an attempt in flight", "process_time_in_attempts", ".0%"),
    ("a process's time: pausing (back-off)", "process_time_in_pauses", ".1%"),
    ("a process's time: between attempts, not pausing", "process_time_between_attempts", ".0%"),
    ("acquisition mean ms", "acquisition_ms_mean", ".2f"),
    ("  of which at the gate (behind the process's others) ms", "gate_ms_mean", ".2f"),
    ("  of which leading (attempts and pauses) ms", "leading_ms_mean", ".2f"),
    ("gate wait p50 / p99 ms", "=gate_p50_p99", ""),
    ("acquisitions that led (the rest were settled by another's attempt)", "led_share", ".0%"),
    ("releases that rode a swap (no etcd write of their own)", "releases_rode_share", ".0%"),
    ("release (until its ranges are free for all) ms p50 / p99", "=release_p50_p99", ""),
    (
        "client CPU per cycle ms (acquire + release, all threads of a process)",
        "client_cpu_ms_per_grant",
        ".2f",
    ),
    ("client CPU, cores busy per worker process", "client_cpu_share_of_wall", ".2f"),
    ("client CPU, cores busy, all worker processes", "client_cpu_cores", ".2f"),
    ("etcd CPU per cycle ms (every member)", "etcd_cpu_ms_per_grant", ".2f"),
    ("etcd CPU, cores busy (every member)", "etcd_cpu_cores", ".2f"),
    ("etcd writes per cycle", "etcd_writes_per_grant", ".2f"),
    ("etcd WAL fsync ms mean", "etcd_wal_fsync_ms_mean", ".2f"),
    ("etcd WAL fsyncs per write, per member", "etcd_wal_fsyncs_per_write", ".2f"),
    ("etcd apply ms mean", "etcd_apply_ms_mean", ".3f"),
    (
        "etcd backend commit ms mean (batched, off the write path)",
        "etcd_backend_commit_ms_mean",
        ".2f",
    ),
    ("etcd peer round trip ms mean", "etcd_peer_round_trip_ms_mean", ".2f"),
]


def _cells(report: dict[str, Any], s: dict[str, Any]) -> dict[str, str]:
    """The figures of scenario ``s`` that are not the breakdown's own, as text."""
    c = s["contenders"]["lessor"]
    b = c["breakdown"]
    put = _baseline(report, s["members"]) or {}
    put_rate = put.get("cycles_per_s")
    by = b["attempt_ms_mean_by_outcome"]
    return {
        "=rate": _fmt(c["cycles_per_s"], ",.1f"),
        "=put_rate": _fmt(put_rate, ",.1f"),
        "=put_ratio": _fmt(c["cycles_per_s"] / put_rate if put_rate else None, ".2f"),
        "=put_p50": _fmt(put.get("p50_ms"), ".2f"),
        "=p50_p99": f"{c['p50_ms']:.2f} / {c['p99_ms']:.2f}",
        "=attempt_p50_p99": f"{b['attempt_ms_p50']:.2f} / {b['attempt_ms_p99']:.2f}",
        "=gate_p50_p99": f"{b['gate_ms_p50']:.2f} / {b['gate_ms_p99']:.2f}",
        "=release_p50_p99": f"{_fmt(b.get('release_ms_p50'), '.2f')} / "
        f"{_fmt(b.get('release_ms_p99'), '.2f')}",
        "=attempt_by_outcome": f"{_fmt(by.get('settled'), '.2f')} / {_fmt(by.get('lost'), '.2f')}",
    }


def _profile_lines(profiles: dict[str, dict[str, Any]]) -> list[str]:
    """The profiled rounds' CPU split, a column per scenario."""
    categories: list[str] = []
    for p in profiles.values():
        categories += [c for c in p["categories"] if c not in categories]
    out = [
        "",
        "Client CPU of the workers' threads in one more round, every thread under cProfile "
        "on its own CPU time (`--profile`; cProfile's own cost inflates the total, so read "
        "the shares; a builtin such as `isinstance` counts for its callers): share, and "
        "profiled ms per cycle.",
        "",
        "| CPU of the workers' threads | " + " | ".join(profiles) + " |",
        "|---|" + "---:|" * len(profiles),
    ]
    for category in categories:
        cells = []
        for p in profiles.values():
            t = p["categories"].get(category, 0.0)
            share = t / p["cpu_s"] if p["cpu_s"] else 0.0
            per = t / p["cycles"] * 1e3 if p["cycles"] else None
            cells.append(f"{share:.0%} ({_fmt(per, '.3f')})")
        out.append(f"| {category} | " + " | ".join(cells) + " |")
    totals = []
    for p in profiles.values():
        per = p["cpu_s"] / p["cycles"] * 1e3 if p["cycles"] else None
        totals.append(
            f"{_fmt(per, '.2f')} ms/cycle ({p['cycles']:,} cycles; threads {p['cpu_s']:.2f} s, "
            f"the whole processes {p.get('process_cpu_s', 0.0):.2f} s)"
        )
    out.append("| total profiled | " + " | ".join(totals) + " |")
    top = [f"{sid}: " + "; ".join(f"`{t['function']}` {t['seconds'] / p['cycles'] * 1e3:.3f}"
                                  for t in p["top"][:6])
           for sid, p in profiles.items() if p["cycles"]]  # fmt: skip
    out += ["", "Top functions by own CPU time, ms per cycle: " + " — ".join(top) + "."]
    return out


def render_breakdown(report: dict[str, Any]) -> list[str]:
    """The breakdown's Markdown lines (none when no scenario has one): a table of figures
    per scenario, and the profiled round's CPU split."""
    scenarios = [
        s
        for s in report["scenarios"]
        if s["sections"] == 1
        and s["processes"] > 1
        and (s["contenders"].get("lessor") or {}).get("breakdown")
    ]
    if not scenarios:
        return []
    out = [
        "",
        "#### Where a hot section's acquisition time goes",
        "",
        "| " + " | ".join(["lessor", *(s["id"] for s in scenarios)]) + " |",
        "|---|" + "---:|" * len(scenarios),
    ]
    columns = [(s["contenders"]["lessor"]["breakdown"], _cells(report, s)) for s in scenarios]
    for label, key, spec in ROWS:
        cells = [own[key] if key in own else _fmt(b[key], spec) for b, own in columns]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    profiles = {
        s["id"]: b["profile"]
        for s, (b, _) in zip(scenarios, columns, strict=True)
        if b.get("profile")
    }
    if profiles:
        out += _profile_lines(profiles)
    return out
