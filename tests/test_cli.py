"""The command line, run as a user runs it (what needs no etcd; the demo itself runs in
tests/etcd/test_demo.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, module: str = "lessor") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--workers-per-dc", "0"], ["--workers-per-dc", "at least 1"]),
        (["--rows", "many"], ["--rows", "not an integer: 'many'"]),
        (["--seconds", "1"], ["--seconds", "at least 5"]),
        (["--lease-seconds", "nan"], ["--lease-seconds", "finite"]),
        (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
    ],
)
def test_bad_demo_arguments_are_named(args: list[str], named: list[str]) -> None:
    result = run("demo", *args)
    assert result.returncode == 2
    for text in named:
        assert text in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_endpoints_are_named_in_one_line() -> None:
    result = run("demo", "--endpoints", "no-port-here")
    assert result.returncode == 1
    assert result.stderr.startswith("lessor: error: --endpoints:")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["demo", "inspect", "repair"])
def test_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert "--endpoints" in result.stdout


def test_demo_help_says_what_it_proves() -> None:
    out = run("demo", "--help").stdout
    for flag in ("--rows", "--seconds", "--workers-per-dc", "--no-faults", "--endpoints"):
        assert flag in out
    assert "two" in out and "holders at once" in out


def test_worker_help_documents_its_command_line() -> None:
    result = run("--help", module="lessor.demo.worker")
    assert result.returncode == 0
    for flag in ("--store", "--dc", "--worker", "--seconds", "--lease-seconds", "--shards",
                 "--section", "--metrics-port", "--endpoints", "LESSOR_ETCD_"):  # fmt: skip
        assert flag in result.stdout


def test_worker_names_a_missing_store(tmp_path: Path) -> None:
    result = run("--store", f"{tmp_path}/none.db", "--dc", "dc-a", "--worker", "w1",
                 "--endpoints", "127.0.0.1:1", module="lessor.demo.worker")  # fmt: skip
    assert result.returncode == 2
    assert "no reminder store at" in result.stderr and "none.db" in result.stderr
