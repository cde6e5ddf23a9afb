"""Deprecated: moved to :mod:`lessor.testing.history`; this alias stays for one release and
warns when imported."""

from __future__ import annotations

import warnings

from lessor.testing.history import (
    History,
    Holding,
    Overlap,
    find_overlaps,
    find_token_inversions,
)

__all__ = ["History", "Holding", "Overlap", "find_overlaps", "find_token_inversions"]

warnings.warn(
    "lessor.history is deprecated: use lessor.testing.history (or lessor.testing)",
    DeprecationWarning,
    stacklevel=2,
)
