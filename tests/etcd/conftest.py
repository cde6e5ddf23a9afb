"""Helpers for the etcd tests that run lessor clients in child processes.

The ``spawn`` fixture starts a child program (``lessor_child.py`` unless said) in a mode and
hands back a :class:`lessor.testing.Child`: its stdout lines arrive on a queue, so the parent
awaits them with a bound instead of sleeping; its stderr goes to a file, shown when something
fails. Every child is killed by its pid and reaped at teardown, whatever the test did.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from lessor.testing import LocalEtcd
from lessor.testing.child import Child, Children
from tests.support.etcd_admin import admin_client, etcd_with_auth
from tests.support.etcd_flavours import FLAVOURS, Flavour
from tests.support.etcd_flavours import flavour as flavour_named
from tests.support.programs import ROOT, python_module

CHILD = Path(__file__).with_name("lessor_child.py")


class Spawn(Protocol):
    def __call__(
        self, name: str, mode: str, config: dict[str, Any], *, program: Path = CHILD
    ) -> Child: ...


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(name, mode, config, program=CHILD)``: ``python -m <program> <mode> <config>``
    as a :class:`~lessor.testing.Child`; all are killed and reaped at teardown."""
    with Children() as children:

        def start(name: str, mode: str, config: dict[str, Any], *, program: Path = CHILD) -> Child:
            log = tmp_path / f"{name.replace(' ', '-')}.stderr"
            argv = python_module(program, mode, json.dumps(config))
            return children.start(name, argv, log=log, cwd=ROOT)

        yield start


_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own for each test that shares the session's etcd."""
    return f"/t{next(_prefixes)}/"


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    """``make(endpoints, **options)``: an ``EtcdLessor``, or an ``AsyncEtcdLessor`` driven
    through the sync interface (:mod:`tests.support.etcd_flavours`); a test that takes it runs
    once with each."""
    return flavour_named(request.param)


@pytest.fixture
def client(etcd_server: Any) -> Iterator[Any]:
    """A pyetcd client to the session's etcd, to look at what the lessor stored."""
    with admin_client(etcd_server.endpoint) as c:
        yield c


@pytest.fixture(params=["jwt", "simple"])
def auth_etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalEtcd]:
    """An etcd of its own with auth on (root, and 'app' confined to /allowed/), issuing JWT
    tokens signed with RS256 (which carry the auth revision they were issued at) or simple
    ones."""
    with etcd_with_auth(request.param, tmp_path) as server:
        yield server
