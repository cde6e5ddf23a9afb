"""Race stress: threads of one process share an ``EtcdLessor`` while the GIL switches constantly.

Thread switches are forced every microsecond (:func:`sys.setswitchinterval`) while many
threads of one lessor acquire and release overlapping ranges of one section, so that group
commits, releases and the state the lessor caches interleave at the bytecode level. A second
lessor (another process's view) contends for the same ranges, and a third holds
:data:`BACKGROUND` leases of the section, on ranges nobody else asks for, for the whole run:
every state of the section then carries that many live markers, which makes each copy of it
slow enough for another thread to land inside.

A holder gives its lease back when the section is next written (a watch on the section key
tells it, or a short bound passes): releases then coincide with the moment a leader receives
the reply of its compare-and-swap, the moment the races are about. While it gives the lease
back, a thread is paused at random calls and returns (:class:`Preempt`), as the scheduler may
pause any thread anywhere: a release that stops halfway is how it interleaves with a leader
that stores the state its swap wrote. That makes a few-bytecode race show up within seconds
rather than within minutes, even on one free CPU.

Each lease with ranges is checked, while it is held, against what etcd stored: one Txn reads
the section value and its markers at one revision; exactly one live entry of the lease's
holder must have the lease's ranges, and its marker's create revision (the revision of the
swap that wrote it) must equal ``Lease.token``. Afterwards :mod:`lessor.testing.history` checks that
no two holders overlapped and that tokens order the leases that shared a key.

The checks go through etcd's data and the public :class:`~lessor.Lease` only, not the
lessor's internals. Run with ``nox -s safety``; ``LESSOR_RACES_SECONDS`` bounds its length
(default 60; a run stops at the first lease whose token or entry is wrong) and
``LESSOR_RACES_SEED`` seeds the ranges asked for. It prints one summary line.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from lessor import Context, Lease, Lessor, LessorError, Partition
from lessor.testing import Holding, find_overlaps, find_token_inversions

if TYPE_CHECKING:
    from lessor.etcd.keys import SectionKeys

pytestmark = pytest.mark.safety

SECONDS = float(os.environ.get("LESSOR_RACES_SECONDS", "60"))
MAX_ACQUISITIONS = 200_000  # all threads together; the time limit usually ends the run first
SWITCH_INTERVAL = 1e-6  # seconds between forced thread switches (CPython's default: 5e-3)
THREADS = 12  # threads of the lessor under test, all on one section
OTHER_THREADS = 2  # threads of the second lessor, asking for the same ranges
BACKGROUND = 80  # leases held all along by a third lessor (a section holds at most 100 live)
CONTESTED = 96  # threads ask for ranges of [0, CONTESTED)
WIDEST = 12  # the widest range asked for
HOLD = 0.05  # the longest a holder waits for the section's next write before it releases
PAUSE_CHANCE = 0.3  # of a pause at each Python call or return while giving a lease back
LONGEST_PAUSE = 3e-4  # seconds; each pause is uniform in [0, LONGEST_PAUSE]
DUR = 2.0  # lease duration asked for
ACQUIRE_WITHIN = 10.0  # each acquisition's deadline
SECTION = "races"


@dataclass
class Findings:
    """What the threads saw; appended to under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    holdings: list[Holding] = field(default_factory=list)
    acquisitions: int = 0
    checked: int = 0
    # (thread, ranges, token, create revision of its marker) of tokens that are not the latter
    mismatches: list[tuple[str, list[str], int, int]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # leases with no live entry in etcd
    errors: Counter[str] = field(default_factory=Counter)  # acquisitions that failed
    crashes: list[str] = field(default_factory=list)  # threads that died of an exception

    def add(self, **kw: Any) -> None:
        with self.lock:
            for name, value in kw.items():
                current = getattr(self, name)
                if isinstance(current, list):
                    current.append(value)
                elif isinstance(current, Counter):
                    current[value] += 1
                else:
                    setattr(self, name, current + value)


class StoredLeases:
    """What etcd holds for a section: its value and its markers, read at one revision."""

    def __init__(self, client: Any, keys: SectionKeys) -> None:
        self._client = client
        self._keys = keys

    def token_of(self, holder: str, lease: Lease) -> tuple[int | None, int, str]:
        """The create revision of the marker of ``holder``'s live entry whose ranges are
        ``lease.partitions`` (None unless there is exactly one), the revision read at, and
        what was found if not that."""
        from pyetcd import transactions  # noqa: PLC0415  (pyetcd is loaded only with etcd)

        keys = self._keys
        ok, (value, markers) = self._client.transaction(
            compare=[],
            success=[
                transactions.Get(keys.value),
                transactions.Get(keys.markers, keys.markers_end),
            ],
            failure=[],
        )
        assert ok
        if not value:
            return None, 0, "the section key does not exist"
        raw, meta = value[0]
        revision = meta.response_header.revision
        created = {m.key: m.create_revision for _, m in markers}
        found = [
            created[keys.marker(entry["lease"], entry["seq"])]
            for entry in entries_of(raw, holder, lease)
            if keys.marker(entry["lease"], entry["seq"]) in created
        ]
        if len(found) != 1:
            return None, revision, f"at revision {revision}, {len(found)} live entries"
        return found[0], revision, ""


def entries_of(raw: bytes, holder: str, lease: Lease) -> list[dict[str, Any]]:
    """The entries of section value ``raw`` of ``holder`` with the ranges of ``lease``."""
    ranges = lease.partitions.to_strings()
    return [
        entry
        for entry in json.loads(raw)["leases"]
        if entry["holder"] == holder and entry["ranges"] == ranges
    ]


class SectionWrites:
    """The latest write of a section's key, as an etcd watch reports it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._revision = 0
        self._value = b""

    def seen(self, response: Any) -> None:  # the watch's callback
        events = getattr(response, "events", None)
        if not events:
            return  # an error: the holders' waits are bounded anyway
        with self._changed:
            self._revision, self._value = events[-1].mod_revision, events[-1].value
            self._changed.notify_all()

    def after(self, revision: int, timeout: float) -> tuple[int, bytes] | None:
        """The revision and value of the latest write, once one after ``revision`` is seen;
        None if none is within ``timeout`` seconds."""
        with self._changed:
            if self._changed.wait_for(lambda: self._revision > revision, timeout):
                return self._revision, self._value
            return None


class Preempt:
    """A profile hook that pauses its thread at random Python calls and returns, releasing the
    GIL for a moment, as the OS or the interpreter may pause a thread at any of them. Nothing
    waits for it: it only changes where threads interleave (sleeping is the way to make the
    interpreter run the others)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def __call__(self, frame: object, event: str, arg: object) -> None:
        if event in ("call", "return") and self._rng.random() < PAUSE_CHANCE:
            time.sleep(self._rng.uniform(0, LONGEST_PAUSE))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        sys.setprofile(self)
        try:
            yield
        finally:
            sys.setprofile(None)


def run_thread(
    name: str,
    holder: str,
    lessor: Lessor,
    stored: StoredLeases,
    writes: SectionWrites,
    rng: random.Random,
    quota: int,
    stop: threading.Event,
    findings: Findings,
) -> None:
    """Acquire random ranges of the contested zone until ``stop`` or ``quota``; check each.
    Stops every thread at the first lease whose token or entry is wrong."""
    preempt = Preempt(random.Random(rng.random()))
    try:
        for _ in range(quota):
            if stop.is_set():
                return
            low = rng.randrange(CONTESTED)
            part = Partition(low, min(CONTESTED, low + rng.randint(1, WIDEST)))
            ctx = Context.background().with_timeout(ACQUIRE_WITHIN)
            stored_token, what = None, ""
            try:
                with (
                    contextlib.ExitStack() as release,
                    lessor.lease(SECTION, part, DUR, ctx=ctx) as lease,
                ):
                    start = time.monotonic()
                    if lease.partitions:
                        stored_token, revision, what = stored.token_of(holder, lease)
                        # Held until the section is next written: the write must keep our
                        # entry, and our release then races with its writer's bookkeeping.
                        later = writes.after(revision, min(HOLD, lease.ctx.remaining()))
                        if (
                            stored_token is not None
                            and later is not None
                            and not entries_of(later[1], holder, lease)
                        ):
                            what = f"the write at revision {later[0]} dropped it while held"
                            stored_token = None
                    end = min(time.monotonic(), lease.deadline)
                    release.enter_context(preempt.active())  # leaves after the lease does
            except LessorError as e:
                findings.add(acquisitions=1, errors=type(e).__name__)
                continue
            holding = Holding(name, SECTION, tuple(lease.partitions), start, end, lease.token)
            findings.add(acquisitions=1, holdings=holding)
            if not lease.partitions:
                continue
            findings.add(checked=1)
            ranges = lease.partitions.to_strings()
            if stored_token is None:
                findings.add(missing=f"{name}: lease {ranges} token {lease.token}: {what}")
                stop.set()
            elif stored_token != lease.token:
                findings.add(mismatches=(name, ranges, lease.token, stored_token))
                stop.set()
    except BaseException as e:  # reported by the test, which must finish
        findings.add(crashes=f"{name}: {type(e).__name__}: {e}")


@pytest.fixture
def etcd_client(etcd_server: Any) -> Iterator[Any]:
    """A pyetcd client to the session's etcd, to read what the lessors stored."""
    import pyetcd  # noqa: PLC0415

    host, port = etcd_server.endpoint.rsplit(":", 1)
    client = pyetcd.client(host=host, port=int(port), timeout=5)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_tokens_are_the_stored_revisions_under_thread_races(
    etcd_server: Any, etcd_client: Any
) -> None:
    from lessor.etcd import EtcdLessor  # noqa: PLC0415  (only sessions that need etcd pay)
    from lessor.etcd.keys import SectionKeys  # noqa: PLC0415

    seed = int(os.environ.get("LESSOR_RACES_SEED", random.randrange(2**32)))
    prefix = f"/races-{uuid.uuid4().hex[:8]}/"
    keys = SectionKeys.of(prefix, SECTION)
    stored = StoredLeases(etcd_client, keys)
    writes = SectionWrites()
    findings = Findings()
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def lessor(holder: str) -> EtcdLessor:
        return EtcdLessor(etcd_server.endpoints, prefix=prefix, holder=holder, rpc_timeout=2.0)

    with contextlib.ExitStack() as stack:
        tested = stack.enter_context(lessor("races-tested"))
        other = stack.enter_context(lessor("races-other"))
        background = stack.enter_context(lessor("races-background"))
        # Held to the end (the stack gives them back): live markers outside the contested zone.
        for i in range(BACKGROUND):
            part = Partition(CONTESTED + 10 + 2 * i, CONTESTED + 11 + 2 * i)
            held = stack.enter_context(background.lease(SECTION, part, SECONDS + 120))
            assert held.partitions.to_strings() == [str(part)]
        watch = etcd_client.add_watch_callback(keys.value, writes.seen)
        stack.callback(etcd_client.cancel_watch, watch)

        began = time.monotonic()
        with switch_interval(SWITCH_INTERVAL):
            try:
                quota = MAX_ACQUISITIONS // (THREADS + OTHER_THREADS)
                for n in range(THREADS + OTHER_THREADS):
                    mine = n < THREADS
                    name = f"tested.{n}" if mine else f"other.{n - THREADS}"
                    args = (
                        name,
                        "races-tested" if mine else "races-other",
                        tested if mine else other,
                        stored,
                        writes,
                        random.Random(f"{seed}-{n}"),
                        quota,
                        stop,
                        findings,
                    )
                    threads.append(
                        threading.Thread(target=run_thread, args=args, name=name, daemon=True)
                    )
                    threads[-1].start()
                stop.wait(SECONDS)  # set early by a thread that found a wrong token
            finally:
                stop.set()
                bound = time.monotonic() + ACQUIRE_WITHIN + 30
                for t in threads:
                    t.join(timeout=max(0.0, bound - time.monotonic()))
        ended = time.monotonic()
    alive = [t.name for t in threads if t.is_alive()]

    holdings = findings.holdings
    overlaps = find_overlaps(holdings)
    inversions = find_token_inversions(holdings)
    print(
        f"\nraces: {findings.acquisitions} acquisitions "
        f"({sum(1 for h in holdings if h.ranges)} with ranges, {findings.checked} checked "
        f"against etcd), {sum(findings.errors.values())} failed {dict(findings.errors)}, "
        f"token mismatches {len(findings.mismatches)} (from "
        f"{len({m[3] for m in findings.mismatches})} swaps), entries missing "
        f"{len(findings.missing)}, overlaps {len(overlaps)}, token inversions "
        f"{len(inversions)}; {THREADS}+{OTHER_THREADS} threads, {BACKGROUND} background "
        f"leases, switch interval {SWITCH_INTERVAL:g}s, seed {seed}, {ended - began:.1f}s"
    )
    problems = []
    if findings.mismatches:
        problems.append(
            f"{len(findings.mismatches)} tokens differ from the revision etcd stored:\n"
            + "\n".join(
                f"{name}: lease {ranges} has token {token}, its marker was created at "
                f"revision {created}"
                for name, ranges, token, created in findings.mismatches[:10]
            )
        )
    if findings.missing:
        problems.append(
            f"{len(findings.missing)} leases not found live in etcd:\n"
            + "\n".join(findings.missing[:10])
        )
    if overlaps:
        problems.append("overlaps:\n" + "\n".join(map(str, overlaps[:5])))
    if inversions:
        problems.append(
            f"{len(inversions)} token inversions:\n"
            + "\n".join(
                f"{a.holder} token {a.token} ended before {b.holder} token {b.token} began"
                for a, b in inversions[:5]
            )
        )
    if findings.crashes:
        problems.append("threads crashed:\n" + "\n".join(findings.crashes[:10]))
    if alive:
        problems.append(f"threads still running after the join bound: {alive}")
    if findings.checked < 100:
        problems.append(f"only {findings.checked} leases with ranges were checked")
    assert not problems, "\n".join(problems)
