"""The demo's verdict finds what it claims to rule out and shows its recovery targets; its
workers' recording lessor waits and looks with its inner lessor's ``wait_free`` and ``is_held``
(no etcd needed)."""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import replace
from pathlib import Path

from lessor import Context, MemoryLessor, Partition
from lessor.demo.store import KEY_SPACE_BYTES, ReminderStore
from lessor.demo.table import render
from lessor.demo.verdict import Fault, judge, target
from lessor.demo.worker import RecordingLessor
from lessor.sweep_waits import observes


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


def test_recoveries_carry_issue_11_s_targets_and_a_missed_one_is_shown(tmp_path: Path) -> None:
    store = ReminderStore.create(tmp_path / "store.db", 3)
    try:
        now = time.monotonic()
        faults = [Fault("dc", now, "dc-a", "dc-a's 2 workers SIGKILLed"),
                  Fault("leader", now, "m0", "etcd leader m0 killed")]  # fmt: skip
        verdict = judge(store, faults, started=now - 1, ended=now + 1, dcs=["dc-a", "dc-b"],
                        died={"dc-a": now}, section_id="demo", lease_seconds=3.0)  # fmt: skip
    finally:
        store.close()
    dc, leader = verdict.recoveries
    assert (dc.target, leader.target) == (8.0, 1.5)  # with the demo's 3 s leases
    assert (target(faults[0], 10.0), target(faults[1], 10.0)) == (15.0, 1.5)
    # No lease was asked for after the leader's kill: not recovered, which misses its target.
    assert leader.seconds is None and leader.missed
    assert replace(leader, seconds=1.4).missed is False
    assert replace(leader, seconds=1.6).missed is True
    args = argparse.Namespace(endpoints=None, workers_per_dc=2, no_faults=False)
    table = render(replace(verdict, recoveries=[dc, replace(leader, seconds=1.6)]), args,
                   ["dc-a", "dc-b"], {"dc-a": now}, now - 1)  # fmt: skip
    assert re.search(r"etcd leader m0 killed\s+1\.60 s\s+1\.5 s   MISSED: ", table), table
    assert re.search(r"dc-a's 2 workers SIGKILLed\s+0\.00 s\s+8 s   dc-a held no lease", table)


def test_the_recording_lessor_waits_and_looks_with_its_inner_lessor(tmp_path: Path) -> None:
    calls: list[tuple[str, str, Partition]] = []

    class Inner(MemoryLessor):
        @property
        def max_duration(self) -> float:
            return 42.0

        def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
            calls.append(("wait_free", section_id, part))
            return super()._wait_free(ctx, section_id, part)

        def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
            calls.append(("is_held", section_id, part))
            return super()._is_held(ctx, section_id, part)

    store = ReminderStore.create(tmp_path / "store.db", 1)
    try:
        recording = RecordingLessor(Inner(), store, worker="w1", dc="dc-a")
        part = Partition(0, 10)
        ctx = Context.background().with_timeout(10)
        assert recording.max_duration == 42.0
        assert recording.wait_free(ctx, "s", part)  # nothing held: at once
        assert not recording.is_held(ctx, "s", part)
        # not the contract's defaults (a back-off; NotImplementedError): probes are made
        assert calls == [("wait_free", "s", part), ("is_held", "s", part)]
        assert observes(recording)
    finally:
        store.close()
