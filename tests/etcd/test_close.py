"""``EtcdLessor.close()`` while leases are held, on a real etcd (regressions from the second
review of 95b3b53, which closed the connections at once: a holder that released after close()
could not delete its marker, and its ranges stayed held until its etcd lease's TTL ran out).

Proven here: leases still held when the lessor is closed end at their release, and an
overrun at its deadline, as before; the lessor shuts down after the last release.
"""

from __future__ import annotations

import time

import pytest

from lessor import Context, LessorError, Partition
from lessor.etcd import EtcdLessor
from lessor.testing import LocalEtcd

P = Partition
WAIT = 15.0  # the longest an event may take on a loaded machine


def test_a_lease_released_after_close_frees_its_ranges_at_its_release(
    etcd_server: LocalEtcd, prefix: str
) -> None:
    a = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="A")
    b = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="B")
    try:
        with a.lease("s", P(0, 10), 10.0) as held:
            assert held.partitions.to_strings() == ["0_a"]
            a.close()  # shutting down; the callback ends right after
            with pytest.raises(LessorError, match="closed"):
                a.lease("s", P(20, 30), 1.0).__enter__()
        with b.lease("s", P(0, 10), 1.0) as got:
            assert got.partitions.to_strings() == ["0_a"]
        assert not a._transport._channels, "the last release shut the lessor down"  # type: ignore[attr-defined]
    finally:
        a.close()
        b.close()


def test_an_overrun_after_close_still_ends_at_its_deadline(
    etcd_server: LocalEtcd, prefix: str
) -> None:
    a = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="A")
    b = EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="B")
    try:
        with a.lease("s", P(0, 10), 1.0) as held:
            a.close()
            ctx = Context.background().with_timeout(WAIT)
            while True:  # the callback still runs: the reaper frees the range at its deadline
                with b.lease("s", P(0, 10), 1.0, ctx=ctx) as got:
                    if got.partitions.to_strings() == ["0_a"]:
                        late = time.monotonic() - held.deadline
                        break
                assert b.wait_free(ctx, "s", P(0, 10))
        assert late < 1.0, f"granted {late:.2f}s after the overrun's deadline"
    finally:
        a.close()
        b.close()
