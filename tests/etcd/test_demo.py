"""``python -m lessor demo``, run as a user runs it: scaled down, with its faults, against a
local etcd cluster it starts itself; and its one-line errors for an etcd it cannot use."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lessor.testing import LocalEtcd


def demo(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> (
    subprocess.CompletedProcess[str]
):  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "lessor", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (the demo's temporary dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def assert_cleaned_up(tmp: Path) -> None:
    assert processes_mentioning(str(tmp)) == []
    assert [p.name for p in tmp.iterdir()] == []


def number(line_start: str, out: str) -> int:
    match = re.search(rf"^{re.escape(line_start)}\s+([\d,]+)", out, re.MULTILINE)
    assert match, f"no line {line_start!r} in:\n{out}"
    return int(match.group(1).replace(",", ""))


@pytest.mark.slow
def test_demo_sweeps_through_a_datacenter_loss_with_no_double_processing(tmp_path: Path) -> None:
    result = demo("--rows", "5000", "--seconds", "15", env=dict(os.environ, TMPDIR=str(tmp_path)))
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    assert number("processed by two holders at once", out) == 0
    assert number("leases holding a common key at once", out) == 0
    assert number("fencing-token inversions", out) == 0
    assert number("reminders never processed", out) == 0
    assert re.search(r"^reminders processed\s+.*\s5,000$", out, re.MULTILINE), out
    # Both faults happened, and both recoveries were measured.
    assert re.search(r"FAULT: dc-\w lost: its 2 workers SIGKILLed", out), out
    assert re.search(r"FAULT: etcd leader m\d .* killed", out), out
    # Issue 11's targets, with the demo's 3 s leases: the lost datacenter's reminders are all
    # processed elsewhere within 8 s of the kill, and the leader's loss costs at most 1.5 s.
    lost, lost_target = recovery(r"dc-\w's 2 workers SIGKILLed", out)
    leader, leader_target = recovery(r"etcd leader m\d killed", out)
    print(f"\ndemo: the lost datacenter's reminders done {lost:.2f}s after the kill (target "
          f"{lost_target:g}s); the first lease after the leader's kill {leader:.2f}s after it "
          f"(target {leader_target:g}s)")  # fmt: skip
    assert (lost_target, leader_target) == (8.0, 1.5), out
    assert lost <= 8.0, f"the lost datacenter's reminders took {lost:.2f}s, target 8 s:\n{out}"
    assert leader <= 1.5, f"the leader's loss took {leader:.2f}s, target 1.5 s:\n{out}"
    assert "MISSED" not in out
    assert "OK: every reminder processed" in out
    assert_cleaned_up(tmp_path)


def recovery(fault: str, out: str) -> tuple[float, float]:
    """The recovery time the end table shows after ``fault`` (a pattern), and its target."""
    match = re.search(rf"{fault}\s+(\d+\.\d\d) s\s+(\d+(?:\.\d+)?) s ", out)
    assert match, f"no recovery figure for {fault!r} in:\n{out}"
    return float(match.group(1)), float(match.group(2))


@pytest.mark.slow
def test_ctrl_c_stops_every_process_and_removes_every_file(tmp_path: Path) -> None:
    process = subprocess.Popen(
        # A test run started in the background by a shell without job control ignores SIGINT,
        # and a child inherits that (Python then installs no handler): the demo would never
        # see the Ctrl-C. The demo runs as `python -m lessor` does, with Python's own handler.
        [sys.executable, "-c", SIGINT_RESTORED, "demo", "--rows", "5000", "--seconds", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        while not lines.get(timeout=60).startswith("t="):  # the sweep is under way
            pass
        # Every worker and etcd member runs (a loaded machine may still be starting the last
        # worker at the first display line; /proc tells no one when a process starts).
        started = time.monotonic()
        while len(processes_mentioning(str(tmp_path))) < 6 + 3:
            assert time.monotonic() - started < 60, processes_mentioning(str(tmp_path))
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    assert "interrupted" in process.stderr.read()
    assert_cleaned_up(tmp_path)


SIGINT_RESTORED = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'lessor'; runpy.run_module('lessor', run_name='__main__')"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_unreachable_endpoints_are_one_line() -> None:
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = demo("--endpoints", endpoint, timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"lessor: error: etcd at {endpoint} did not answer within")
    assert len(result.stderr.strip().splitlines()) == 1


def test_wrong_credentials_are_one_line() -> None:
    import pyetcd  # noqa: PLC0415  (this test's own admin client)

    with LocalEtcd() as server:
        host, port = server.endpoint.rsplit(":", 1)
        admin = pyetcd.client(host=host, port=int(port), timeout=5)
        rpc, auth = pyetcd.etcdrpc, admin.authstub
        auth.UserAdd(rpc.AuthUserAddRequest(name="root", password="rootpw"))
        auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"))
        auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
        auth.AuthEnable(rpc.AuthEnableRequest())
        admin.close()
        env = dict(os.environ, LESSOR_ETCD_USER="root", LESSOR_ETCD_PASSWORD="wrong")
        result = demo("--endpoints", server.endpoint, env=env, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith(f"lessor: error: etcd at {server.endpoint} denied access")
    assert "'root'" in result.stderr and "LESSOR_ETCD_PASSWORD" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
