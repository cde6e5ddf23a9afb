"""What a test needs of the machine that pip cannot install, said once.

Outside CI, a test whose needs are not met is skipped with one line saying what is missing
(``-ra`` shows it). Under CI (``CI=true``, which runs as root with every tool installed by
``.ci/run``), it fails instead: a skip there would hide a broken machine behind a green run.
As root on Debian, ``python -m nox`` installs what the root-only tests need first
(``noxfile.py``: ``install_root_tools``).

Mark a test ``@pytest.mark.needs_root("iptables")``: it needs root and each named command on
``PATH``. ``tests/conftest.py`` checks the mark before the test runs. Other needs (Docker,
Compose, kubectl) call :func:`missing` themselves.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import NoReturn

import pytest

__all__ = ["INSTALL", "IN_CI", "missing", "why_not_root_with"]

IN_CI = os.environ.get("CI", "").lower() in {"true", "1", "yes"}

INSTALL = {
    "iptables": "apt-get install iptables",
    "ip": "apt-get install iproute2",
    "docker": "bash .ci/install-docker",
    "docker-compose": "apt-get install docker-compose",
    "kubectl": "apt-get install kubernetes-client",
}
"""How to get each command on Debian, for the skip's one line."""


def why_not_root_with(*commands: str) -> str | None:
    """Why a test that needs root and ``commands`` cannot run here; None when it can."""
    if os.geteuid() != 0:
        also = f" and {', '.join(commands)}" if commands else ""
        return f"needs root{also}: runs as uid {os.geteuid()}"
    absent = [c for c in commands if shutil.which(c) is None]
    if absent:
        hints = "; ".join(f"Debian: {INSTALL[c]}" for c in absent if c in INSTALL)
        return f"needs {', '.join(absent)} on PATH" + (f" ({hints})" if hints else "")
    return None


def missing(reason: str) -> NoReturn:
    """Skip the running test for ``reason``; under CI, fail it."""
    if IN_CI:
        pytest.fail(f"CI is set, but this test {reason}", pytrace=False)
    pytest.skip(reason)


def docker_problem() -> str | None:
    """Why no Docker daemon can be used here (``.ci/install-docker`` sets one up as root);
    None when one answers."""
    if importlib.util.find_spec("testcontainers") is None:
        return "the testcontainers package is not installed"
    from lessor.testing import docker_unavailable  # noqa: PLC0415  (needs testcontainers)

    problem = docker_unavailable()
    return None if problem is None else f"Docker is unavailable: {problem}"
