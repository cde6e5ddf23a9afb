"""A body that overruns its lease's deadline on ``AsyncEtcdLessor`` is cancelled within 50 ms of
the deadline, and its ranges are free for another lessor right after it (issue 13).

The holder is an :class:`~lessor.etcd.AsyncEtcdLessor` in the test's event loop whose body
would wait forever: at the lease's deadline it is cancelled (it notes when), and the ``async
with`` raises :class:`~lessor.DeadlineExceeded`. The lateness of the cancel, from the deadline
to the moment the body saw it, must be at most :data:`LATENESS` (50 ms); both are readings of
:func:`time.monotonic`.

Another lessor, a threaded :class:`~lessor.etcd.EtcdLessor` on a thread of the test (so the
holder's loop does nothing else), asks for the range before the deadline (it is held: nothing
is granted), waits with ``wait_free`` and asks again as soon as that returns
(``test_recovery.acquire_when_free``, as for the threaded lessor's overrun). It must be
granted the range at or after the holder's deadline, within ``test_recovery``'s
:data:`~tests.etcd.test_recovery.OVERRUN_BOUND`, while the holder's etcd lease still lives: the
lessor freed the range, not etcd's lease clock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from lessor import Context, DeadlineExceeded
from lessor.etcd import AsyncEtcdLessor, EtcdLessor
from tests.support.etcd_admin import admin_client

from .test_recovery import (
    OVERRUN_BOUND,
    OVERRUN_DUR,
    PART,
    PREFIX,
    acquire_when_free,
    marker_of,
    show_tries,
)

LATENESS = 0.05  # issue 13: the body is cancelled within 50 ms of the deadline


def test_an_overrunning_body_is_cancelled_within_50ms_and_its_ranges_come_free(
    etcd_server: Any,
) -> None:
    section = f"aio-overrun-{uuid.uuid4().hex[:12]}"
    endpoints = list(etcd_server.endpoints)

    async def main(other: EtcdLessor, admin: Any) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with AsyncEtcdLessor(endpoints, prefix=PREFIX) as holder:
            with pytest.raises(DeadlineExceeded) as e:
                async with holder.lease(section, PART, OVERRUN_DUR) as lease:
                    seen["lease"] = lease
                    seen["marker"] = marker_of(admin, section, lease.token)
                    within = OVERRUN_DUR + 10
                    seen["waiting"] = asyncio.create_task(
                        asyncio.to_thread(acquire_when_free, other, section, PART, within)
                    )
                    try:
                        await asyncio.Event().wait()  # overruns, unless cancelled
                    except asyncio.CancelledError:
                        seen["cancelled"] = time.monotonic()
                        raise
            seen["error"] = e.value
            seen["tries"] = await seen["waiting"]
            seen["lease_ttl"] = admin.get_lease_info(seen["marker"].lease_id).TTL
        return seen

    with (
        EtcdLessor(endpoints, prefix=PREFIX) as other,
        admin_client(etcd_server.endpoint) as admin,
    ):
        other.with_lease(Context.background(), f"{section}-warm", PART, 1, lambda c, p: None)
        seen = asyncio.run(main(other, admin))

    lease, tries = seen["lease"], seen["tries"]
    deadline = lease.deadline
    late = seen["cancelled"] - deadline
    _, granted, ranges, token = tries[-1]
    freed = granted - deadline
    timeline = (
        f"the body was cancelled {late * 1e3:.1f} ms after its deadline; the other lessor's "
        f"tries (asked, granted, ranges) from the deadline: {show_tries(tries, deadline)}; "
        f"the holder's etcd lease had {seen['lease_ttl']}s left (whole seconds)"
    )
    print(f"\naio overrun: {timeline}")
    assert "deadline" in str(seen["error"]) and str(lease.token) in str(seen["error"])
    assert 0 <= late <= LATENESS, timeline
    assert seen["marker"] is not None and seen["marker"].lease_id != 0, timeline
    assert tries[0][2] == [] and tries[0][0] < deadline, f"not held when first asked: {timeline}"
    assert ranges == [str(PART)] and token > lease.token, timeline
    assert granted >= deadline, f"granted {-freed:.3f}s before the holder's deadline: {timeline}"
    assert freed <= OVERRUN_BOUND, timeline
    # etcd's TTL is in whole seconds, rounded down: -1 is a lease that is gone.
    assert seen["lease_ttl"] >= 0, f"the holder's etcd lease had expired: {timeline}"
