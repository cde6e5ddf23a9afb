"""A throw-away etcd member on loopback, for tests and the demo.

``LocalEtcd`` starts one etcd member (an :class:`~lessor.testing.process.EtcdProcess`) on free
loopback ports in a temporary directory, waits until it serves, and stops it (and deletes its
data) on exit. It runs with the project's :func:`~lessor.testing.process.tuning_flags`: a 50 ms
heartbeat and 500 ms election timeout (so etcd's minimum lease TTL is 1 s), no fsync unless
asked, and revision auto-compaction on. Optionally its client port speaks TLS
(:class:`ServerTLS`). The binary is :func:`~lessor.testing.binary.find_etcd_binary`'s unless
given.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lessor.testing.binary import find_etcd_binary
from lessor.testing.process import EtcdProcess, free_ports, tuning_flags

__all__ = ["LocalEtcd", "ServerTLS"]


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
        self.process = EtcdProcess("local")

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def data_dir(self) -> Path:
        return self.process.data_dir

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
        self.process.prepare()
        self.process.spawn(self.command())
        url = f"{'https' if self.tls else 'http'}://{self.endpoint}/health"
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=self.tls.ca_file)
            if self.tls.probe_cert_file and self.tls.probe_key_file:
                context.load_cert_chain(self.tls.probe_cert_file, self.tls.probe_key_file)
        if not self.process.wait_ready(url, time.monotonic() + self.startup_timeout, context):
            self.kill()
            raise RuntimeError(
                f"etcd at {self.endpoint} not healthy after {self.startup_timeout}s:\n"
                f"{self.log_tail()}"
            )
        return self

    def log_tail(self, lines: int = 20) -> str:
        return self.process.log_tail(lines)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop etcd gracefully (SIGTERM, then SIGKILL after ``timeout``); keep its data."""
        self.process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL etcd, as a crash would; keep its data."""
        self.process.kill()

    def pause(self) -> None:
        """SIGSTOP etcd: it holds its connections but answers nothing."""
        self.process.pause()

    def resume(self) -> None:
        self.process.resume()

    def close(self) -> None:
        """Stop etcd and delete its data."""
        self.process.close()

    def __enter__(self) -> LocalEtcd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
