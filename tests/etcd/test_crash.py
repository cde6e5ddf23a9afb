"""A holder SIGKILLed while it holds: its ranges go to a waiting process by etcd's lease clock.

Issue 11's target: with ``dur`` 2 s, the ranges are granted to another process within
``ceil(dur + margin) + 0.5`` s of the kill (3.5 s with the default margin of 0.2 s). The etcd
lease is ``ceil(dur + margin)`` seconds long and the holder may have renewed it just before it
died; etcd checks for expired leases every 500 ms, so etcd alone takes up to the whole 3.5 s
to delete the marker when the kill follows a renewal at once, as here. The lessor's own part
comes after: the watch's DELETE event reaches ``wait_free``, and one or two Txns grant the
range (6-19 ms measured). The test allows it :data:`GRANT` on top (:data:`BOUND`, 3.6 s):
asserting 3.5 s exactly would fail whenever etcd's check happens to fall last.

The holder (the ``cycle`` program of ``test_recovery.py``) leases the range again and again,
so its etcd lease is shared and renewed, and is killed just after a grant, while it holds:
the worst moment, right after the renewal. The other process, the test's, then waits for the
range with ``wait_free`` and leases it as soon as that returns. The time is from just before
the SIGKILL to the grant, both on the test's monotonic clock.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

from lessor import Partition
from lessor.etcd import EtcdLessor
from tests.support.etcd_admin import admin_client

from .test_recovery import PREFIX, acquire_when_free, holder, marker_of, show_tries

PART = Partition(0x10, 0x20)
DUR = 2.0
MARGIN = 0.2  # EtcdLessor's default
TTL = math.ceil(DUR + MARGIN)  # what the holder's etcd lease is asked for: 3 s
GRANT = 0.1  # from the marker's deletion to the grant: the watch event and one or two Txns
BOUND = TTL + 0.5 + GRANT
HOLD = 1.0  # each of the holder's leases; more than dur - ttl + margin: each one renews
WARM_UP = 3  # acquisitions before the one it dies in, more than TTL seconds in all


def test_a_killed_holder_s_range_goes_to_a_waiting_process_within_ttl_and_a_half_second(
    etcd_server: Any, tmp_path: Path
) -> None:
    section = f"crash-{uuid.uuid4().hex[:12]}"
    config = {"endpoints": etcd_server.endpoints, "prefix": PREFIX, "section": section,
              "range": str(PART), "dur": DUR, "hold": HOLD}  # fmt: skip
    with (
        holder("cycle", config, tmp_path / "holder.stderr") as cycling,
        EtcdLessor(etcd_server.endpoints, prefix=PREFIX) as lessor,
        admin_client(etcd_server.endpoint) as admin,
    ):
        cycling.expect_event("ready", 30)
        cycling.send("go")
        grants = []
        for _ in range(WARM_UP):
            grant = cycling.expect_event("granted", 30)
            assert grant["ranges"] == [str(PART)], grant
            marker = marker_of(admin, section, grant["token"])  # the token is its revision
            assert marker is not None and marker.lease_id != 0, grant
            grants.append((grant, marker.lease_id))
            cycling.expect_event("released", 30)
        lease_id = grants[0][1]
        assert [i for _, i in grants] == [lease_id] * WARM_UP, "the holder's leases share one"
        granted_ttl = admin.get_lease_info(lease_id).grantedTTL
        assert granted_ttl == TTL

        last = cycling.expect_event("granted", 30)  # the holder has renewed its lease, and holds
        killed = time.monotonic()  # just before the signal
        cycling.kill()

        marker = marker_of(admin, section, last["token"])
        tries = acquire_when_free(lessor, section, PART, within=BOUND + 10)
        _, granted, ranges, token = tries[-1]
        ttl_after = admin.get_lease_info(lease_id).TTL

    took = granted - killed
    first = grants[0][0]["t"]
    timeline = (
        f"the holder's etcd lease {lease_id:x} (TTL {granted_ttl}s) first granted "
        f"{killed - first:.3f}s before the kill; its last grant {(killed - last['t']) * 1e3:.1f} "
        f"ms before it (deadline +{last['deadline'] - killed:.3f}s); our tries after the kill "
        f"(asked, granted, ranges) {show_tries(tries, killed)}"
    )
    print(f"\ncrash: granted to another process {took:.3f}s after the kill (bound {BOUND}s); "
          f"{timeline}")  # fmt: skip
    assert last["ranges"] == [str(PART)], last
    # The last grant rode on the first lease, more than its TTL later: it was renewed.
    assert marker is not None and marker.lease_id == lease_id, timeline
    assert last["t"] - first > granted_ttl, timeline
    assert tries[0][2] == [], f"the range was not held after the kill: {timeline}"
    assert ranges == [str(PART)] and token > last["token"], timeline
    assert granted >= last["deadline"], f"granted before the dead holder's deadline: {timeline}"
    assert ttl_after == -1, f"the holder's etcd lease did not expire: {timeline}"
    assert took <= BOUND, (
        f"granted to another process {took:.3f}s after the kill, bound {BOUND}s: {timeline}"
    )
