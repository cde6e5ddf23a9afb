"""A holder that dies without giving its lease back: its ranges come free by etcd's lease clock.

The design's promise (lessor/etcd/leases.py): a crashed holder's ranges are free again no
later than its etcd lease's granted TTL after the grant, plus etcd's expiry check (up to
0.5 s). The test allows the granted TTL + 1 s, counted from just before the child was told to
acquire, which is before the grant.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pyetcd

from lessor import Context, Partition
from lessor.etcd import EtcdLessor
from lessor.etcd.keys import SectionKeys

from .conftest import Spawn

PREFIX = "/lessor/"
PART = Partition(0x10, 0x20)
DUR = 1.0  # a short lease: EtcdLessor asks etcd for ceil(1 + 0.2 + 2.0) = 4 s


def test_crashed_holder_frees_its_range_within_granted_ttl(etcd_server: Any, spawn: Spawn) -> None:
    section = f"crash-{uuid.uuid4().hex[:12]}"
    host, port = etcd_server.endpoints[0].rsplit(":", 1)
    admin = pyetcd.client(host=host, port=int(port), timeout=5)
    child = spawn(
        "crash holder",
        "crash",
        {
            "endpoints": etcd_server.endpoints,
            "prefix": PREFIX,
            "section": section,
            "range": str(PART),
            "dur": DUR,
        },
    )
    with EtcdLessor(etcd_server.endpoints, prefix=PREFIX) as lessor:
        try:
            assert child.expect(timeout=30) == "ready"
            told = time.monotonic()  # before the child's grant, so the bound below is safe
            child.send("go")
            acquired = json.loads(child.expect(timeout=30))
            acquired_in = time.monotonic() - told
            assert acquired["ranges"] == [str(PART)]
            child_token = acquired["token"]

            # The child's etcd lease, straight from etcd: the lease its marker is attached to.
            markers = list(admin.get_prefix(SectionKeys.of(PREFIX, section).markers))
            assert len(markers) == 1, [meta.key for _, meta in markers]
            marker = markers[0][1]
            assert marker.create_revision == child_token  # the token is the marker's revision
            lease_id = marker.lease_id
            assert lease_id != 0, "the marker is not attached to an etcd lease"
            granted_ttl = admin.get_lease_info(lease_id).grantedTTL
            assert granted_ttl >= DUR

            with lessor.lease(section, PART, 60) as lease:  # the child really holds it
                assert lease.partitions == []

            killed = time.monotonic()
            assert child.kill() != 0

            bound = told + granted_ttl + 1.0
            while True:
                with lessor.lease(section, PART, 60) as lease:
                    freed = time.monotonic()
                    if lease.partitions:
                        assert lease.partitions == [PART]
                        token = lease.token
                        break
                assert freed < bound, (
                    f"the crashed holder's range is still held {freed - told:.2f}s after its "
                    f"acquisition; its etcd lease was granted {granted_ttl}s"
                )
                Context.background().wait(0.05)  # polling the lessor: there is no event to await
            # Freed by etcd expiring the child's lease, which took the marker with it.
            assert admin.get_lease_info(lease_id).TTL == -1
        finally:
            admin.close()

    print(
        f"\ncrash: child acquired in {acquired_in * 1e3:.1f} ms (token {child_token}, etcd lease "
        f"{lease_id:x}, granted TTL {granted_ttl}s); killed {killed - told:.2f}s after; range "
        f"free again {freed - told:.2f}s after acquisition ({freed - killed:.2f}s after the kill), "
        f"bound {granted_ttl + 1.0:.1f}s; new token {token}"
    )
    assert freed <= bound
    assert token > child_token
