"""A throw-away etcd in a Docker container, for tests that fault it through Docker.

``EtcdContainer`` runs the same single etcd member as :class:`~lessor.testing.LocalEtcd` (the
same :func:`~lessor.testing.process.tuning_flags`: fast heartbeat and election, auto-compaction
on, no fsync unless asked, a quiet log), but in a container started through testcontainers (the
``lessor[testing]`` extra), and faults it the way Docker does: :meth:`~EtcdContainer.kill`
(``docker kill``), :meth:`~EtcdContainer.pause` and :meth:`~EtcdContainer.unpause` (the cgroup
freezer), :meth:`~EtcdContainer.stop` and :meth:`~EtcdContainer.start` (the container and its
data survive; only :meth:`~EtcdContainer.close` removes them).

Networking is the host's, on a loopback address and free ports: the daemon may have no
bridge (``.ci/install-docker`` starts it with ``--bridge=none``), and host networking needs no
port mapping, so the endpoints stay the same across a restart. So the daemon must run on this
machine (not behind a remote ``DOCKER_HOST``, nor in Docker Desktop's VM).

The image is ``$LESSOR_ETCD_IMAGE`` when set, used as is (pulled if absent; its entrypoint, or
failing that its command, or ``etcd`` on its ``PATH``, runs etcd). Otherwise it is the ``FROM
scratch`` image :func:`~lessor.testing.image.build_etcd_image` builds around the etcd found here
(see :mod:`lessor.testing.image`). Nothing is mounted from the host: etcd's data lives in the
container's own layer.

testcontainers' reaper (Ryuk) is an image to pull from Docker Hub, which may be unreachable:
when a container is started (never at import), Ryuk is turned off in testcontainers'
configuration for this process unless ``TESTCONTAINERS_RYUK_DISABLED`` or ``ryuk.disabled`` in
``~/.testcontainers.properties`` says otherwise. Leave with ``with`` or
:meth:`~EtcdContainer.close` so that the container goes; any left behind by a killed process
carry the label ``org.testcontainers.session-id``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient

from lessor.testing.image import build_etcd_image
from lessor.testing.process import free_ports, tuning_flags, wait_healthy

__all__ = ["EtcdContainer", "docker_unavailable"]


def docker_unavailable() -> str | None:
    """Why no Docker daemon answers here, or None when one does."""
    try:
        client = DockerClient(timeout=10)  # seconds per API call, not docker-py's 60
        try:
            client.client.ping()
        finally:
            client.client.close()
    except Exception as e:  # docker-py raises DockerException, requests' or OSError's errors
        return f"no Docker daemon answers ({type(e).__name__}: {e})"
    return None


def _ryuk_off_unless_asked() -> None:
    """Turn testcontainers' reaper off for this process unless its user configured it."""
    if (
        "TESTCONTAINERS_RYUK_DISABLED" not in os.environ
        and "ryuk.disabled" not in testcontainers_config.tc_properties
    ):
        testcontainers_config.ryuk_disabled = True


def _etcd_argv(client: DockerClient, image: str) -> list[str]:
    """What, in ``image``, comes before etcd's flags: nothing when its entrypoint is etcd."""
    try:
        config: dict[str, Any] = client.client.images.get(image).attrs["Config"] or {}
    except Exception:  # docker.errors.ImageNotFound: pull it, as docker run would
        client.client.images.pull(image)
        config = client.client.images.get(image).attrs["Config"] or {}
    entrypoint: list[str] = config.get("Entrypoint") or []
    cmd: list[str] = config.get("Cmd") or []
    if entrypoint and Path(entrypoint[-1]).name == "etcd":
        return []
    if not entrypoint and cmd and Path(cmd[0]).name == "etcd":
        return [cmd[0]]  # the official images: CMD ["/usr/local/bin/etcd"]
    return ["etcd"]


class EtcdContainer:
    """One etcd member in a Docker container on loopback; a context manager. Restartable with
    the same data; see the module documentation."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        image: str | None = None,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        fsync: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        data_dir: str = "/var/lib/etcd",
    ) -> None:
        self.host = host
        # None: $LESSOR_ETCD_IMAGE, else build_etcd_image()'s tag, resolved when first started.
        self.image = image
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.fsync = fsync
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.data_dir = data_dir
        self.client_port, self.peer_port = free_ports(2, host)
        self.name = f"lessor-etcd-{self.client_port}-{uuid.uuid4().hex[:8]}"
        self._container: DockerContainer | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    @property
    def container_id(self) -> str | None:
        return self._container.get_container_id() if self._container is not None else None

    def command(self) -> list[str]:
        """etcd's flags, as LocalEtcd's (without TLS)."""
        client = f"http://{self.endpoint}"
        peer = f"http://{self.host}:{self.peer_port}"
        args = [
            "--name", "local",
            "--data-dir", self.data_dir,
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"local={peer}",
            "--initial-cluster-state", "new",
            *tuning_flags(heartbeat_ms=self.heartbeat_ms, election_ms=self.election_ms,
                          fsync=self.fsync),
        ]  # fmt: skip
        return args + self.extra_args

    def _wrapped(self) -> Any:  # docker.models.containers.Container
        if self._container is None:
            raise RuntimeError("EtcdContainer has not been started")
        return self._container.get_wrapped_container()

    @property
    def status(self) -> str:
        """Docker's word for the container: created, running, paused, exited, ...; or
        "not started"."""
        if self._container is None:
            return "not started"
        container = self._wrapped()
        container.reload()
        return str(container.status)

    def start(self) -> EtcdContainer:
        """Create and start the container, or start it again (keeping the data); wait until
        etcd serves."""
        if self._container is None:
            if self.image is None:
                self.image = os.environ.get("LESSOR_ETCD_IMAGE") or build_etcd_image().tag
            _ryuk_off_unless_asked()
            container = DockerContainer(self.image).with_name(self.name)
            argv = _etcd_argv(container.get_docker_client(), self.image)
            # network="host" rather than network_mode: testcontainers adds a network of its
            # own unless one is given, and Docker refuses both at once.
            container.with_command([*argv, *self.command()]).with_kwargs(network="host")
            self._container = container
            container.start()
        else:
            status = self.status
            if status in ("running", "paused"):
                raise RuntimeError(f"etcd container {self.name} is already {status}")
            self._wrapped().start()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        url = f"http://{self.endpoint}/health"

        def exited() -> str | None:
            if self.status not in ("exited", "dead"):
                return None
            code = self._wrapped().attrs["State"].get("ExitCode")
            return (f"etcd container {self.name} exited with code {code} while starting:\n"
                    f"{self.log_tail()}")  # fmt: skip

        if wait_healthy(url, time.monotonic() + self.startup_timeout, exited):
            return
        self.kill()
        raise RuntimeError(
            f"etcd at {self.endpoint} (container {self.name}) not healthy after "
            f"{self.startup_timeout}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        if self._container is None:
            return ""
        try:
            tail: bytes = self._wrapped().logs(tail=lines)
        except Exception:  # a container already gone has no logs to show
            return ""
        return tail.decode(errors="replace").rstrip("\n")

    def exec(self, *argv: str) -> tuple[int, str]:
        """``docker exec``: run a program of the image (``/etcdctl``, ``/etcd --version``) in
        the running container; its exit code and its output."""
        code, output = self._wrapped().exec_run(list(argv))
        return int(code), bytes(output).decode(errors="replace")

    def _thaw(self) -> None:
        """Unpause a paused container: a frozen etcd cannot act on signals."""
        if self.status == "paused":
            self._wrapped().unpause()

    def stop(self, timeout: float = 10.0) -> None:
        """``docker stop``: SIGTERM, then SIGKILL after ``timeout``; keep the container."""
        if self._container is None or self.status not in ("running", "paused"):
            return
        self._thaw()
        self._wrapped().stop(timeout=max(1, round(timeout)))

    def kill(self) -> None:
        """``docker kill``: SIGKILL etcd, as a crash would; keep the container."""
        if self._container is None or self.status not in ("running", "paused"):
            return
        self._thaw()
        self._wrapped().kill()
        self._wrapped().wait()

    def pause(self) -> None:
        """``docker pause``: freeze etcd; its connections stay open but nothing answers."""
        self._wrapped().pause()

    def unpause(self) -> None:
        """``docker unpause``."""
        self._wrapped().unpause()

    resume = unpause  # LocalEtcd's name

    def close(self) -> None:
        """Remove the container and its data (and anonymous volumes)."""
        if self._container is None:
            return
        with contextlib.suppress(Exception):  # not created, or gone: nothing to thaw
            self._thaw()
        container, self._container = self._container, None
        container.stop(force=True, delete_volume=True)  # testcontainers' stop: docker rm -fv

    def __enter__(self) -> EtcdContainer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
