"""Where a worker's CPU goes: every benchmark thread under cProfile, on its own CPU time.

``bench_worker.py`` wraps each thread's loop (:meth:`ThreadProfiles.wrap`) when the runner
asks for a profiled round (``bench.py --profile``). Each thread gets a profiler of its own
(cProfile follows only the thread that enabled it) whose clock is :func:`time.thread_time`,
so that a thread blocked on etcd's answer or on its gate's event costs nothing: what is
counted is CPU, split by function. :meth:`ThreadProfiles.summary` merges the threads, saves
the ``pstats`` file and sums each function's own time (``tottime``) into the categories of
:data:`CATEGORIES` (first match wins); a builtin that matches none (``isinstance``, a
generator's ``send``) counts for its callers' categories, in proportion to their calls' time.
cProfile's own cost inflates the total: the shares count, not the absolute figures, which the
measured rounds give.
"""

from __future__ import annotations

import cProfile
import pstats
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CATEGORIES", "ThreadProfiles"]

CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern))
    for name, pattern in (
        ("JSON (section value encode/decode)", r"json"),
        ("protobuf (messages)", r"protobuf|_upb|_pb2|SerializeToString|FromString|ParseFrom"),
        ("gRPC (calls, channel)", r"grpc"),
        ("lessor: section codec, state", r"lessor/etcd/(section|state|stream_messages)\.py"),
        ("lessor: partitions, planning", r"lessor/(partition|etcd/plan|etcd/known)\.py"),
        ("lessor: acquisition core, gate", r"lessor/etcd/(core/|gate|drive|retry)"),
        ("lessor: shell, calls, leases", r"lessor/etcd/"),
        ("lessor: contract, observers", r"lessor/"),
        ("threading, locks, events", r"threading|_thread|lock|Event|Condition"),
        ("benchmark (recording, HDR)", r"bench_worker|hdrh|bench_"),
    )
]
OTHER = "other"


def _category(where: str) -> str:
    return next((c for c, pattern in CATEGORIES if pattern.search(where)), OTHER)


class ThreadProfiles:
    """One profiler per thread of a round, summed up at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: list[cProfile.Profile] = []

    def wrap(self, loop: Callable[..., None]) -> Callable[..., None]:
        """``loop``, run under a profiler of the thread that runs it."""

        def profiled(*args: Any) -> None:
            profile = cProfile.Profile(time.thread_time)
            with self._lock:
                self._profiles.append(profile)
            profile.enable()
            try:
                loop(*args)
            finally:
                profile.disable()

        return profiled

    def summary(self, path: Path, *, cycles: int, top: int = 12) -> dict[str, Any]:
        """Save the merged profile at ``path``; return the CPU seconds counted, per
        category, and the ``top`` functions by their own time, each per cycle too."""
        with self._lock:
            profiles = list(self._profiles)
        if not profiles:
            return {"path": str(path), "cycles": cycles, "cpu_s": 0.0, "categories": {}, "top": []}
        stats = pstats.Stats(profiles[0])
        for p in profiles[1:]:
            stats.add(p)
        path.parent.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(str(path))
        categories: dict[str, float] = {}
        functions = []
        raw: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
        for (filename, line, name), (_, _, tottime, _, callers) in raw.items():
            where = f"{filename}:{line}({name})"
            category = _category(where)
            functions.append((tottime, where, category))
            if category != OTHER or filename != "~" or not callers:
                categories[category] = categories.get(category, 0.0) + tottime
                continue
            # A builtin of no category of its own (isinstance, len, a generator's send...):
            # its time goes to its callers' categories, in proportion to the calls' time.
            weights = {caller: timing[2] for caller, timing in callers.items()}
            total = sum(weights.values())
            for (cf, cl, cn), weight in weights.items():
                share = weight / total if total > 0 else 1 / len(weights)
                c = _category(f"{cf}:{cl}({cn})")
                categories[c] = categories.get(c, 0.0) + tottime * share
        functions.sort(reverse=True)
        return {
            "path": str(path),
            "cycles": cycles,
            "cpu_s": sum(categories.values()),
            "categories": dict(sorted(categories.items(), key=lambda kv: -kv[1])),
            "top": [
                {"function": where, "category": category, "seconds": t}
                for t, where, category in functions[:top]
            ],
        }
