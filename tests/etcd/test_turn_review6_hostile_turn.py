"""Turn review 6: a turn value the lessor never writes escapes as a Python error.

Schedule: anything but the lessor writes the section's turn key (an old tool, an operator's
``etcdctl put``, a corrupted restore), with no etcd lease, so it stands until deleted:
``{"holder": "x", "attempt": 1000...0}`` (a JSON integer of 400 digits) or ``[[[[...``
(100,000 deep). Then a process acquires on the section, and an operator runs ``lessor
inspect`` to see why.

Invariant broken: a turn value that is not the lessor's JSON "reads as a holder named by its
text, with no round trip known" (``state.py``, ``Turn``), so it costs at most the others'
patience (``turn.py``, Liveness). Instead ``Turn.of`` lets ``OverflowError``
(``math.isfinite`` of an int too large for a float) and ``RecursionError`` (``json.loads``)
out, for it suppresses ``ValueError`` only. Every read and swap of the section parses the
turn, so every acquisition of the section raises that error to its caller (not a
``LessorError``) for as long as the key stands, and ``lessor inspect`` dies with a traceback,
so the operator cannot see which key it is. The section value had the very same defect
(``test_admin_cli.py``, ``HOSTILE``: "json raised RecursionError through inspect and
lease"); the turn key brought it back.

Severity: medium. The lessor itself never writes such a value, but one foreign write bricks
a section (not only slows it) and blinds the tool meant to diagnose it.

Fix idea: in ``Turn.of``, do not parse a value longer than the lessor ever writes (a few
hundred bytes: read it as text), and take the round trip only from a float or an int that
converts (``float(given)`` inside the suppress, with ``OverflowError`` and
``RecursionError`` suppressed too); ``bool`` is an ``int`` as well (``"attempt": true``
reads as 1 s today).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from lessor import Partition
from lessor.etcd import EtcdLessor
from lessor.etcd.keys import SectionKeys
from lessor.testing import LocalEtcd

P = Partition

HOSTILE = {
    "attempt a 400-digit integer": b'{"holder": "x", "attempt": 1' + b"0" * 400 + b"}",
    "nested 100000 deep": b"[" * 100_000,
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lessor", *args], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_an_acquisition_takes_a_foreign_turn_value_over(
    etcd_server: LocalEtcd, client: Any, prefix: str, raw: bytes
) -> None:
    client.put(SectionKeys.of(prefix, "hot").turn, raw)  # no etcd lease: it stands
    with EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="me") as it:
        with it.lease("hot", P(0, 10), 5) as lease:  # the foreign claim is taken over
            assert lease.partitions == [P(0, 10)]


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_inspect_shows_a_foreign_turn_value(
    etcd_server: LocalEtcd, client: Any, prefix: str, raw: bytes
) -> None:
    keys = SectionKeys.of(prefix, "hot")
    client.put(keys.value, b'{"v":1,"leases":[]}')
    client.put(keys.turn, raw)
    for args in (["--json"], []):
        shown = cli("inspect", *args, "--endpoints", etcd_server.endpoint, "--prefix", prefix)
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr[-400:]
    [section] = json.loads(cli("inspect", "--json", "--endpoints", etcd_server.endpoint,
                               "--prefix", prefix).stdout)  # fmt: skip
    assert section["turn"] is not None
