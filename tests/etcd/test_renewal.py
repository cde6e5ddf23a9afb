"""Shared etcd leases renewed by LeaseKeepAlive, and the reaper, on a real etcd: regressions
from the adversarial review of 3a9c70d (each failed there) and a stress run.

A renewal keeps alive every marker on the lease, so a marker that neither its holder releases
nor the reaper ends would live as long as its process keeps acquiring. Proven here:

* an exception reaching the acquiring thread after its grant was settled (before ``_acquire``
  returns) leaves nothing held past the grant's deadline, though the process keeps renewing
  the lease: the core has the reaper track every grant as it settles it;
* a failure to start the expire's clean-up thread neither kills the reaper nor loses the
  expiry (it runs on the reaper's thread);
* ``close()`` (with nothing held) waits for clean-ups under way (up to ``release_timeout``),
  and one still running after that never opens a connection again;
* a closed lessor refuses acquisitions and ``wait_free`` with an error saying so;
* stress under ``sys.setswitchinterval(1e-6)``: no overlap, tokens increase per key, nothing
  held at the end.

Waits are on events (``wait_free``, thread events), bounded; no test sleeps for an outcome.
"""

from __future__ import annotations

import inspect
import itertools
import os
import random
import sys
import threading
import time
from typing import Any

import pytest

from lessor import Context, DeadlineExceeded, LessorError, Partition
from lessor.etcd import EtcdLessor, shell
from lessor.etcd.core import acquire
from lessor.testing import LocalEtcd
from tests.support.interrupts import raising_once_at
from tests.support.threads import ThreadsExhausted

P = Partition
WAIT = 15.0  # the longest any event may take on a loaded machine before the test fails


class Interrupt(BaseException):
    """Stands for a KeyboardInterrupt (a signal handler's exception) reaching the thread."""


def _raising_once_at(text: str) -> Any:
    """A tracer raising Interrupt once at the line of ``core.acquire`` (the acquisition's
    steps, after its grant) holding ``text``: the same as an asynchronous exception delivered
    just before that line."""
    src, first = inspect.getsourcelines(acquire)
    line = first + next(i for i, text_line in enumerate(src) if text in text_line)
    tracer, _ = raising_once_at(acquire, line, Interrupt())
    return tracer


class Renewing:
    """The process's other workers: acquire other keys of the section again and again, so
    the shared etcd lease keeps being renewed."""

    def __init__(self, lessor: EtcdLessor) -> None:
        self.stop = threading.Event()
        self.cycles = 0

        def run() -> None:
            while not self.stop.is_set():
                with lessor.lease("s", P(100, 110), 1.0):
                    self.cycles += 1
                self.stop.wait(0.1)

        self.thread = threading.Thread(target=run, name="renewing worker")

    def __enter__(self) -> Renewing:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _freed_after(other: EtcdLessor, part: Partition, deadline: float) -> float:
    """Wait (on etcd's watch) until ``other`` is granted all of ``part``; seconds after
    ``deadline`` it was."""
    ctx = Context.background().with_timeout(WAIT)
    while True:
        with other.lease("s", part, 1.0, ctx=ctx) as got:
            if got.partitions.to_strings() == [f"{part.low:x}_{part.high:x}"]:
                return time.monotonic() - deadline
        assert other.wait_free(ctx, "s", part), f"{part} still held {WAIT}s on"


def test_an_exception_after_the_grant_leaves_nothing_held_past_its_deadline(
    etcd_server: LocalEtcd, prefix: str
) -> None:
    a = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="A")
    b = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="B")
    try:
        sys.settrace(_raising_once_at("if m.error is not None"))
        try:
            with pytest.raises(Interrupt):
                a.lease("s", P(0, 10), 1.0).__enter__()
        finally:
            sys.settrace(None)
        deadline = time.monotonic() + 1.0
        with Renewing(a):
            late = _freed_after(b, P(0, 10), deadline)
        assert late < 1.0, f"the lost grant's keys came free {late:.2f}s after its deadline"
    finally:
        a.close()
        b.close()


def test_a_clean_up_thread_that_cannot_start_neither_loses_the_expiry_nor_the_reaper(
    etcd_server: LocalEtcd, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="A")
    b = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="B")
    try:
        exhausted = ThreadsExhausted()
        monkeypatch.setattr(shell, "threading", exhausted)
        with Renewing(a):
            with a.lease("s", P(0, 10), 0.5) as first:  # overruns: its expire cannot start
                late = _freed_after(b, P(0, 10), first.deadline)
                assert exhausted.failures == 0, "the reaper never tried to end the overrun"
                assert late < 1.0, f"first overrun's keys free {late:.2f}s after its deadline"
            with a.lease("s", P(20, 30), 0.5) as second:  # the reaper still ends overruns
                late = _freed_after(b, P(20, 30), second.deadline)
                assert late < 1.0, f"second overrun's keys free {late:.2f}s after its deadline"
    finally:
        a.close()
        b.close()


def test_close_waits_for_clean_ups_and_a_late_one_opens_no_connection(
    etcd_server: LocalEtcd, prefix: str
) -> None:
    a = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="A", release_timeout=0.5)
    transport: Any = a._transport
    real_kv = transport.kv
    in_delete, go = threading.Event(), threading.Event()

    def kv(method: str, request: Any, timeout: float, what: str) -> Any:
        if threading.current_thread().name == "lessor clean-up":
            in_delete.set()
            go.wait(WAIT)  # the clean-up is held up past close()'s wait
        return real_kv(method, request, timeout, what)

    transport.kv = kv
    scope = a.lease("s", P(0, 10), 0.3)
    scope.__enter__()
    assert in_delete.wait(WAIT), "the reaper never started the expire's clean-up"
    scope.__exit__(None, None, None)  # the holder lets go: close() then shuts down at once
    started = time.monotonic()
    a.close()
    # A clean-up's bound is twice release_timeout (its deletion's tries, then its give-back).
    assert time.monotonic() - started < 2 * 0.5 + 0.5, "close() waited past its bound"
    clean_ups = [t for t in threading.enumerate() if t.name == "lessor clean-up"]
    go.set()
    for t in clean_ups:
        t.join(WAIT)
    assert not transport._channels, "a clean-up after close() opened a channel again"


def test_a_closed_lessor_refuses_acquisitions_and_waits(
    etcd_server: LocalEtcd, prefix: str
) -> None:
    a = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="A")
    with a.lease("s", P(0, 10), 1.0):
        pass
    a.close()
    a.close()  # twice is fine
    with pytest.raises(LessorError, match="closed"):
        a.lease("s", P(0, 10), 1.0).__enter__()
    with pytest.raises(LessorError, match="closed"):
        a.wait_free(Context.background().with_timeout(1.0), "s", P(0, 10))


def test_stress_shared_renewed_leases_with_overruns_under_a_tiny_switch_interval(
    etcd_server: LocalEtcd, prefix: str, request: pytest.FixtureRequest
) -> None:
    """Stress: 2 lessors x 4 threads on one section, durations 0.3..1.5 s (so
    leases of TTL 2 are shared and renewed), a third of the holders overrunning their deadline
    (the reaper ends them), ``sys.setswitchinterval(1e-6)``. Checks no overlap (a grant
    returned before another holder of a common key released or reached its deadline), tokens
    increasing per key in grant order, and that nothing stays held after everyone is done."""
    lessors = [EtcdLessor(etcd_server.endpoints, prefix=prefix, holder=f"L{i}") for i in range(2)]
    request.addfinalizer(lambda: [lessor.close() for lessor in lessors])
    records: list[tuple[int, float, float, float, list[tuple[int, int]]]] = []
    lock = threading.Lock()
    stop = time.monotonic() + float(os.environ.get("LESSOR_RENEWAL_STRESS_SECONDS", "6"))
    errors: list[BaseException] = []

    def work(i: int) -> None:
        rnd = random.Random(i)
        lessor = lessors[i % 2]
        try:
            while time.monotonic() < stop:
                low = rnd.randrange(0, 24)
                dur = rnd.choice([0.3, 0.8, 1.5])
                try:
                    with lessor.lease(
                        "s",
                        P(low, low + rnd.randrange(1, 9)),
                        dur,
                        ctx=Context.background().with_timeout(3),
                    ) as got:
                        start = time.monotonic()
                        end_by = start + got.ctx.remaining()
                        if rnd.random() < 0.3:
                            time.sleep(dur + 0.3)  # overrun: the reaper ends it
                        else:
                            time.sleep(rnd.random() * dur * 0.5)
                        end = min(time.monotonic(), end_by)
                        if got.partitions:
                            with lock:
                                records.append(
                                    (
                                        got.token,
                                        start,
                                        end,
                                        end_by,
                                        [(p.low, p.high) for p in got.partitions],
                                    )
                                )
                except DeadlineExceeded:
                    pass
        except BaseException as e:
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    by_key: dict[int, list[tuple[int, float, float]]] = {}
    for token, start, end, _, parts in records:
        for lo, hi in parts:
            for k in range(lo, hi):
                by_key.setdefault(k, []).append((token, start, end))
    for k, rs in by_key.items():
        rs.sort()
        for (t1, _, e1), (t2, s2, _) in itertools.pairwise(rs):
            assert t1 < t2, f"key {k}: token {t1} repeated"
            assert s2 >= e1 - 0.005, f"key {k}: token {t2} granted {e1 - s2:.3f}s before {t1} ended"
    assert len(records) > 50
    with lessors[0].lease("s", P(0, 32), 1.0) as everything:
        assert everything.partitions.to_strings() == ["0_20"]
