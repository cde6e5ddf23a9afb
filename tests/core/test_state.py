"""The Txns of ``state.py`` on the in-memory etcd: what each one leaves behind when its reply
is lost and it is sent again."""

from __future__ import annotations

from typing import Any

import pytest

from lessor.etcd.calls import run
from lessor.etcd.keys import SectionKeys
from lessor.etcd.section import Entry
from lessor.etcd.state import SectionTxns
from lessor.etcd.transport import RetryableRpc
from lessor.partition import Partition, SortedPartitions
from tests.support.etcd_model import EtcdModel, FakeClock, ModelTransport, rpc


def setup() -> tuple[EtcdModel, ModelTransport, SectionTxns, int]:
    etcd = EtcdModel(FakeClock())
    transport = ModelTransport(etcd)
    txns = SectionTxns(transport.rpc, SectionKeys.of("/t/", "s"))
    lease: Any = transport.lease("LeaseGrant", rpc.LeaseGrantRequest(TTL=30), 1.0, "grant")
    return etcd, transport, txns, int(lease.ID)


def test_a_tombstone_sent_again_after_a_lost_reply_still_stops_a_late_swap() -> None:
    """Regression (4569aea): the retry of the tombstone Txn took the tombstone its first try
    had written for a committed marker and deleted it; a swap still queued in etcd then
    committed an entry that nobody held, withholding its ranges until the TTL."""
    etcd, transport, txns, lease = setup()
    ours = Entry(lease, 1, SortedPartitions([Partition(0, 4)]), "me")
    snapshot = run(transport, txns.read(1.0))
    transport.fault = "delayed"  # the swap reaches etcd only later
    with pytest.raises(RetryableRpc):
        run(transport, txns.swap(snapshot, [], [], [ours], 1.0))
    transport.fault = "lost"  # the tombstone is written; its reply is lost
    with pytest.raises(RetryableRpc):
        run(transport, txns.abandon(lease, 1, 1.0))
    run(transport, txns.abandon(lease, 1, 1.0))  # sent again
    etcd.apply_delayed(0)  # the late swap arrives
    assert run(transport, txns.read(1.0)).live() == []
    assert not etcd.delayed


def test_a_committed_marker_deleted_by_a_tombstone_whose_reply_was_lost_stays_dead() -> None:
    """The first try deleted the committed marker; the retry writes a tombstone in its place,
    which nobody may take for the marker."""
    _, transport, txns, lease = setup()
    ours = Entry(lease, 1, SortedPartitions([Partition(0, 4)]), "me")
    snapshot = run(transport, txns.read(1.0))
    transport.fault = "lost"  # the swap commits; its reply is lost
    with pytest.raises(RetryableRpc):
        run(transport, txns.swap(snapshot, [], [], [ours], 1.0))
    transport.fault = "lost"
    with pytest.raises(RetryableRpc):
        run(transport, txns.abandon(lease, 1, 1.0))
    run(transport, txns.abandon(lease, 1, 1.0))
    assert run(transport, txns.read(1.0)).live() == []
