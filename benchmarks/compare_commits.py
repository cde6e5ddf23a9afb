"""S1 (one client, uncontended acquire + release cycles) of two source trees, in one run, against
one etcd: a commit given by ``--base`` against this working tree.

    python benchmarks/compare_commits.py --base 4569aea [--rounds 5] [--seconds 3]

The base is checked out with ``git worktree add`` into a temporary directory (removed when the
run ends, failed or not). One ``LocalEtcd`` (fsync on, a random loopback address) serves two
``bench_worker.py`` processes: one with ``PYTHONPATH=<base>/src``, one with this tree's
``src/``; each says which ``lessor/__init__.py`` it imported, and the run stops unless that is
its tree's. Each round runs, in an order that rotates from round to round, ``--seconds`` of
bench.py's S1 lessor loop from each tree (``with lessor.lease("s0", Partition(0, 2**20), 10):
pass``, same section id, own prefix per tree) and of pyetcd's ``Lock`` (``acquire(); release()``).
The latencies are of the whole cycle, acquire and release, not of the acquisition alone as in
bench.py. Prints a markdown table; writes ``results/compare-<date>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import DUR, RESULTS, UNIVERSE, Tally, Worker, ask_all, code_version, machine
from etcd_metrics import cluster_delta, scrape_all
from etcd_targets import one_member

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIDES = ["base", "current", "lock"]  # "lock" runs in the current tree's worker
# A worker: say which lessor it imported, then serve bench_worker's protocol, timing whole cycles.
BOOT = """import json, sys
sys.path.insert(0, {bench!r})
import bench_worker, lessor
class CycleRecord(bench_worker.ThreadRecord):
    def completed(self, started, got, now, asked):
        super().completed(started, now, now, asked)
bench_worker.ThreadRecord = CycleRecord
print(json.dumps({{"lessor": lessor.__file__}}), flush=True)
bench_worker.main()
"""


class TreeWorker(Worker):
    """A bench_worker.py process whose ``import lessor`` resolves to ``tree``/src."""

    def __init__(self, index: int, tree: Path) -> None:
        self.tree = tree
        super().__init__(
            index,
            [sys.executable, "-P", "-c", BOOT.format(bench=str(HERE))],  # -P: no cwd on sys.path
            env=os.environ | {"PYTHONPATH": str(tree / "src")},
        )

    def imported(self) -> str:
        found = str(self.receive(60)["lessor"])
        if Path(found).resolve() != (self.tree / "src/lessor/__init__.py").resolve():
            raise RuntimeError(f"worker for {self.tree} imported lessor from {found}")
        return found


def git(*args: str) -> str:
    cmd = ["git", "-C", str(ROOT), *args]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"git {shlex.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """``commit`` checked out in a temporary directory, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="lessor-compare-"))
    path = tmp / "base"
    try:
        git("worktree", "add", "--detach", "--quiet", str(path), commit)
        yield path
    finally:
        try:
            git("worktree", "remove", "--force", str(path))
        except RuntimeError:  # half made: drop the directory, then git's record of it
            shutil.rmtree(path, ignore_errors=True)
            git("worktree", "prune")
        shutil.rmtree(tmp, ignore_errors=True)


def summary(tally: Tally, rates: list[float]) -> dict[str, Any]:
    h, c = tally.histogram, tally.cycles
    return {
        "rounds_cycles_per_s": rates,
        "median_cycles_per_s": statistics.median(rates),
        "min_cycles_per_s": min(rates),
        "max_cycles_per_s": max(rates),
        "cycles": c,
        "seconds": tally.elapsed,
        "p50_ms": h.get_value_at_percentile(50) / 1e3,
        "p99_ms": h.get_value_at_percentile(99) / 1e3,
        "round_trips_per_cycle": tally.counts.round_trips / c if c else None,
        "writes_per_cycle": tally.counts.writes / c if c else None,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
    }


def table(report: dict[str, Any]) -> str:
    s, labels = report["sides"], report["labels"]
    rows = [
        "| tree | cycles/s (median) | min-max over rounds | p50 ms | p99 ms "
        "| etcd round trips / cycle | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for side in SIDES:
        r = s[side]
        rows.append(
            f"| {labels[side]} | {r['median_cycles_per_s']:.1f} | {r['min_cycles_per_s']:.1f}"
            f"-{r['max_cycles_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['round_trips_per_cycle'] or 0:.2f} | {r['errors']} |"
        )
    ratio = report["ratios"]
    paired = ratio["per_round_current_vs_base"]
    return "\n".join(rows) + (
        f"\n\ncurrent / base cycles/s: **{ratio['current_vs_base']:.3f}x** (medians); per round "
        f"{min(paired):.3f}x to {max(paired):.3f}x, median {statistics.median(paired):.3f}x. "
        f"Against pyetcd Lock: base {ratio['base_vs_lock']:.2f}x, "
        f"current {ratio['current_vs_lock']:.2f}x."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="commit to compare against (e.g. 4569aea)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per side and round (3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per side (1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that cleanup runs
    base = git("rev-parse", "--verify", f"{args.base}^{{commit}}")
    current, diff = code_version(), git("diff", "HEAD", "--", "src")  # as the worker imports it
    labels = {"base": f"base {base[:7]}", "current": f"current {current}", "lock": "pyetcd Lock"}
    run_id, load = uuid.uuid4().hex[:8], os.getloadavg()[0]
    # Workers close before etcd stops, lest a round cut short by a signal fail loudly.
    with (
        worktree(base) as base_tree,
        contextlib.ExitStack() as last,
        contextlib.ExitStack() as stack,
    ):
        pool = {"base": TreeWorker(0, base_tree), "current": TreeWorker(1, ROOT)}
        for w in pool.values():
            stack.callback(w.close)
        files = {side: w.imported() for side, w in pool.items()}
        print("\n".join(f"{side}: lessor from {f}" for side, f in files.items()), flush=True)
        target = last.enter_context(one_member(docker=False, fsync=True))
        print(f"etcd {target.etcd_version} at {target.client_endpoints[0]}", flush=True)
        setup = {"cmd": "setup", "run_id": run_id, "worker": 0, "threads": 1, "all_threads": 1,
                 "sections": "own", "sections_per_thread": 1, "ranges": "whole",
                 "universe": UNIVERSE, "dur": DUR, "seed": 1, "warmup": args.warmup,
                 "endpoints": target.client_endpoints}  # fmt: skip
        ask_all([pool["base"]], [setup | {"name": "S1-A", "contenders": ["lessor"]}])
        ask_all([pool["current"]], [setup | {"name": "S1-B", "contenders": ["lessor", "lock"]}])
        tallies = {side: Tally() for side in SIDES}
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        for r in range(args.rounds):
            for side in SIDES[r % 3 :] + SIDES[: r % 3]:
                w = pool["base" if side == "base" else "current"]
                before = scrape_all(target.member_endpoints)
                start = time.monotonic() + 0.1
                run = {"cmd": "run", "contender": "lock" if side == "lock" else "lessor"}
                answers = ask_all([w], [run | {"start": start, "end": start + args.seconds}])
                counts = cluster_delta(before, scrape_all(target.member_endpoints))
                was = tallies[side].elapsed
                n = tallies[side].add_round(start, start + args.seconds, answers, counts)
                rates[side].append(n / (tallies[side].elapsed - was))
                if side == "lock":  # Lock never revokes its leases: not in another's round
                    ask_all([w], [{"cmd": "tidy"}])
                print(f"round {r + 1} {side}: {rates[side][-1]:.1f} cycles/s", flush=True)
        for w in pool.values():
            ask_all([w], [{"cmd": "teardown"}])
        info = machine(target.how, target.etcd_version, "not used: LocalEtcd")
    info |= {"load_average_before": load, "load_average_after": os.getloadavg()[0]}
    sides = {side: summary(tallies[side], rates[side]) for side in SIDES}
    med = {side: sides[side]["median_cycles_per_s"] for side in SIDES}
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "command": shlex.join(["python", "benchmarks/compare_commits.py", *sys.argv[1:]]),
        "base": base,
        "current": current,
        "current_src_diff_sha1": hashlib.sha1(diff.encode()).hexdigest() if diff else None,
        "lessor_files": files,
        "settings": vars(args) | {"out": str(args.out), "lease_dur_s": DUR, "fsync": True},
        "machine": info,
        "labels": labels,
        "sides": sides,
        "ratios": {
            "current_vs_base": med["current"] / med["base"],
            "per_round_current_vs_base": [
                c / b for c, b in zip(rates["current"], rates["base"], strict=True)
            ],
            "base_vs_lock": med["base"] / med["lock"],
            "current_vs_lock": med["current"] / med["lock"],
        },
    }
    markdown = table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"compare-{report['date']}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{markdown}\n\n`{report['command']}`: {info['cores']} cores, etcd "
          f"{info['etcd']}, load average {load:.2f} before, {info['load_average_after']:.2f} "
          f"after; {args.rounds} rounds of {args.seconds:g} s per side. Wrote {path}")  # fmt: skip
    return 1 if any(sides[s]["errors"] for s in ("base", "current")) else 0


if __name__ == "__main__":
    sys.exit(main())
