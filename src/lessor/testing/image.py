"""The etcd image :class:`~lessor.testing.EtcdContainer` runs, built locally around the etcd
found here.

A ``FROM scratch`` image: the etcd that :func:`~lessor.testing.find_etcd_binary` finds for local
etcd processes too (``$LESSOR_ETCD_BINARY``, else one of 3.5.13 or newer from ``PATH`` or from
``.ci/install-etcd``, else an older one) as ``/etcd``, the etcdctl beside it as ``/etcdctl``,
and, when they are dynamically linked, the shared libraries ``ldd`` names for them and the
dynamic loader. Its Dockerfile ships in this package (``etcd-image/Dockerfile``, package data:
an installed lessor builds it too); ``deploy/etcd-image/Dockerfile`` of a checkout is a link to
it. :func:`build_etcd_image` builds it once per process for each etcd binary and tags it with
its etcd's version (``lessor-etcd:3.5.16``), which is what ``EtcdContainer`` runs, so an image
built from another etcd is never taken for it; the same image is also tagged
``lessor-etcd:local``, the name ``deploy/compose.yaml`` runs (:func:`etcd_image`). An etcd older
than 3.5.13 still makes an image, with a :class:`RuntimeWarning`: it can revoke leases early
after a leader change (etcd issue #15247).

``python -m lessor.testing.image`` builds it and prints its tag; ``--context DIR`` only writes
the build context. Building needs testcontainers (the ``lessor[testing]`` extra) and a Docker
daemon; writing the context needs neither.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lessor.testing.binary import SAFE_LEASE_VERSION, etcd_version, find_etcd_binary

__all__ = [
    "IMAGE_DIR",
    "IMAGE_REPOSITORY",
    "LOCAL_IMAGE",
    "VERSION_LABEL",
    "EtcdImage",
    "build_etcd_image",
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
# The image's Dockerfile, package data (deploy/etcd-image/Dockerfile links to it).
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


def find_image_etcd_binary() -> str:
    """The etcd to put in the image: :func:`~lessor.testing.binary.find_etcd_binary`'s, which
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
    """Write the image's build context into ``directory``: the packaged Dockerfile, and
    ``rootfs/`` holding ``binary`` as ``/etcd``, the etcdctl beside it (if any) as
    ``/etcdctl``, and the shared libraries of both (:func:`shared_libraries`, their contents
    rather than symbolic links) at their own paths. Returns the image's files, sorted."""
    dockerfile = IMAGE_DIR / "Dockerfile"
    if not dockerfile.is_file():
        raise FileNotFoundError(
            f"no {dockerfile}: this lessor was installed without its package data; "
            "reinstall it, or name an etcd image in LESSOR_ETCD_IMAGE"
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
    """Build (once per process for each binary) the etcd image around
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
            from testcontainers.core.docker_client import DockerClient  # noqa: PLC0415

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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lessor.testing.image``: build the image and print its tag; with
    ``--context DIR``, only write its build context and print the ``docker build`` for it."""
    parser = argparse.ArgumentParser(
        prog="python -m lessor.testing.image",
        description="Build the FROM scratch etcd image (lessor/testing/etcd-image/Dockerfile) "
        "around the etcd that lessor finds here (see lessor.testing.image), tagged "
        "lessor-etcd:<version> and lessor-etcd:local; print the first tag.",
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
