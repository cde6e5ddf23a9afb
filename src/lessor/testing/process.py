"""One etcd process of a test: how it is tuned, started, waited for, stopped and cleaned up.

:class:`EtcdProcess` is the one place that runs an etcd binary: :class:`~lessor.testing.LocalEtcd`
runs one, and each member of a :class:`~lessor.testing.LocalEtcdCluster` is one. It owns a
directory holding etcd's data (``data/``) and its log (``etcd.log``): a temporary one, or the
one it is given; :meth:`~EtcdProcess.close` kills etcd and deletes that directory.
:meth:`~EtcdProcess.stop`, :meth:`~EtcdProcess.kill`, :meth:`~EtcdProcess.pause` and
:meth:`~EtcdProcess.resume` signal the process it started (by its pid, never by name), and
:meth:`~EtcdProcess.spawn` starts it again on the same data.

Every test etcd runs with :func:`tuning_flags`: tuned for speed, not durability (a fast
heartbeat and election, no fsync unless asked), with revision auto-compaction on, which
production etcd must also have (it is off by default). :func:`wait_healthy` polls etcd's
``/health`` until it serves; :func:`free_ports` finds ports for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

__all__ = ["EtcdProcess", "free_port", "free_ports", "tuning_flags", "wait_healthy"]

# Run as argv[1]'s uid, with no supplementary groups, then exec the rest of argv. Popen's own
# user=/group= make it fork() rather than vfork(), and fork() runs gRPC's atfork handlers: in a
# process that uses gRPC (every lessor test) that deadlocked the parent in fork() or crashed
# the child. A tiny interpreter that switches user itself keeps Popen on vfork().
_AS_USER = (
    "import os, sys; uid = int(sys.argv[1]); os.setgroups([]); os.setgid(uid); "
    "os.setuid(uid); os.execv(sys.argv[2], sys.argv[2:])"
)


def tuning_flags(
    *, heartbeat_ms: int, election_ms: int, fsync: bool, quota_bytes: int = 256 * 1024 * 1024
) -> list[str]:
    """The flags every test etcd of this project runs with: fast heartbeat and election,
    revision auto-compaction on (production etcd needs it too: it is off by default), a
    bounded database, a quiet log, and no fsync unless asked."""
    flags = [
        "--heartbeat-interval", str(heartbeat_ms),
        "--election-timeout", str(election_ms),
        "--auto-compaction-mode", "revision",
        "--auto-compaction-retention", "1000",
        "--quota-backend-bytes", str(quota_bytes),
        "--log-level", "error",
    ]  # fmt: skip
    if not fsync:
        flags.append("--unsafe-no-fsync")
    return flags


def wait_healthy(
    url: str,
    deadline: float,
    exited: Callable[[], str | None],
    context: ssl.SSLContext | None = None,
) -> bool:
    """Poll etcd's ``/health`` at ``url`` until it says healthy (True) or ``deadline`` passes
    (False); raise RuntimeError with what ``exited()`` returns once it returns something."""
    while time.monotonic() < deadline:
        why = exited()
        if why is not None:
            raise RuntimeError(why)
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(url, timeout=1, context=context) as response,
        ):
            if json.load(response).get("health") == "true":
                return True
        time.sleep(0.05)  # polling a process that has no readiness signal of its own
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (see :func:`free_ports` for more than one)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports: all are held open until the last is found, since one
    call after another to :func:`free_port` may be handed the same port again."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind((host, 0))
            ports.append(int(s.getsockname()[1]))
        return ports


class EtcdProcess:
    """One etcd process, its data and its log; see the module documentation.

    ``directory``: where ``data/`` and ``etcd.log`` go (created, mode 0700); by default a
    temporary directory made at the first :meth:`spawn`. ``uid``: run etcd as that user (the
    caller must be root), owning the directory; None runs it as the caller.
    """

    def __init__(self, name: str, directory: Path | None = None, *, uid: int | None = None) -> None:
        self.name = name
        self.uid = uid
        self.paused = False
        self._dir = directory
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError(f"etcd {self.name} has not been started")
        return self._dir

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "etcd.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has ended (negative: the signal), else None."""
        return self._process.poll() if self._process is not None else None

    @property
    def running(self) -> bool:
        """The process exists (it may be paused)."""
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def prepare(self) -> Path:
        """Make the directory (a temporary one unless one was given) if there is none yet;
        return it. :meth:`spawn` does it; call it first to build a command naming
        :attr:`data_dir`."""
        if self._dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="lessor-etcd-")
            self._dir = Path(self._temporary.name)
        self._dir.mkdir(mode=0o700, exist_ok=True)
        return self._dir

    def spawn(self, command: list[str]) -> None:
        """Start etcd with ``command`` (the binary and its flags), its output to the log;
        return at once (:meth:`wait_ready` waits until it serves). Its data stays from a
        previous run."""
        if self.running:
            raise RuntimeError(f"etcd {self.name} is already running (pid {self.pid})")
        directory = self.prepare()
        if self.uid is not None:
            os.chown(directory, self.uid, self.uid)
            for path in directory.rglob("*"):
                os.lchown(path, self.uid, self.uid)
            command = [sys.executable, "-I", "-S", "-c", _AS_USER, str(self.uid), *command]
        # etcd reads ETCD_* variables too, and refuses to start when one shadows a flag.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child owns it)
        try:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=log, env=env, start_new_session=True
            )
        finally:
            log.close()
        self.paused = False

    def wait_ready(
        self, health_url: str, deadline: float, context: ssl.SSLContext | None = None
    ) -> bool:
        """Wait until etcd's ``health_url`` says healthy (True) or ``deadline`` passes (False);
        :class:`RuntimeError` with the log's tail if etcd exits first."""

        def exited() -> str | None:
            if self.running:
                return None
            hint = ""
            if self.uid is not None:
                hint = (
                    f" (it runs as uid {self.uid}: the binary and its directories must be "
                    "executable by other users, else pass isolation=False)"
                )
            return (f"etcd {self.name} exited with code {self.returncode} while starting"
                    f"{hint}:\n{self.log_tail()}")  # fmt: skip

        return wait_healthy(health_url, deadline, exited, context)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to etcd if it runs."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: etcd keeps its connections (the kernel still accepts and buffers) but
        answers nothing. Returns once the kernel has stopped every thread of it (a signal is
        delivered asynchronously: on a loaded machine etcd could otherwise answer a call made
        just after this returned)."""
        self.signal(signal.SIGSTOP)
        self.paused = self.running
        if self.paused:
            self._wait_state(stopped=True)

    def resume(self) -> None:
        """SIGCONT; returns once etcd runs again."""
        self.signal(signal.SIGCONT)
        if self.paused:
            self._wait_state(stopped=False)
        self.paused = False

    def _wait_state(self, *, stopped: bool, timeout: float = 10.0) -> None:
        """Wait until every thread of etcd is stopped (or none is). The kernel tells no one:
        its task states in /proc are the only place to look."""
        process = self._process
        if process is None or not Path(f"/proc/{process.pid}").exists():
            return  # not Linux's /proc: the signal alone
        deadline = time.monotonic() + timeout
        while process.poll() is None and _all_stopped(process.pid) != stopped:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"etcd {self.name} (pid {process.pid}) did not "
                    f"{'stop on SIGSTOP' if stopped else 'continue on SIGCONT'} in {timeout}s"
                )
            time.sleep(0.001)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop etcd gracefully (SIGTERM, then SIGKILL after ``timeout``); keep its data."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.paused = False

    def kill(self) -> None:
        """SIGKILL etcd, as a crash would; keep its data."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.paused = False

    def close(self, *, graceful: bool = True) -> None:
        """Stop etcd (SIGTERM, or SIGKILL unless ``graceful``) and delete its directory."""
        if graceful:
            self.stop()
        else:
            self.kill()
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None
            self._dir = None
        elif self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "down"
        if self.paused:
            state += ", paused"
        return f"<{type(self).__name__} {self.name} pid={self.pid} {state}>"


def _all_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is in the stopped state ('T' in /proc/.../stat)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        states = []
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False  # gone, or a thread gone meanwhile: look again
    return bool(states) and all(state in ("T", "t") for state in states)
