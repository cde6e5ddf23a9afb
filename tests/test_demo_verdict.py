"""The demo's verdict finds what it claims to rule out (no etcd needed: a store and its logs)."""

from __future__ import annotations

import time
from pathlib import Path

from lessor import Context, Partition
from lessor.demo.store import KEY_SPACE_BYTES, ReminderStore
from lessor.demo.verdict import judge


def test_one_reminder_processed_by_two_holders_at_once_is_found(tmp_path: Path) -> None:
    store = ReminderStore.create(tmp_path / "store.db", 3)
    try:
        [item, *_] = store.ids_in([store_universe()])
        ctx = Context.background().with_timeout(5)
        start = time.monotonic()
        # Two holders with one token (leases granted together share one) whose processing
        # of one reminder overlaps in time: the verdict must not take them for one lease.
        assert store.process(ctx, [item], worker="w1", dc="dc-a", token=7, start=start) == 1
        store.process(ctx, [item], worker="w2", dc="dc-b", token=7, start=start)
        verdict = judge(store, [], started=start - 1, ended=time.monotonic(), dcs=["dc-a", "dc-b"],
                        died={}, section_id="demo")  # fmt: skip
    finally:
        store.close()
    assert len(verdict.item_overlaps) == 1
    assert any("overlapped another holder" in f for f in verdict.failures)


def store_universe() -> Partition:
    return Partition.universe(KEY_SPACE_BYTES)
