"""Deprecated: moved to :mod:`lessor.testing` (``lessor.testing.local``, ``.process``,
``.binary``); this alias stays for one release and warns when imported."""

from __future__ import annotations

import warnings

from lessor.testing.binary import (
    SAFE_LEASE_VERSION,
    etcd_version,
    find_etcd_binary,
    installed_etcd_binary,
)
from lessor.testing.local import LocalEtcd, ServerTLS
from lessor.testing.process import free_port, free_ports, tuning_flags, wait_healthy

__all__ = [
    "SAFE_LEASE_VERSION",
    "LocalEtcd",
    "ServerTLS",
    "etcd_version",
    "find_etcd_binary",
    "free_port",
    "free_ports",
    "installed_etcd_binary",
    "tuning_flags",
    "wait_healthy",
]

warnings.warn(
    "lessor.etcd.local is deprecated: use lessor.testing (lessor.testing.local, "
    "lessor.testing.process, lessor.testing.binary)",
    DeprecationWarning,
    stacklevel=2,
)
