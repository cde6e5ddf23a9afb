"""Where the tests' child programs are, and how to run one.

A child program that imports the tests' own helpers (:mod:`tests.support.record`) is run as a
module of the ``tests`` package from the repository's root (``python -m tests.etcd.lessor_child``,
``cwd=ROOT``), so that ``tests`` is importable without touching its ``sys.path``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lessor.testing.child import Child

ROOT = Path(__file__).resolve().parents[2]


def module_of(program: Path) -> str:
    """The dotted module name of ``program``, a file under :data:`ROOT`."""
    return ".".join(program.resolve().relative_to(ROOT).with_suffix("").parts)


def python_module(program: Path, *args: str) -> list[str]:
    """The argv that runs ``program`` as a module with ``args`` (from :data:`ROOT`)."""
    return [sys.executable, "-m", module_of(program), *args]


def ready_set_go(children: Sequence[Child], timeout: float = 30.0) -> float:
    """Await each child's ``ready`` line, then send each ``go``, so that they start together;
    the :func:`time.monotonic` time just before the first ``go``."""
    for child in children:
        line = child.expect(timeout)
        assert line == "ready", f"{child.name} said {line!r}, not 'ready'"
    began = time.monotonic()
    for child in children:
        child.send("go")
    return began
