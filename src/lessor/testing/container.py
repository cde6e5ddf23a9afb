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
failing that its command, or ``etcd`` on its ``PATH``, runs etcd). Otherwise it is the ``FROM
scratch`` image of ``deploy/etcd-image``, built once per process by :func:`build_etcd_image`
around the etcd that :func:`~lessor.etcd.local.find_etcd_binary` finds for local etcd processes
too (``$LESSOR_ETCD_BINARY``, else one of 3.5.13 or newer from ``PATH`` or from
``.ci/install-etcd``, else an older one). A dynamically linked etcd goes in with the shared
libraries ``ldd`` names and the dynamic loader; etcdctl beside it goes in too. The image is
tagged with its etcd's version (``lessor-etcd:3.5.16``), which is what ``EtcdContainer`` runs,
so an image built from another etcd is never taken for it; the same image is also tagged
``lessor-etcd:local``, the name ``deploy/compose.yaml`` runs. An etcd older than 3.5.13 still
makes an image, with a :class:`RuntimeWarning`: it can revoke leases early after a leader
change (etcd issue #15247). Nothing is mounted from the host: etcd's data lives in the
container's own layer.

testcontainers' reaper (Ryuk) is off unless ``TESTCONTAINERS_RYUK_DISABLED`` says otherwise:
it is an image to pull from Docker Hub, which may be unreachable. Leave with ``with`` or
:meth:`~EtcdContainer.close` so that the container goes; any left behind by a killed process
carry the label ``org.testcontainers.session-id``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from lessor.testing.local import (
    SAFE_LEASE_VERSION,
    etcd_version,
    find_etcd_binary,
    free_ports,
    tuning_flags,
    wait_healthy,
)

# Before testcontainers is imported: releases before 4.9 read it at import time.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient

__all__ = [
    "IMAGE_DIR",
    "IMAGE_REPOSITORY",
    "LOCAL_IMAGE",
    "VERSION_LABEL",
    "EtcdContainer",
    "EtcdImage",
    "build_etcd_image",
    "docker_unavailable",
    "etcd_image",
    "find_image_etcd_binary",
    "find_static_etcd_binary",
    "shared_libraries",
    "write_build_context",
]

IMAGE_REPOSITORY = "lessor-etcd"
# The name deploy/compose.yaml runs: moved to every image this module builds.
LOCAL_IMAGE = f"{IMAGE_REPOSITORY}:local"
VERSION_LABEL = "org.lessor.etcd.version"  # the image's etcd version, e.g. "3.5.16"
# The image's Dockerfile, shipped in the package (deploy/etcd-image/Dockerfile links to it).
IMAGE_DIR = Path(__file__).resolve().with_name("etcd-image")


@dataclass(frozen=True, slots=True)
class EtcdImage:
    """An image :func:`build_etcd_image` built: its tag (``lessor-etcd:<version>``), its etcd's
    version and host path, and the files in it (paths in the image)."""

    tag: str
    version: tuple[int, int, int]
    binary: str
    files: tuple[str, ...]


_built: dict[str, EtcdImage] = {}  # etcd binary -> the image built around it, in this process
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


def find_image_etcd_binary() -> str:
    """The etcd to put in the image: :func:`~lessor.etcd.local.find_etcd_binary`'s, which
    prefers one of 3.5.13 or newer. :class:`FileNotFoundError` when there is none."""
    return find_etcd_binary()


# The former name (from when the image took a static etcd only).
find_static_etcd_binary = find_image_etcd_binary


def _interpreter(path: Path) -> str | None:
    """The program interpreter (dynamic loader) the ELF executable ``path`` names; None when it
    names none (statically linked). :class:`ValueError` when ``path`` is no ELF file."""
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF":
            raise ValueError(f"{path} is not an ELF executable")
        endian = "<" if header[5] == 1 else ">"
        wide = header[4] == 2  # 64-bit
        if wide:
            phoff, phentsize, phnum = struct.unpack_from(f"{endian}Q14xHH", header, 32)
        else:
            phoff, phentsize, phnum = struct.unpack_from(f"{endian}I10xHH", header, 28)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            entry = f.read(phentsize)
            if struct.unpack_from(f"{endian}I", entry)[0] != 3:  # PT_INTERP
                continue
            # p_offset and p_filesz of an Elf64_Phdr or an Elf32_Phdr.
            fields = f"{endian}8xQ16xQ" if wide else f"{endian}4xI8xI"
            offset, size = struct.unpack_from(fields, entry)
            f.seek(offset)
            return f.read(size).rstrip(b"\0").decode()
    return None


def shared_libraries(binary: str | Path) -> list[Path]:
    """The shared libraries ``ldd`` names for ``binary``, with the dynamic loader at the path
    the binary names it by; none for a statically linked one. :class:`FileNotFoundError` when
    there is no ``ldd`` or it finds a library missing."""
    path = Path(binary)
    interpreter = _interpreter(path)
    if interpreter is None:
        return []
    try:
        done = subprocess.run(
            ["ldd", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is dynamically linked and there is no ldd to name its libraries "
            "(Debian: libc-bin)"
        ) from None
    if done.returncode != 0:
        raise RuntimeError(f"ldd {path} failed: {(done.stderr or done.stdout).strip()}")
    libraries: list[Path] = []
    for line in done.stdout.splitlines():
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2
        # (0x...)", or "linux-vdso.so.1 (0x...)" (the kernel's: no file).
        name, arrow, target = line.strip().partition("=>")
        where = (target if arrow else name).split("(0x")[0].strip()
        if where == "not found":
            raise FileNotFoundError(f"{path} needs {name.strip()}, which ldd does not find")
        if where.startswith("/") and Path(where) not in libraries:
            libraries.append(Path(where))
    if Path(interpreter) not in libraries:
        libraries.append(Path(interpreter))
    return libraries


def _etcdctl_beside(binary: str) -> Path | None:
    for directory in (Path(binary).parent, Path(binary).resolve().parent):
        etcdctl = directory / "etcdctl"
        if os.access(etcdctl, os.X_OK):
            return etcdctl
    return None


def write_build_context(directory: str | Path, binary: str) -> list[str]:
    """Write the image's build context into ``directory``: ``deploy/etcd-image/Dockerfile``, and
    ``rootfs/`` holding ``binary`` as ``/etcd``, the etcdctl beside it (if any) as
    ``/etcdctl``, and the shared libraries of both (:func:`shared_libraries`, their contents
    rather than symbolic links) at their own paths. Returns the image's files, sorted."""
    dockerfile = IMAGE_DIR / "Dockerfile"
    if not dockerfile.is_file():
        raise FileNotFoundError(
            f"no {dockerfile} (lessor is not installed from a checkout): "
            "name an etcd image in LESSOR_ETCD_IMAGE"
        )
    rootfs = Path(directory) / "rootfs"
    rootfs.mkdir(parents=True)
    shutil.copy2(dockerfile, Path(directory) / "Dockerfile")
    files: dict[str, Path] = {"/etcd": Path(binary)}
    etcdctl = _etcdctl_beside(binary)
    if etcdctl is not None:
        files["/etcdctl"] = etcdctl
    for program in list(files.values()):
        for library in shared_libraries(program):
            files.setdefault(str(library), library)
    for inside, source in files.items():
        target = rootfs / inside.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)  # follows symbolic links: the library itself
    return sorted(files)


def _version_for_image(binary: str) -> tuple[int, int, int]:
    """``binary``'s version, with a :class:`RuntimeWarning` when it is older than 3.5.13."""
    version = etcd_version(binary)
    if version is None:
        raise RuntimeError(f"`{binary} --version` names no etcd version: it does not run here")
    if version < SAFE_LEASE_VERSION:
        shown = ".".join(map(str, version))
        warnings.warn(
            f"the etcd image gets etcd {shown} ({binary}), which can revoke leases early after "
            "a leader change (etcd issue #15247, fixed in 3.5.13): tests and benchmarks on it "
            "may see a holder's ranges freed before its deadline. Install a newer etcd "
            "(`bash .ci/install-etcd` as root on Debian) or set LESSOR_ETCD_BINARY",
            RuntimeWarning,
            stacklevel=3,
        )
    return version


def build_etcd_image() -> EtcdImage:
    """Build (once per process for each binary) the ``deploy/etcd-image`` image around
    :func:`find_image_etcd_binary`, tagged ``lessor-etcd:<its version>`` and
    ``lessor-etcd:local``."""
    binary = find_image_etcd_binary()
    with _build_lock:
        if binary in _built:
            return _built[binary]
        version = _version_for_image(binary)
        shown = ".".join(map(str, version))
        tag = f"{IMAGE_REPOSITORY}:{shown}"
        with tempfile.TemporaryDirectory(prefix="lessor-etcd-image-") as context:
            files = write_build_context(context, binary)
            client = DockerClient()
            try:
                image, _ = client.build(
                    path=context, tag=tag, rm=True, buildargs={"ETCD_VERSION": shown}
                )
                image.tag(IMAGE_REPOSITORY, LOCAL_IMAGE.split(":")[1])
            finally:
                client.client.close()
        built = EtcdImage(tag=tag, version=version, binary=binary, files=tuple(files))
        _built[binary] = built
        return built


def etcd_image() -> str:
    """The image ``deploy/compose.yaml``'s etcd members run: ``$LESSOR_ETCD_IMAGE``, else
    ``lessor-etcd:local``, which names the image :func:`build_etcd_image` has built."""
    configured = os.environ.get("LESSOR_ETCD_IMAGE")
    if configured:
        return configured
    build_etcd_image()
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lessor.etcd.container``: build the image and print its tag; with
    ``--context DIR``, only write its build context and print the ``docker build`` for it."""
    parser = argparse.ArgumentParser(
        prog="python -m lessor.etcd.container",
        description="Build the FROM scratch etcd image of deploy/etcd-image around the etcd "
        "that lessor finds here (see lessor.etcd.container), tagged lessor-etcd:<version> "
        "and lessor-etcd:local; print the first tag.",
    )
    parser.add_argument(
        "--context",
        metavar="DIR",
        help="write the build context into DIR (rootfs/ must not exist yet) and print the "
        "docker build command for it, instead of building",
    )
    args = parser.parse_args(argv)
    binary = find_image_etcd_binary()
    if args.context:
        shown = ".".join(map(str, _version_for_image(binary)))
        files = write_build_context(args.context, binary)
        print(f"etcd {shown} from {binary}: {' '.join(files)}", file=sys.stderr)
        print(
            f"docker build --build-arg ETCD_VERSION={shown} "
            f"-t {IMAGE_REPOSITORY}:{shown} -t {LOCAL_IMAGE} {args.context}"
        )
        return 0
    image = build_etcd_image()
    print(f"etcd {'.'.join(map(str, image.version))} from {image.binary}: "
          f"{' '.join(image.files)}; also tagged {LOCAL_IMAGE}", file=sys.stderr)  # fmt: skip
    print(image.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
