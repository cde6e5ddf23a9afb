"""lessor.observe: events reach observers, and a failing observer never breaks a lease."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from lessor import Context, MemoryLessor, Partition, SortedPartitions
from lessor.errors import DeadlineExceeded
from lessor.observe import Observer, add_observer, observers, remove_observer


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def acquired(
        self,
        backend: str,
        section_id: str,
        asked: Partition,
        granted: SortedPartitions,
        seconds: float,
    ) -> None:
        assert seconds >= 0
        self.events.append(("acquired", backend, section_id, str(asked), granted.to_strings()))

    def acquire_failed(
        self, backend: str, section_id: str, error: BaseException, seconds: float
    ) -> None:
        self.events.append(("acquire_failed", backend, section_id, type(error).__name__))

    def released(self, backend: str, section_id: str, held_seconds: float) -> None:
        assert held_seconds >= 0
        self.events.append(("released", backend, section_id))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    add_observer(r)
    try:
        yield r
    finally:
        remove_observer(r)
    assert r not in observers()


def test_events_of_a_lease_in_order(recorder: Recorder) -> None:
    lessor = MemoryLessor()
    with lessor.lease("s", Partition(0, 16), 5):
        with lessor.lease("s", Partition(8, 32), 5):
            pass
    assert recorder.events == [
        ("acquired", "memory", "s", "0_10", ["0_10"]),
        ("acquired", "memory", "s", "8_20", ["10_20"]),
        ("released", "memory", "s"),
        ("released", "memory", "s"),
    ]


def test_a_failed_acquisition_is_reported(recorder: Recorder) -> None:
    class Refusing(MemoryLessor):
        def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float):  # type: ignore[no-untyped-def]
            raise DeadlineExceeded("no")

    with pytest.raises(DeadlineExceeded):
        with Refusing().lease("s", Partition(0, 1), 5):
            pass
    assert recorder.events == [("acquire_failed", "memory", "s", "DeadlineExceeded")]


def test_a_raising_observer_is_logged_and_the_lease_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Observer):
        def acquired(self, *args: object) -> None:  # type: ignore[override]
            raise RuntimeError("observer bug")

    broken = Broken()
    add_observer(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="lessor"):
            with MemoryLessor().lease("s", Partition(0, 4), 5) as lease:
                assert lease.partitions.to_strings() == ["0_4"]
    finally:
        remove_observer(broken)
    assert "observer bug" in caplog.text


def test_adding_twice_installs_once_and_only_observers_are_accepted() -> None:
    r = Recorder()
    add_observer(r)
    add_observer(r)
    try:
        assert observers().count(r) == 1
    finally:
        remove_observer(r)
    with pytest.raises(TypeError, match="Observer"):
        add_observer(object())  # type: ignore[arg-type]
