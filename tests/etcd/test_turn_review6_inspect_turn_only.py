"""Turn review 6 (holds): ``lessor inspect`` on a section whose turn key exists but whose
value does not (never written, or deleted by ``lessor repair``, which leaves the turn).

Schedule: a claim stands on the section's turn key (on an etcd lease, as a losing swap
leaves it); the section value is absent. ``inspect`` (all sections, and ``--section``), in
JSON and as a table. Then the first acquisition of the section.

Holds: no traceback, exit 0; the section is not listed (inspect lists section values, and
there is none), so the turn is not shown: harmless, for the claim costs the first acquirer
at most the others' patience, and that acquisition takes it over and is granted.
"""

from __future__ import annotations

import json
from typing import Any

from lessor import Partition
from lessor.etcd import EtcdLessor
from lessor.etcd.keys import SectionKeys
from lessor.etcd.state import Turn
from lessor.testing import LocalEtcd
from tests.etcd.test_turn_review6_hostile_turn import cli


def test_inspect_of_a_turn_without_a_section_value(
    etcd_server: LocalEtcd, client: Any, prefix: str
) -> None:
    keys = SectionKeys.of(prefix, "hot")
    where = ["--endpoints", etcd_server.endpoint, "--prefix", prefix]
    lease = client.lease(30)
    try:
        client.put(keys.turn, Turn.value("sweeper-3", 0.05), lease=lease)
        for args in (["--json"], ["--json", "--section", "hot"]):
            shown = cli("inspect", *args, *where)
            assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
            assert json.loads(shown.stdout) == []
        table = cli("inspect", "--section", "hot", *where)
        assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr
        with EtcdLessor(etcd_server.endpoints, prefix=prefix) as it:
            with it.lease("hot", Partition(0, 10), 5) as held:
                assert held.partitions == [Partition(0, 10)]
        assert client.get(keys.turn)[0] is None  # taken over, and deleted by the winning swap
    finally:
        lease.revoke()
