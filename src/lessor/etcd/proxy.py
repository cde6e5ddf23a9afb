"""Deprecated: moved to :mod:`lessor.testing.proxy` (``lessor.testing.FaultProxy``); this alias
stays for one release and warns when imported."""

from __future__ import annotations

import warnings

from lessor.testing.proxy import FaultProxy

__all__ = ["FaultProxy"]

warnings.warn(
    "lessor.etcd.proxy is deprecated: use lessor.testing.proxy (lessor.testing.FaultProxy)",
    DeprecationWarning,
    stacklevel=2,
)
