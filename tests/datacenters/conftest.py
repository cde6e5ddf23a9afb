"""The ``datacenters`` fixture: three datacenters in network namespaces (see harness.py).

It needs root and ``ip netns``. Without them the tests are skipped, for one reason shown by
``-ra``; under CI (``CI=true``) they fail instead (:mod:`tests.support.needs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import needs

from .harness import Datacenters, Unsupported, unsupported_reason

# As LocalEtcd and LocalEtcdCluster (and issue 11's targets): a leader is missed after 500 ms.
HEARTBEAT_MS = 50
ELECTION_MS = 500

_summaries: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The summary lines, shown without ``-s`` too."""
    if _summaries:
        terminalreporter.section("datacenters")
        for line in _summaries:
            terminalreporter.write_line(line)


@pytest.fixture
def summary() -> Callable[[str], None]:
    """``summary(line)``: print it now and again in the terminal summary."""

    def add(line: str) -> None:
        print(line)
        _summaries.append(line)

    return add


@pytest.fixture
def datacenters(tmp_path: Path) -> Iterator[Datacenters]:
    """Three datacenters with one etcd member each, 5 ms one way between any two, etcd tuned
    as the project's local clusters are (:data:`HEARTBEAT_MS`, :data:`ELECTION_MS`); deleted,
    with every process, namespace and interface, whatever the test does."""
    reason = unsupported_reason()
    if reason is not None:
        needs.missing(f"needs root and `ip netns`: {reason}")
    dcs = Datacenters(tmp_path, heartbeat_ms=HEARTBEAT_MS, election_ms=ELECTION_MS)
    try:
        dcs.start()  # closes what it made if it fails
    except Unsupported as e:
        needs.missing(f"needs root and `ip netns`: {e}")
    try:
        yield dcs
    finally:
        dcs.close()
