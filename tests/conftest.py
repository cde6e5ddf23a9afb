"""Shared fixtures: the backends the contract suite runs against."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from lessor import Lessor, MemoryLessor


@dataclass(frozen=True)
class Backend:
    """How to get a lessor of one backend, and the timing facts its tests may rely on."""

    name: str
    make: Callable[[], Lessor]
    # A lease's deadline may fall this much earlier than "now + dur" (safety margins).
    deadline_slack: float
    # The shortest duration worth asking for: backends with a coarse lease clock (etcd: whole
    # seconds) need longer ones.
    unit: float
    # Seconds after a lease was granted by which its ranges are free again if its holder
    # never gives it back, given the duration asked for.
    expiry_bound: Callable[[float], float]


MEMORY = Backend(
    name="memory",
    make=MemoryLessor,
    deadline_slack=0.0,
    unit=0.2,
    expiry_bound=lambda dur: dur,
)

BACKENDS: list[Backend] = [MEMORY]

_sections = itertools.count()


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    spec: Backend = request.param
    return spec


@pytest.fixture
def section() -> Callable[[], str]:
    """Fresh section ids, so tests sharing one backend server never see each other."""
    return lambda: f"test-{next(_sections)}"


@pytest.fixture
def lessor_of(backend: Backend) -> Iterator[Lessor]:
    yield backend.make()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("\nERROR: pytest collected no tests: that is a failure, not a pass.")
