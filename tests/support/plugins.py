"""An installed plugin distribution, made in a test's temporary directory: what the registries'
entry-point discovery (:mod:`lessor.registry`, :mod:`lessor.aio.registry`) finds."""

from __future__ import annotations

import textwrap
from pathlib import Path

__all__ = ["install_plugin"]


def install_plugin(root: Path, module: str, source: str, entry: str, *, group: str) -> None:
    """A real installed distribution under ``root`` (put it on ``sys.path``): ``module``'s
    ``source``, plus dist-info whose entry_points.txt has ``entry`` in ``group``."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module}_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
