"""Regression (found in review of the acquisition core): an exception that reaches the leading
thread *between two operations* of the core (in the shell's loop, ``drive_module._drive``, after
``steps.send`` returned and before ``perform``) left the lead generator suspended: the gate
stayed "led" by a thread that was gone.

How it happens for real: CPython checks for asynchronous exceptions (PyThreadState_SetAsyncExc,
a signal handler's exception in the main thread, KeyboardInterrupt) at its eval-breaker
points; two of them are in drive's own frame: the check after the C call ``steps.send(...)``
returns, and the loop's backward jump. drive only routes exceptions raised *inside perform*
into the core; one raised there propagates out of drive with the generator still suspended
at its yield. ``_acquire``'s ``give_up`` then finds the waiter in_attempt and does nothing.
The generator's ``finally: hand_over`` runs only when it is garbage-collected, i.e. when the
exception's traceback (which holds drive's frame, which holds ``steps``) is freed. Whenever the
caller keeps the exception -- a concurrent.futures Future does, as do this project's own tests
(``outcomes[name] = e``) -- the gate stays leaderless for that long:
 * the members of the suspended attempt (in_attempt=True) can never withdraw: their threads
   loop in _wait_turn *past their deadlines*, forever;
 * every later acquisition of the section in the process queues and dies at its deadline.
Invariant (5) (a gate with waiters always has a running leader), and the contract's "must
return by ctx's deadline".

Even when the caller swallows the exception at once, recovery waits for the *cyclic* GC: the
suspended lead generator sits in a reference cycle (Member.last_failure / Member.error hold an
exception whose traceback holds drive's frame, which holds the generator), so nothing frees it
until a collection happens to run -- in this test, not within 8 s.

Here the exception is raised at that point deterministically by a trace function (raising
from a 'line' event in drive's frame is the same as an asynchronous exception delivered at
the eval-breaker check just before that line).
"""

from __future__ import annotations

import concurrent.futures
import gc
import sys
import time
from typing import Any

import pytest

from lessor import Context, Partition
from lessor.etcd import EtcdLessor
from lessor.etcd import drive as drive_module
from lessor.etcd.ops import Swap
from lessor.etcd.shell import SectionShell
from lessor.testing import FaultProxy


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt / an async exception."""


def until(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


@pytest.mark.parametrize("keep", [True, False], ids=["future-keeps-exception", "swallowed"])
def test_an_exception_between_two_operations_goes_to_the_core(etcd_server: Any, keep: bool) -> None:
    prefix = f"/drive-{keep}/"
    link = FaultProxy(etcd_server.endpoint).start()
    lessor = EtcdLessor([link.address], prefix=prefix, rpc_timeout=0.5, acquire_timeout=20)
    pool = concurrent.futures.ThreadPoolExecutor(4)
    try:
        with lessor.lease("s", Partition(1000, 1001), 5):
            pass  # cached, with an etcd lease at hand
        section: SectionShell = lessor._sections["s"]
        gate = section.gate
        drive_code = drive_module._drive.__code__
        # the line right after `op = steps.send(...)` in drive
        src, first = __import__("inspect").getsourcelines(drive_module._drive)
        after_send = first + next(
            i for i, line in enumerate(src) if "result, error = None, None" in line
        )

        def tracer(frame: Any, event: str, arg: Any) -> Any:
            if frame.f_code is not drive_code:
                return None

            def local(frame: Any, event: str, arg: Any) -> Any:
                op = frame.f_locals.get("op")
                if (
                    event == "line"
                    and frame.f_lineno == after_send
                    and isinstance(op, Swap)
                    and any(e.ranges == [Partition(1, 2)] for e in op.ours)
                ):
                    # the attempt that took the member in (the leader's own lost swap did
                    # commit and was adopted: it holds a grant too)
                    sys.settrace(None)
                    raise Interrupt()
                return local

            return local

        def leader() -> None:
            sys.settrace(tracer)
            try:
                with lessor.lease(
                    "s", Partition(0, 1), 5, ctx=Context.background().with_timeout(10)
                ):
                    pass
            except Interrupt:
                if not keep:
                    return  # swallowed at once: nothing keeps the exception
                raise
            finally:
                sys.settrace(None)

        def member() -> float:
            t0 = time.monotonic()
            try:
                with lessor.lease(
                    "s", Partition(1, 2), 5, ctx=Context.background().with_timeout(3)
                ):
                    pass
            except Exception:
                pass
            return time.monotonic() - t0

        link.blackhole()  # the leader's first swap stalls...
        f_leader = pool.submit(leader)
        until(lambda: gate.leading and gate.queued == 0)
        f_member = pool.submit(member)  # ...so the member queues, and joins its next attempt
        until(lambda: gate.queued == 1)
        until(lambda: gate.queued == 0)  # the leader's next attempt (rpc_timeout 0.5 s) took it in
        link.heal()
        concurrent.futures.wait([f_leader], timeout=10)
        if keep:
            assert isinstance(f_leader.exception(), Interrupt)  # the Future keeps it
        else:
            assert f_leader.exception() is None
        # The member's deadline is 3 s; give it 5 more.
        done, _ = concurrent.futures.wait([f_member], timeout=8)
        assert f_member in done, (
            f"the member is still waiting 8 s after it began (deadline 3 s); gate.leading="
            f"{gate.leading}, queued={gate.queued}: the leader's generator is suspended and "
            "nobody runs it"
        )
        # and a newcomer is served
        ctx = Context.background().with_timeout(2)
        with lessor.lease("s", Partition(2, 3), 5, ctx=ctx) as lease:
            assert lease.partitions == [Partition(2, 3)]
    finally:
        link.heal()
        f_leader = None  # type: ignore[assignment]  # drop the exception: the gate recovers
        gc.collect()
        pool.shutdown(wait=False, cancel_futures=True)
        lessor.close()
        link.close()
