"""Shared fixtures: the backends the contract suite runs against, and a real etcd."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import pytest

from lessor import Lessor, MemoryLessor
from lessor.aio import AsyncLessor, AsyncMemoryLessor
from tests.support import needs, sigterm
from tests.support.sync_over_aio import SyncOverAio

sigterm.install()  # a SIGTERM tears the fixtures down, as Ctrl-C does

Opener = Callable[[Sequence[str]], AbstractContextManager[Lessor]]
"""Opens a lessor of one backend, given the test etcd's endpoints (empty when it needs none)."""


@dataclass(frozen=True)
class Backend:
    """How to get a lessor of one backend, and the timing facts its tests may rely on."""

    name: str
    open: Opener
    # A lease's deadline may fall this much earlier than "now + dur" (safety margins).
    deadline_slack: float
    # The shortest duration worth asking for: backends with a coarse lease clock (etcd: whole
    # seconds) need longer ones.
    unit: float
    # Seconds after a lease was granted by which its ranges are free again if its holder
    # never gives it back, given the duration asked for.
    expiry_bound: Callable[[float], float]
    # Whether open() needs the session's etcd (the etcd_server fixture).
    etcd: bool = False


def _memory(endpoints: Sequence[str]) -> AbstractContextManager[Lessor]:
    return contextlib.nullcontext(MemoryLessor())


def _etcd(endpoints: Sequence[str]) -> AbstractContextManager[Lessor]:
    from lessor.etcd import EtcdLessor  # noqa: PLC0415  (only sessions that need etcd pay)

    return EtcdLessor(endpoints)


def _aio_etcd(endpoints: Sequence[str]) -> AsyncLessor:
    from lessor.etcd import AsyncEtcdLessor  # noqa: PLC0415  (only sessions that need etcd pay)

    return AsyncEtcdLessor(endpoints)


def aio(make: Callable[[Sequence[str]], AsyncLessor]) -> Opener:
    """An asyncio backend, run through the sync contract by :class:`SyncOverAio`: ``make`` is
    called on its event loop with the endpoints."""
    return lambda endpoints: SyncOverAio(lambda: make(endpoints))


# EtcdLessor's defaults: an etcd lease of ceil(dur + margin 0.2) seconds; etcd's expiry checker
# then takes up to another 0.5 s to delete it.
BACKENDS = [
    Backend("memory", _memory, deadline_slack=0.0, unit=0.2, expiry_bound=lambda dur: dur),
    Backend(
        "etcd",
        _etcd,
        deadline_slack=0.0,
        unit=1.0,
        expiry_bound=lambda dur: math.ceil(dur + 0.2) + 0.5,
        etcd=True,
    ),
    Backend(
        "aio-etcd",
        aio(_aio_etcd),
        deadline_slack=0.0,
        unit=1.0,
        expiry_bound=lambda dur: math.ceil(dur + 0.2) + 0.5,
        etcd=True,
    ),
    Backend(
        "aio-memory",
        aio(lambda endpoints: AsyncMemoryLessor()),
        deadline_slack=0.0,
        unit=0.2,
        expiry_bound=lambda dur: dur,
    ),
]

_sections = itertools.count()


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    spec: Backend = request.param
    return spec


@pytest.fixture
def section() -> Callable[[], str]:
    """Fresh section ids, so tests sharing one backend server never see each other."""
    return lambda: f"test-{next(_sections)}"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[object]:
    """One etcd process for the whole session (tests use their own sections or prefixes)."""
    from lessor.testing import LocalEtcd  # noqa: PLC0415  (only sessions that need etcd pay)

    with LocalEtcd() as server:
        yield server


@pytest.fixture
def lessor_of(backend: Backend, request: pytest.FixtureRequest) -> Iterator[Lessor]:
    endpoints = request.getfixturevalue("etcd_server").endpoints if backend.etcd else []
    with backend.open(endpoints) as lessor:
        yield lessor


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("\nERROR: pytest collected no tests: that is a failure, not a pass.")


@pytest.fixture(autouse=True)
def _machine_needs(request: pytest.FixtureRequest) -> None:
    """A test marked ``needs_root(*commands)`` runs only as root with those commands; else
    it is skipped, or fails under CI (:mod:`tests.support.needs`)."""
    mark = request.node.get_closest_marker("needs_root")
    if mark is not None:
        reason = needs.why_not_root_with(*mark.args)
        if reason is not None:
            needs.missing(reason)
