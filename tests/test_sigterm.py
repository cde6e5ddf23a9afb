"""A test run ended by SIGTERM (a CI timeout, ``kill``) still stops what its fixtures started
(``tests/support/sigterm.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOUND = 60.0

SESSION = textwrap.dedent(
    """
    import subprocess, sys, threading
    import pytest

    @pytest.fixture(scope="session")
    def child():
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        yield p
        p.kill()
        p.wait()

    def test_runs_until_terminated(child, tmp_path_factory):
        with open({pid_file!r}, "w") as f:
            f.write(str(child.pid))
        threading.Event().wait(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_sigterm_tears_the_fixtures_down(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    (tmp_path / "test_session.py").write_text(SESSION.format(pid_file=str(pid_file)))
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "tests.support.sigterm", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    child = 0
    try:
        give_up = time.monotonic() + BOUND
        while not (pid_file.exists() and pid_file.read_text()):
            assert run.poll() is None, run.communicate()[0]
            assert time.monotonic() < give_up, "the inner test never started"
            time.sleep(0.05)  # a file written by another process: nothing to wait on but it
        child = int(pid_file.read_text())
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=BOUND)
        assert "SIGTERM" in out, out
        assert not _alive(child), f"the fixture's child {child} outlived the run:\n{out}"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
