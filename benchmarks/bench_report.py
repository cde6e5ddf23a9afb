"""The benchmark's Markdown table, PNG plot and README section, from its JSON results.

``bench.py`` calls these at the end of a run; they can also redraw the table and the plot of a
results file already written:

    python benchmarks/bench_report.py benchmarks/results/<date>.json [--readme]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench_breakdown import render_breakdown

__all__ = ["render_markdown", "update_readme", "write_markdown", "write_plot"]

NAMES = {"lessor": "lessor", "lock": "pyetcd Lock", "put": "raw put", "aio": "lessor.aio"}
BEGIN, END = "<!-- bench results: begin -->", "<!-- bench results: end -->"


def _num(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, fmt)


def _contender(s: dict[str, Any], key: str) -> str:
    """A contender's name in a scenario's rows: the asyncio one says how many tasks it ran."""
    if key != "aio":
        return NAMES[key]
    n = s.get("aio_tasks", 0)
    return f"{NAMES[key]}, {n:,} task{'s' if n != 1 else ''}"


def _kib(n: float | None) -> str:
    return _num(None if n is None else n / 1024, ",.1f")


def _machine_line(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    etcd = f"etcd {m['etcd']} in {m['etcd_runs_in']}"
    if m.get("docker"):
        etcd += f" (Docker {m['docker']})"
    why = m.get("docker_absent_because")
    if why:
        etcd += f" (Docker {why})" if why.startswith("not used") else f" (Docker absent: {why})"
    return (
        f"`{report['command']}` at lessor {m.get('lessor_commit', 'unknown')}, "
        f"on {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, "
        f"{m['os']}, Python {m['python']}; {etcd}; fsync {'on' if s['fsync'] else 'off'}; "
        f"load average {m['load_average_before']:.2f} before the run. Each contender ran "
        f"{s['seconds_per_contender']:g} s per scenario ({s['seconds_per_contender_s4']:g} s in "
        f"S4) in {s['rounds']} interleaved round(s), after {s['warmup_s']:g} s of warm-up; "
        f"{report['wall_seconds']:.0f} s in all."
    )


def render_markdown(report: dict[str, Any], image: str) -> str:
    """The results as Markdown, with the plot at ``image`` (a path relative to the text)."""
    quick = " (quick run)" if report["quick"] else ""
    out = [
        f"### Results of {report['date']}{quick}",
        "",
        _machine_line(report),
        "",
        f"![cycles per second and p99 acquisition latency per scenario]({image})",
        "",
        "| scenario | contender | cycles/s | p50 ms | p99 ms | max ms | CAS retries / acq. "
        "| etcd round trips / cycle | etcd writes / cycle | fairness: lowest-highest share "
        "| errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in report["scenarios"]:
        for key, c in s["contenders"].items():
            fair = "—"
            if c["fairness_min"] is not None and len(c["per_thread_cycles"]) > 1:
                fair = f"{c['fairness_min']:.0%} to {c['fairness_max']:.0%}"
            out.append(
                f"| {s['id']} | {_contender(s, key)} | {c['cycles_per_s']:,.1f} "
                f"| {c['p50_ms']:.2f} "
                f"| {c['p99_ms']:.2f} | {c['max_ms']:.2f} "
                f"| {_num(c['cas_retries_per_acquisition'], '.3f')} "
                f"| {_num(c['round_trips_per_cycle'], '.2f')} "
                f"| {_num(c['writes_per_cycle'], '.2f')} | {fair} | {c['errors']} |"
            )
    out += [
        "",
        "| scenario | what | lessor / Lock cycles/s | lessor / raw put cycles/s "
        "| lessor / Lock p99 |",
        "|---|---|---:|---:|---:|",
    ]
    for s in report["scenarios"]:
        r = s["ratios"]
        where = f"{s['members']} member{'s' if s['members'] > 1 else ''}"
        if s["delay_ms"]:
            where += f", {s['delay_ms']:g} ms per hop"
        out.append(
            f"| {s['id']} | {s['title']} ({where}) | {_num(r['lessor_vs_lock_cycles'], '.2f')}x "
            f"| {_num(r['lessor_vs_put_cycles'], '.0%')} "
            f"| {_num(r['lessor_vs_lock_p99'], '.2f')}x |"
        )
    with_aio = [s for s in report["scenarios"] if "aio" in s["contenders"]]
    if with_aio:
        out += [
            "",
            "| scenario | asyncio lessor | aio / threaded lessor cycles/s | aio / Lock cycles/s "
            "| aio / threaded lessor p99 | aio / threaded client CPU per cycle |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for s in with_aio:
            r, threads = s["ratios"], s["processes"] * s["threads_per_process"]
            against = f"{threads} thread{'s' if threads > 1 else ''} in {s['processes']} process"
            against += "es" if s["processes"] > 1 else ""
            out.append(
                f"| {s['id']} | {s['aio_tasks']:,} task{'s' if s['aio_tasks'] != 1 else ''} in "
                f"1 process, against {against} | {_num(r['aio_vs_lessor_cycles'], '.2f')}x "
                f"| {_num(r['aio_vs_lock_cycles'], '.2f')}x "
                f"| {_num(r['aio_vs_lessor_p99'], '.2f')}x "
                f"| {_num(r['aio_vs_lessor_cpu'], '.2f')}x |"
            )
    out += render_breakdown(report)
    memory = report.get("memory")
    if memory:
        out += [
            "",
            "| memory (RSS growth, per instance) | idle lessor KiB | waiting holder KiB "
            "| held lease KiB |",
            "|---|---:|---:|---:|",
        ]
        for key, label in (("aio", "lessor.aio (`AsyncEtcdLessor`; holder: a task)"),
                           ("sync", "lessor (`EtcdLessor`; holder: a thread)")):  # fmt: skip
            m = memory[key]
            out.append(
                f"| {label} | {_kib(m['idle_lessor_bytes'])} | {_kib(m['waiting_holder_bytes'])} "
                f"| {_kib(m['held_lease_bytes'])} |"
            )
    out += ["", "| target | figure | met |", "|---|---:|---|"]
    for t in report["targets"]:
        out.append(f"| {t['target']} | {t['shown']} | {'yes' if t['met'] else '**no**'} |")
    missed = [t for t in report["targets"] if not t["met"]]
    out.append("")
    if missed:
        out.append(
            "Missed in this run: "
            + "; ".join(f"{t['target']} (measured {t['shown']})" for t in missed)
            + "."
        )
    elif report["targets"]:
        out.append("Every target was met in this run.")
    out += ["", *(f"- {note}" for note in _notes(report))]
    return "\n".join(out) + "\n"


BUSY = 1.5  # load average (1 min) above which the machine counts as busy


def _notes(report: dict[str, Any]) -> list[str]:
    notes = []
    m = report["machine"]
    before, after = m["load_average_before"], m.get("load_average_after")
    if before > BUSY or (after is not None and after > BUSY):
        notes.append(
            f"**The machine was busy** (load average {before:.2f} before the run"
            + (f", {after:.2f} after" if after is not None else "")
            + f"; {m['cores']} cores shared with other work): the figures are lower and noisier "
            "than on a quiet machine."
        )
    safety = report["safety"]
    checked = sum(
        c["holdings_checked"] for s in report["scenarios"] for c in s["contenders"].values()
    )
    if safety["overlaps"]:
        notes.append(
            f"**SAFETY VIOLATED**: overlapping holders in {', '.join(safety['overlaps'])}."
        )
    else:
        notes.append(
            f"No two holders overlapped ({checked:,} holdings checked across every "
            "process and thread)."
        )
    sources = {
        c["cas_retries_source"]
        for s in report["scenarios"]
        for k, c in s["contenders"].items()
        if k in ("lessor", "aio")
    }
    notes.append(
        f"CAS retries: lessor from {', '.join(sorted(sources))}; Lock from its failed "
        "tries; a raw put has none."
    )
    delayed = [s for s in report["scenarios"] if s["delay_ms"]]
    if delayed:
        d = delayed[0]["delay_ms"]
        notes.append(
            f"{', '.join(s['id'] for s in delayed)}: a userspace delay proxy "
            f"(`lessor.testing.FaultProxy`; the kernel here has no netem) adds {d:g} ms one "
            "way in front of every member's client port and on every peer link (each member "
            f"advertises its proxy as its peer URL): a client round trip pays {2 * d:g} ms more, "
            f"and so does each raft round trip behind a write. S4a's one worker talks to a "
            "follower; S4b's four processes start on the two followers and the leader in turn."
        )
    many = [s for s in report["scenarios"] if s.get("aio_tasks", 0) > 1]
    for s in many:
        slots = math.ceil(s["aio_tasks"] / s["sections"])
        c = s["contenders"]["aio"]
        # Little's law: with every task always asking, the mean cycle is tasks / throughput.
        cycle_ms = s["aio_tasks"] / c["cycles_per_s"] * 1e3 if c["cycles_per_s"] else None
        notes.append(
            f"{s['id']}, lessor.aio: {s['aio_tasks']:,} tasks of one process on one event loop "
            f"and one `AsyncEtcdLessor`; task i cycles on section i mod {s['sections']}, always "
            f"asking for the same 1/{slots} of the key space, which no other task asks for. The "
            "tasks of one section queue at its gate and are granted together by one swap. "
            f"With {s['aio_tasks']:,} tasks always asking, a task's mean cycle is tasks / "
            f"cycles per second = {_num(cycle_ms, ',.0f')} ms (Little's law): its acquisition "
            "latency is mostly its wait in that queue, where the threaded lessor has 16 "
            "askers. Client CPU per cycle is the worker processes' CPU time over their cycles."
        )
    memory = report.get("memory")
    if memory:
        m = memory["aio"]
        notes.append(
            f"Memory: {m['method']} (`benchmarks/bench_memory.py`, a process of its own per "
            f"lessor). Idle lessor: {m['idle_lessors']} lessors alive at once, each connected "
            f"and after one cycle, against a first one. Waiting holder: {m['held_leases']:,} "
            "tasks (threads) blocked on an event, holding nothing. Held lease: the same tasks "
            "(threads) then each holding a lease of one lessor at once, over 64 sections that "
            "lessor had used before; the growth over the waiting holders."
        )
    for s in report["scenarios"]:
        split = _by_home(s)
        if split:
            notes.append(
                f"{s['id']}, cycles per thread whose process talks to the leader against one "
                f"that talks to a follower: {split}. A client of the leader is a peer hop "
                "closer to it: its writes commit sooner and, under contention, win more races."
            )
    for s in report["scenarios"]:
        c = s["contenders"]["lessor"]
        if c["keys_granted_of_asked"] is not None and c["empty_grants"]:
            notes.append(
                f"{s['id']}: {c['empty_grants'] / max(c['cycles'], 1):.0%} of the lessor's "
                f"acquisitions found every asked key held by others (an empty grant, still a "
                f"completed cycle); it granted {c['keys_granted_of_asked']:.0%} of the keys "
                "asked for. Lock serialises the whole section instead."
            )
    return notes


def _by_home(s: dict[str, Any]) -> str | None:
    """On a cluster, each contender's mean cycles per thread on the leader against on the
    followers, as text; None where that does not apply."""
    leader, homes, per_process = s.get("leader"), s.get("homes", []), s["threads_per_process"]
    if s["members"] < 2 or leader is None or len(set(homes)) < 2 or leader not in homes:
        return None
    parts = []
    for key, c in s["contenders"].items():
        if key == "aio":
            continue  # all its tasks are in one process
        cycles = c["per_thread_cycles"]
        on_leader = [n for i, n in enumerate(cycles) if homes[i // per_process] == leader]
        elsewhere = [n for i, n in enumerate(cycles) if homes[i // per_process] != leader]
        if on_leader and elsewhere:
            parts.append(f"{NAMES[key]} {sum(on_leader) / len(on_leader):,.0f} against "
                         f"{sum(elsewhere) / len(elsewhere):,.0f}")  # fmt: skip
    return "; ".join(parts) or None


def write_markdown(report: dict[str, Any], path: Path, image: str) -> tuple[Path, str]:
    text = render_markdown(report, image)
    path.write_text(text)
    return path, text


def write_plot(report: dict[str, Any], path: Path) -> Path:
    """Cycles/s and p99 acquisition latency per scenario, one bar per contender."""
    import matplotlib  # noqa: PLC0415  (heavy: only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    scenarios = report["scenarios"]
    ids = [s["id"] for s in scenarios]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    keys = [k for k in NAMES if any(k in s["contenders"] for s in scenarios)]
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        where = [j for j, s in enumerate(scenarios) if key in s["contenders"]]
        xs = [j + (i - (len(keys) - 1) / 2) * width for j in where]
        rates = [scenarios[j]["contenders"][key]["cycles_per_s"] for j in where]
        p99s = [scenarios[j]["contenders"][key]["p99_ms"] for j in where]
        left.bar(xs, rates, width, label=NAMES[key])
        right.bar(xs, p99s, width, label=NAMES[key])
    for ax, title in (
        (left, "cycles per second (higher is better)"),
        (right, "p99 acquisition latency, ms (lower is better)"),
    ):
        ax.set_xticks(range(len(ids)), ids)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    left.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(
        f"lessor benchmark {report['date']}{' (quick)' if report['quick'] else ''}: "
        f"{m['cores']} cores, etcd {m['etcd']} in {m['etcd_runs_in']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def update_readme(readme: Path, markdown: str, image: Path) -> None:
    """Put ``markdown`` between the README's result markers, its plot linked from there."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} section to rewrite")
    body = markdown.replace(f"]({image.name})", f"]({image.as_posix()})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Redraw a results file's table and plot.")
    parser.add_argument("json", type=Path, help="benchmarks/results/<date>.json")
    parser.add_argument("--readme", action="store_true",
                        help="also put them in benchmarks/README.md")  # fmt: skip
    args = parser.parse_args()
    path: Path = args.json.resolve()
    report = json.loads(path.read_text())
    png = write_plot(report, path.with_suffix(".png"))
    md, text = write_markdown(report, path.with_suffix(".md"), png.name)
    print(f"wrote {md} and {png}")
    if args.readme:
        here = Path(__file__).resolve().parent
        update_readme(here / "README.md", text, png.relative_to(here))
        print(f"updated {here / 'README.md'}")


if __name__ == "__main__":
    main()
