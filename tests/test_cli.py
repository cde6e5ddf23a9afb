"""The command line, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lessor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_runs_and_reports_no_overlap() -> None:
    result = run("demo", "--seconds", "0.5", "--workers", "4")
    assert result.returncode == 0, result.stderr
    assert "overlaps 0" in result.stdout
    assert "worker-3" in result.stdout


def test_bad_arguments_are_named() -> None:
    result = run("demo", "--workers", "0")
    assert result.returncode == 2
    assert "--workers" in result.stderr and "at least 1" in result.stderr
    result = run("demo", "--backend", "nosuch", "--seconds", "0.1")
    assert result.returncode != 0
    assert "'nosuch'" in result.stderr


def test_help() -> None:
    result = run("demo", "--help")
    assert result.returncode == 0
    assert "--backend" in result.stdout
