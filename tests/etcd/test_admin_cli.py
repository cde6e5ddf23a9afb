"""``lessor inspect`` and ``lessor repair`` against a real etcd, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from lessor import CorruptSection, Partition
from lessor.etcd import EtcdLessor
from lessor.etcd.keys import SectionKeys
from lessor.testing import LocalEtcd

P = Partition


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lessor", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def test_inspect_shows_live_leases(etcd_server: LocalEtcd, prefix: str) -> None:
    where = ["--endpoints", etcd_server.endpoint, "--prefix", prefix]
    with EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="worker-7") as it, \
            it.lease("reminders/a", P(0x10, 0x20), 30) as lease:  # fmt: skip
        result = cli("inspect", "--json", *where)
        assert result.returncode == 0, result.stderr
        [section] = json.loads(result.stdout)
        assert section["section"] == "reminders/a" and section["corrupt"] is None
        [held] = section["leases"]
        assert held["ranges"] == ["10_20"] and held["holder"] == "worker-7"
        assert held["token"] == lease.token and 0 < held["ttl"] <= 33
        table = cli("inspect", *where)
        assert table.returncode == 0, table.stderr
        assert "'reminders/a': 1 live leases" in table.stdout and "10_20" in table.stdout
        assert "worker-7" in table.stdout
    after = json.loads(cli("inspect", "--json", "--section", "reminders/a", *where).stdout)
    assert after[0]["leases"] == []


def test_repair_resets_only_a_corrupt_section(etcd_server: LocalEtcd, client: Any,
                                              prefix: str) -> None:  # fmt: skip
    where = ["--endpoints", etcd_server.endpoint, "--prefix", prefix]
    with EtcdLessor(etcd_server.endpoints, prefix=prefix) as it:
        with it.lease("good", P(0, 10), 30):
            refused = cli("repair", "--section", "good", "--yes", *where)
            assert refused.returncode == 1 and "intact" in refused.stderr
        key = SectionKeys.of(prefix, "bad").value
        client.put(key, b"garbage!")
        shown = json.loads(cli("inspect", "--json", *where).stdout)
        assert [s["section"] for s in shown] == ["bad", "good"]
        assert "cannot be decoded" in shown[0]["corrupt"]
        unconfirmed = cli("repair", "--section", "bad", *where)
        assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
        assert "garbage!" in unconfirmed.stdout  # what would be discarded, shown first
        assert client.get(key)[0] == b"garbage!"
        done = cli("repair", "--section", "bad", "--yes", *where)
        assert done.returncode == 0, done.stderr
        assert client.get(key)[0] is None
        with it.lease("bad", P(0, 10), 5) as lease:
            assert lease.partitions == [P(0, 10)]


def test_repair_waits_for_live_holders_unless_forced(etcd_server: LocalEtcd, client: Any,
                                                     prefix: str) -> None:  # fmt: skip
    where = ["--endpoints", etcd_server.endpoint, "--prefix", prefix]
    key = SectionKeys.of(prefix, "s").value
    with EtcdLessor(etcd_server.endpoints, prefix=prefix) as it, it.lease("s", P(0, 10), 30):
        client.put(key, b'{"v": 9}')  # someone broke it while a holder works
        refused = cli("repair", "--section", "s", "--yes", *where)
        assert refused.returncode == 1 and "live holder markers" in refused.stderr
        assert client.get(key)[0] == b'{"v": 9}'
        forced = cli("repair", "--section", "s", "--yes", "--force", *where)
        assert forced.returncode == 0, forced.stderr


def test_unreachable_etcd_and_missing_settings_are_clear() -> None:
    started = time.monotonic()
    down = cli("inspect", "--endpoints", "127.0.0.1:1")
    assert down.returncode == 1 and "lessor: error:" in down.stderr
    assert "127.0.0.1:1" in down.stderr and "Traceback" not in down.stderr
    assert time.monotonic() - started < 30
    unset = subprocess.run([sys.executable, "-m", "lessor", "inspect"], capture_output=True,
                           text=True, timeout=60, check=False,
                           env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert unset.returncode == 1 and "LESSOR_ETCD_ENDPOINTS" in unset.stderr
    for command in ("inspect", "repair"):
        helped = cli(command, "--help")
        assert helped.returncode == 0 and "--endpoints" in helped.stdout


ONE_ENTRY = b'{"v":1,"leases":[{"lease":1,"seq":1,"holder":"","ranges":["%s"]}]}'
HOSTILE = {
    "nested 100000 deep": b"[" * 100_000,  # json raised RecursionError through inspect and lease
    "a 1 MiB bad range": ONE_ENTRY % (b"z_" + b"0" * 2**20),  # its error message was 2 MiB long
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_values_are_reported_and_repaired(etcd_server: LocalEtcd, client: Any,
                                                  prefix: str, raw: bytes) -> None:  # fmt: skip
    where = ["--endpoints", etcd_server.endpoint, "--prefix", prefix]
    key = SectionKeys.of(prefix, "hostile").value
    client.put(key, raw)
    shown = cli("inspect", "--json", *where)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    [section] = json.loads(shown.stdout)
    assert section["section"] == "hostile" and "cannot be decoded" in section["corrupt"]
    assert len(shown.stdout) < 2000  # the reason is shown, not the value
    table = cli("inspect", *where)
    assert table.returncode == 0 and "CORRUPT" in table.stdout, table.stderr
    with EtcdLessor(etcd_server.endpoints, prefix=prefix) as it:
        with pytest.raises(CorruptSection, match="'hostile'"), it.lease("hostile", P(0, 10), 5):
            pass
        done = cli("repair", "--section", "hostile", "--yes", *where)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert f"discarded {len(raw)} bytes" in done.stdout
        assert client.get(key)[0] is None
        with it.lease("hostile", P(0, 10), 5) as lease:
            assert lease.partitions == [P(0, 10)]


def test_inspect_shows_who_holds_a_sections_turn(
    etcd_server: LocalEtcd, client: Any, prefix: str
) -> None:
    where = ["--endpoints", etcd_server.endpoint, "--prefix", prefix]
    keys = SectionKeys.of(prefix, "hot")
    with EtcdLessor(etcd_server.endpoints, prefix=prefix) as it, it.lease("hot", P(0, 10), 30):
        lease = client.lease(30)
        try:
            client.put(keys.turn, "sweeper-3", lease=lease)  # as a losing swap claims it
            [shown] = json.loads(cli("inspect", "--json", *where).stdout)
            assert shown["turn"]["holder"] == "sweeper-3"
            assert shown["turn"]["etcd_lease"] == f"{lease.id:x}"
            table = cli("inspect", "--section", "hot", *where)
            assert table.returncode == 0, table.stderr
            assert "turn: sweeper-3" in table.stdout
        finally:
            lease.revoke()
        [after] = json.loads(cli("inspect", "--json", *where).stdout)
        assert after["turn"] is None
