"""lessor.observe: events reach observers, and a failing observer never breaks a lease."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator

import pytest

from lessor import Context, MemoryLessor, Partition, SortedPartitions, observe
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


def test_each_observer_method_is_reached_through_its_typed_function() -> None:
    """One function per event, of the same name and arguments: every Observer method has one,
    and calling it reaches that method of every installed observer with what it was given."""
    events = sorted(
        name for name, member in vars(Observer).items() if callable(member) and name[0] != "_"
    )
    assert events == [
        "acquire_failed",
        "acquired",
        "attempt",
        "conflict",
        "freed",
        "queued",
        "release_failed",
        "released",
    ]
    error = RuntimeError("gone")
    asked, granted = Partition(0, 8), SortedPartitions([Partition(0, 4)])
    arguments: dict[str, tuple[object, ...]] = {
        "acquired": ("b", "s", asked, granted, 0.5),
        "acquire_failed": ("b", "s", error, 0.25),
        "released": ("b", "s", 1.5),
        "release_failed": ("b", "s", error),
        "conflict": ("b", "s"),
        "queued": ("b", "s", 0.125, False),
        "freed": ("b", "s", 0.003, True),
    }
    keywords: dict[str, dict[str, object]] = {
        "attempt": {"members": 3, "outcome": "lost", "seconds": 0.002, "pause": 0.001},
    }
    assert sorted([*arguments, *keywords]) == events

    class Spy(Observer):
        def __init__(self) -> None:
            self.calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

    def spying(name: str) -> Callable[..., None]:
        def method(self: Spy, *args: object, **kwargs: object) -> None:
            self.calls.append((name, args, kwargs))

        return method

    for name in events:
        setattr(Spy, name, spying(name))
    spy = Spy()
    add_observer(spy)
    try:
        for name in events:
            function = getattr(observe, name)
            assert inspect.signature(function) == _without_self(getattr(Observer, name))
            args, kwargs = arguments.get(name, ("b", "s")), keywords.get(name, {})
            function(*args, **kwargs)
            assert spy.calls[-1] == (name, args, kwargs)
    finally:
        remove_observer(spy)
    assert len(spy.calls) == len(events)


def _without_self(method: Callable[..., None]) -> inspect.Signature:
    signature = inspect.signature(method)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def test_a_typed_event_with_no_observer_does_nothing_and_a_raising_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    observe.conflict("b", "s")  # nobody to tell

    class Broken(Observer):
        def conflict(self, backend: str, section_id: str) -> None:
            raise RuntimeError("observer bug")

    broken, after = Broken(), Recorder()
    add_observer(broken)
    add_observer(after)
    try:
        with caplog.at_level(logging.ERROR, logger="lessor"):
            observe.conflict("b", "s")
            observe.released("b", "s", 0.0)
    finally:
        remove_observer(broken)
        remove_observer(after)
    assert "failed on conflict" in caplog.text and "observer bug" in caplog.text
    assert after.events == [("released", "b", "s")]  # the next observer was still told
