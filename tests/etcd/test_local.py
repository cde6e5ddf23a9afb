"""lessor.testing.binary: telling which etcd runs."""

from __future__ import annotations

from pathlib import Path

from lessor.testing import SAFE_LEASE_VERSION, etcd_version, find_etcd_binary


def test_the_version_of_the_etcd_in_use() -> None:
    version = etcd_version(find_etcd_binary())
    assert version is not None and version >= (3, 4, 0)
    assert SAFE_LEASE_VERSION == (3, 5, 13)


def test_an_unknown_version_is_none(tmp_path: Path) -> None:
    assert etcd_version(str(tmp_path / "missing")) is None
    fake = tmp_path / "etcd"
    fake.write_text("#!/bin/sh\necho 'etcd Version: three'\n")
    fake.chmod(0o755)
    assert etcd_version(str(fake)) is None
