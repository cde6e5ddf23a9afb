"""Releases ride (gate.py, core/release.py): on a real etcd, releases made while the process's
acquisition of the section is on its way cost no write of their own.

Three holders release while another acquisition's swap is held back (a stalled link): their
releases board the gate. When the link heals, the next Txn of the process takes them all:
the swap of an acquisition queued behind (deleting their markers in whichever branch it
takes), or, with no acquisition left, one Txn of deletions that the first release sends for
all. Either way the etcd revision moves by the acquisitions' swaps and at most one more write,
every marker is gone, and every release is told as having ridden (``lessor.observe.freed``).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lessor import Context, Partition
from lessor.etcd import EtcdLessor
from lessor.etcd.gate import Gate
from lessor.observe import Observer, add_observer, remove_observer
from lessor.testing import FaultProxy
from tests.etcd.test_gate import Holder, until


class Freed(Observer):
    def __init__(self) -> None:
        self.rode: list[bool] = []
        self.lock = threading.Lock()

    def freed(self, backend: str, section_id: str, seconds: float, rode: bool) -> None:
        with self.lock:
            self.rode.append(rode)


@pytest.fixture
def freed() -> Iterator[Freed]:
    observer = Freed()
    add_observer(observer)
    try:
        yield observer
    finally:
        remove_observer(observer)


def revision(client: Any, prefix: str) -> int:
    """etcd's revision now, by a write of a key of the test's own (one revision)."""
    return int(client.put(prefix + "probe", "x").header.revision)


@pytest.mark.parametrize("queued_behind", [True, False], ids=["swap-carries", "release-txn"])
def test_releases_made_while_a_swap_is_on_its_way_ride_the_next_txn(
    etcd_server: Any,
    client: Any,
    prefix: str,
    freed: Freed,
    monkeypatch: pytest.MonkeyPatch,
    queued_behind: bool,
) -> None:
    # The stall lasts as long as the test needs (the package exports a function by the
    # module's name: the module itself comes from importlib).
    release_module = importlib.import_module("lessor.etcd.core.release")
    monkeypatch.setattr(release_module, "RIDE_WAIT", 60.0)
    link = FaultProxy(etcd_server.endpoint).start()
    lessor = EtcdLessor([link.address], prefix=prefix, rpc_timeout=10, acquire_timeout=20)
    let_go, done = threading.Event(), threading.Event()
    holders: list[Holder] = []
    try:
        with lessor.lease("s", Partition(1000, 1001), 5):
            pass  # the section is cached and an etcd lease is at hand
        gate: Gate[Any] = lessor._sections["s"].gate
        holders = [Holder(lessor, Partition(10 * i, 10 * i + 5), let_go) for i in range(3)]
        for h in holders:
            h.start()
            assert h.got.wait(10) and h.error is None
        before = revision(client, prefix)
        link.blackhole()
        acquirers = [Holder(lessor, Partition(500, 600), done)]
        if queued_behind:
            acquirers.append(Holder(lessor, Partition(700, 800), done))
        acquirers[0].start()
        until(lambda: gate.leading and gate.queued == 0)  # its swap is on its way
        if queued_behind:
            acquirers[1].start()
            until(lambda: gate.queued == 1)
        let_go.set()  # the three holders release, and board
        until(lambda: gate.aboard == 3)
        link.heal()
        for h in holders:
            h.join(20)
            assert not h.is_alive() and h.error is None
        for a in acquirers:
            assert a.got.wait(20) and a.error is None
        after = revision(client, prefix)
        swaps = len(acquirers)
        # The writes between the probes: the acquisitions' swaps, one Txn of deletions at most
        # (none when the queued acquisition's swap carried them), and nothing per release.
        assert after - before - 1 <= swaps + (0 if queued_behind else 1)
        assert freed.rode[-3:] == [True, True, True]
        for h in holders:
            assert h.lease is not None
            assert not lessor.is_held(Context.background(), "s", h.part)
    finally:
        let_go.set()
        done.set()
        for h in holders:
            h.join(20)
        lessor.close()
        link.close()
