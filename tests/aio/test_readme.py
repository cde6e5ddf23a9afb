"""The README's asyncio example runs as written (it uses the memory backend)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def asyncio_example() -> str:
    section = README.read_text().split("### asyncio", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the asyncio section has one example"
    return blocks[0]


def test_the_readme_asyncio_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-c", asyncio_example()],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "1", lines  # with_lease's result: the one range granted
    assert "reached its deadline" in lines[1], lines
