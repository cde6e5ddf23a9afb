"""What the etcd lessor does beyond the contract, checked against a real etcd."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest

import lessor
from lessor import (
    Context,
    CorruptSection,
    Partition,
    PermissionDenied,
    SortedPartitions,
    Unavailable,
)
from lessor.etcd import MAX_LIVE_LEASES, EtcdLessor, EtcdSettings, SectionFull
from lessor.etcd.calls import run
from lessor.etcd.keys import SectionKeys
from lessor.etcd.transport import RetryableRpc
from lessor.testing import LocalEtcd
from tests.support.etcd_admin import enable_auth
from tests.support.etcd_flavours import Flavour

P = Partition


@pytest.fixture
def etcd_lessor(etcd_server: LocalEtcd, prefix: str) -> Iterator[EtcdLessor]:
    with EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="me") as it:
        yield it


def stored(client: Any, prefix: str, section_id: str) -> dict[str, Any] | None:
    value, _ = client.get(SectionKeys.of(prefix, section_id).value)
    return None if value is None else json.loads(value)


def markers(client: Any, prefix: str, section_id: str) -> list[Any]:
    keys = SectionKeys.of(prefix, section_id)
    return [meta for _, meta in client.get_prefix(keys.markers)]


def test_section_value_lists_the_leased_ranges(
    etcd_lessor: EtcdLessor, client: Any, prefix: str
) -> None:
    with etcd_lessor.lease("s", P(0x10, 0x20), 30) as a, etcd_lessor.lease("s", P(0, 0x40), 30):
        doc = stored(client, prefix, "s")
        assert doc is not None and doc["v"] == 1
        assert [e["ranges"] for e in doc["leases"]] == [["10_20"], ["0_10", "20_40"]]
        assert {e["holder"] for e in doc["leases"]} == {"me"}
        metas = markers(client, prefix, "s")
        assert len(metas) == 2
        assert a.token in {m.create_revision for m in metas}  # the token is etcd's revision
        lease_ttl = client.get_lease_info(metas[0].lease_id)
        assert lease_ttl.TTL > 0  # markers are attached to a live etcd lease
    assert markers(client, prefix, "s") == []  # released: markers gone at once


def test_corrupt_value_is_an_error_and_left_untouched(
    etcd_lessor: EtcdLessor, client: Any, prefix: str
) -> None:
    key = SectionKeys.of(prefix, "broken").value
    called: list[object] = []
    for garbage in (b"not json at all", b'{"v": 2, "leases": []}'):
        client.put(key, garbage)
        with pytest.raises(CorruptSection, match="'broken'") as e:
            etcd_lessor.with_lease(
                Context.background(), "broken", P(0, 10), 5, lambda ctx, parts: called.append(parts)
            )
        assert not called
        assert "repair" in str(e.value)
        assert client.get(key)[0] == garbage


def test_stale_cache_never_withholds_a_free_range(etcd_server: LocalEtcd, prefix: str) -> None:
    with (
        EtcdLessor(etcd_server.endpoints, prefix=prefix) as a,
        EtcdLessor(etcd_server.endpoints, prefix=prefix) as b,
    ):
        with b.lease("s", P(0, 100), 30):
            with a.lease("s", P(0, 200), 30) as first:  # a caches b's entry as live
                assert first.partitions == [P(100, 200)]
        # b released: its marker is gone, the section value still lists its entry.
        with a.lease("s", P(0, 200), 30) as second:
            assert second.partitions == [P(0, 200)]
        with b.lease("s", P(0, 100), 30):
            with a.lease("s", P(0, 50), 30) as covered:
                assert covered.partitions == []
        with a.lease("s", P(0, 50), 30) as free_again:  # nothing free in cache: checked
            assert free_again.partitions == [P(0, 50)]


def test_dead_entries_are_pruned(etcd_lessor: EtcdLessor, client: Any, prefix: str) -> None:
    for i in range(30):
        with etcd_lessor.lease("s", P(i, i + 1), 30):
            pass
    with etcd_lessor.lease("s", P(0, 1000), 30):
        doc = stored(client, prefix, "s")
        assert doc is not None
        assert len(doc["leases"]) <= 2  # ours, and at most the one released just before


def test_odd_section_ids_are_independent(etcd_lessor: EtcdLessor, client: Any, prefix: str) -> None:
    ids = ["a/b", "a", "a%2Fb", "日本語", "x" * 1024, "m/a", "s/a"]
    with contextlib.ExitStack() as stack:
        for section_id in ids:
            lease = stack.enter_context(etcd_lessor.lease(section_id, P(0, 10), 30))
            assert lease.partitions == [P(0, 10)], section_id
        values = client.get_prefix(f"{prefix}s/")
        assert len(list(values)) == len(ids)
    with pytest.raises(ValueError, match="at most 4096"):
        etcd_lessor.with_lease(Context.background(), "x" * 5000, P(0, 1), 1, lambda c, p: None)


def test_a_lost_commit_reply_is_adopted_not_doubled(
    etcd_lessor: EtcdLessor,
    etcd_server: LocalEtcd,
    client: Any,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The swap commits in etcd, but the reply is lost (as on a timeout or failover)."""
    transport = etcd_lessor._transport
    real_kv = transport.kv
    lost = []

    def kv(method: str, request: Any, timeout: float, what: str) -> Any:
        response = real_kv(method, request, timeout, what)
        is_swap = method == "Txn" and any(op.HasField("request_put") for op in request.success)
        if is_swap and not lost:
            lost.append(response.header.revision)
            raise RetryableRpc(etcd_server.endpoint, grpc.StatusCode.DEADLINE_EXCEEDED, "lost")
        return response

    transport.kv = kv  # type: ignore[method-assign]
    with caplog.at_level("INFO", logger="lessor"), etcd_lessor.lease("s", P(0, 100), 30) as lease:
        assert lost, "the fault was not injected"
        assert "adopted" in caplog.text
        assert lease.partitions == [P(0, 100)]
        assert lease.token == lost[0]
        doc = stored(client, prefix, "s")
        assert doc is not None and len(doc["leases"]) == 1
        assert len(markers(client, prefix, "s")) == 1
    assert markers(client, prefix, "s") == []


def test_an_etcd_lease_revoked_behind_our_back_is_replaced(
    etcd_lessor: EtcdLessor, client: Any, prefix: str
) -> None:
    with etcd_lessor.lease("s", P(0, 10), 30):
        [meta] = markers(client, prefix, "s")
    client.revoke_lease(meta.lease_id)  # the lessor still thinks it can reuse this one
    with etcd_lessor.lease("s", P(0, 10), 30) as lease:
        assert lease.partitions == [P(0, 10)]
        [again] = markers(client, prefix, "s")
        assert again.lease_id != meta.lease_id


def test_a_section_holds_a_bounded_number_of_leases(etcd_lessor: EtcdLessor) -> None:
    with contextlib.ExitStack() as stack:
        for i in range(MAX_LIVE_LEASES):
            stack.enter_context(etcd_lessor.lease("full", P(i, i + 1), 60))
        with pytest.raises(SectionFull, match="'full'"):
            etcd_lessor.with_lease(Context.background(), "full", P(0, 1000), 5, lambda c, p: None)
        with etcd_lessor.lease("full", P(0, 50), 5) as covered:
            assert covered.partitions == []  # asking for held ranges only still works


def test_a_full_section_is_asked_again_not_remembered(
    etcd_server: LocalEtcd, etcd_lessor: EtcdLessor, prefix: str
) -> None:
    """Regression (4569aea): once its cached state showed a full section, a lessor raised
    SectionFull forever without asking etcd, even after every one of those leases ended."""
    with EtcdLessor(etcd_server.endpoints, prefix=prefix, holder="other") as other:
        with contextlib.ExitStack() as stack:
            for i in range(MAX_LIVE_LEASES):
                stack.enter_context(other.lease("full", P(i, i + 1), 60))
            with pytest.raises(SectionFull):
                etcd_lessor.with_lease(Context.background(), "full", P(500, 501), 5,
                                       lambda c, p: None)  # fmt: skip
        # Every one of those leases has ended: the section is empty again.
        ctx = Context.background().with_timeout(5)
        with etcd_lessor.lease("full", P(500, 501), 5, ctx=ctx) as lease:
            assert lease.partitions == [P(500, 501)]
        # And after another writer changed the section, too.
        with other.lease("full", P(0, 1), 5):
            with etcd_lessor.lease("full", P(0, 2), 5, ctx=ctx) as lease:
                assert lease.partitions == [P(1, 2)]


@pytest.mark.parametrize("dur", [1e10, 1e19, timedelta(days=200_000)])
def test_an_absurd_duration_is_refused_before_any_call(dur: float | timedelta) -> None:
    """Regression (4569aea): 1e10 s (past etcd's longest lease) came back as a generic error
    after a round trip, and 1e19 s escaped as protobuf's ValueError. Nothing answers on this
    endpoint: the refusal must come before any call."""
    with EtcdLessor(["127.0.0.1:9"], acquire_timeout=2) as lessors:
        started = time.monotonic()
        with pytest.raises(ValueError, match="can grant") as e:
            with lessors.lease("s", P(0, 1), dur):
                pass
        assert f"{lessors.max_duration:.0f}s" in str(e.value)
        assert time.monotonic() - started < 0.5


def test_a_huge_duration_capped_by_the_callers_deadline_is_fine(etcd_lessor: EtcdLessor) -> None:
    ctx = Context.background().with_timeout(3)
    with etcd_lessor.lease("capped", P(0, 1), 1e19, ctx=ctx) as lease:
        assert lease.partitions == [P(0, 1)]
        assert lease.deadline <= time.monotonic() + 3


def test_a_short_lease_never_shares_a_long_ones_etcd_lease(
    etcd_lessor: EtcdLessor, client: Any, prefix: str
) -> None:
    """A crashed holder's ranges come free within ceil(dur + margin + reuse) of its grant:
    a short acquisition must not attach its marker to a day-long etcd lease."""
    with etcd_lessor.lease("mixed", P(0, 1), 86_400):
        with etcd_lessor.lease("mixed", P(1, 2), 1):
            ttls = sorted(meta.lease_id for meta in markers(client, prefix, "mixed"))
            assert len(set(ttls)) == 2, "the short lease shares the long one's etcd lease"
            short = min(client.get_lease_info(lease_id).grantedTTL for lease_id in ttls)
            assert short <= 1 + 0.2 + 2 + 1


def test_a_users_pyetcd_client_works_alongside(
    etcd_server: LocalEtcd, client: Any, prefix: str
) -> None:
    with (
        EtcdLessor(client=client, prefix=prefix) as via_client,
        EtcdLessor(etcd_server.endpoints, prefix=prefix) as via_endpoints,
    ):
        with via_client.lease("s", P(0, 10), 30) as a:
            assert a.partitions == [P(0, 10)]
            with via_endpoints.lease("s", P(0, 20), 30) as b:
                assert b.partitions == [P(10, 20)]
                assert b.token > a.token


def test_get_from_environment_alone(
    etcd_server: LocalEtcd, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LESSOR_ETCD_ENDPOINTS", ",".join(etcd_server.endpoints))
    monkeypatch.setenv("LESSOR_ETCD_PREFIX", prefix)
    got = lessor.get(Context.background(), "etcd")
    assert isinstance(got, EtcdLessor) and got.prefix == prefix
    assert lessor.get(Context.background(), "etcd") is got  # one per settings
    with got.lease("s", P(0, 10), 5) as lease:
        assert lease.partitions == [P(0, 10)]
    monkeypatch.delenv("LESSOR_ETCD_ENDPOINTS")
    with pytest.raises(ValueError, match="LESSOR_ETCD_ENDPOINTS"):
        lessor.get(Context.background(), "etcd")
    settings = EtcdSettings(endpoints=tuple(etcd_server.endpoints), prefix=prefix)
    ctx = Context.background().with_value(EtcdSettings, settings)
    assert lessor.get(ctx, "etcd").prefix == prefix


def test_settings_never_show_the_password() -> None:
    secret = "s3cret-pw"
    s = EtcdSettings(endpoints=("a:1",), user="app", password=secret, cert_key="/k.pem")
    ctx = Context.background().with_value(EtcdSettings, s)
    for shown in (repr(s), str(s), f"{s}", repr([s]), repr(ctx)):
        assert secret not in shown
    assert "user='app'" in repr(s) and "password='***'" in repr(s)
    assert "cert_key='/k.pem'" in repr(s)  # a key's path is no secret
    assert "password=None" in repr(EtcdSettings(endpoints=("a:1",)))  # none set: say so
    env = EtcdSettings.from_environment(
        {"LESSOR_ETCD_ENDPOINTS": "a:1", "LESSOR_ETCD_USER": "u", "LESSOR_ETCD_PASSWORD": secret}
    )
    assert env.password == secret and secret not in repr(env)
    assert env == EtcdSettings(endpoints=("a:1",), user="u", password=secret)  # still compared
    not_settings = Context.background().with_value(EtcdSettings, {"password": secret})
    with pytest.raises(TypeError, match="EtcdSettings") as e:
        lessor.etcd.factory(not_settings)
    assert secret not in str(e.value)


def test_environment_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"LESSOR_ETCD_ENDPOINTS.*'nohost'"):
        EtcdSettings.from_environment({"LESSOR_ETCD_ENDPOINTS": "127.0.0.1:2379,nohost"})
    s = EtcdSettings.from_environment(
        {
            "LESSOR_ETCD_ENDPOINTS": "http://a:1, b:2",
            "LESSOR_ETCD_USER": "u",
            "LESSOR_ETCD_PASSWORD": "p",
        }
    )
    assert s.endpoints == ("a:1", "b:2") and s.user == "u" and s.prefix == "/lessor/"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "needs endpoints"),
        ({"endpoints": "127.0.0.1:2379"}, TypeError, "list"),
        ({"endpoints": []}, ValueError, "at least one"),
        ({"endpoints": ["nohost"]}, ValueError, "host:port"),
        ({"endpoints": ["h:1"], "user": "u"}, ValueError, "together"),
        ({"endpoints": ["h:1"], "prefix": "/x"}, ValueError, "end with '/'"),
        ({"endpoints": ["h:1"], "rpc_timeout": 0}, ValueError, "rpc_timeout"),
        ({"endpoints": ["h:1"], "margin": -1}, ValueError, "margin"),
        ({"endpoints": ["h:1"], "share_leases": 0}, TypeError, "share_leases"),
        ({"endpoints": ["h:1"], "cert_cert": "c.pem"}, ValueError, "together"),
        ({"endpoints": ["h:1"], "ca_cert": "/nonexistent.pem"}, ValueError, "nonexistent"),
        ({"endpoints": ["h:1"], "client": object()}, ValueError, "not both"),
        ({"client": object()}, TypeError, "pyetcd or etcd3"),
    ],
)
def test_constructor_errors(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        EtcdLessor(**kwargs)


def test_lease_reuse_is_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match="share_leases=False"):
        EtcdLessor(["127.0.0.1:1"], lease_reuse=0).close()
    with pytest.raises(ValueError, match="lease_reuse"):
        EtcdLessor(["127.0.0.1:1"], lease_reuse=-1)


def test_stopped_etcd_is_unavailable_by_the_deadline(flavour: Flavour) -> None:
    with LocalEtcd() as server, flavour(server.endpoints, acquire_timeout=1.5) as it:
        with it.lease("s", P(0, 10), 5) as lease:
            assert lease.partitions == [P(0, 10)]
        server.stop()
        called = []
        started = time.monotonic()
        ctx = Context.background().with_timeout(1.0)
        with pytest.raises(Unavailable) as e:
            it.with_lease(ctx, "s", P(0, 10), 5, lambda c, p: called.append(p))
        assert time.monotonic() - started < 2.0
        assert not called
        assert "'s'" in str(e.value) and server.endpoint in str(e.value)
        with pytest.raises(Unavailable):  # no caller deadline: acquire_timeout bounds it
            it.with_lease(Context.background(), "s", P(0, 10), 5, lambda c, p: None)
        assert time.monotonic() - started < 4.0
        server.start()  # back: the same lessor recovers
        with it.lease("s", P(0, 10), 5) as lease:
            assert lease.partitions == [P(0, 10)]


def test_unresolvable_name_is_unavailable(flavour: Flavour) -> None:
    with (
        flavour(["no-such-host.invalid:2379"], acquire_timeout=1.0) as it,
        pytest.raises(Unavailable, match=r"no-such-host\.invalid"),
    ):
        it.with_lease(Context.background(), "s", P(0, 10), 5, lambda c, p: None)


def test_permission_denied_and_credentials() -> None:
    with LocalEtcd() as server:
        enable_auth(server)
        with EtcdLessor(
            server.endpoints, user="app", password="apppw", prefix="/allowed/"
        ) as allowed:
            with allowed.lease("s", P(0, 10), 5) as lease:
                assert lease.partitions == [P(0, 10)]
        with (
            EtcdLessor(
                server.endpoints, user="app", password="apppw", prefix="/lessor/"
            ) as outside,
            pytest.raises(PermissionDenied) as e,
        ):
            outside.with_lease(Context.background(), "s", P(0, 10), 5, lambda c, p: None)
        assert "'s'" in str(e.value) and server.endpoint in str(e.value)
        with (
            EtcdLessor(server.endpoints, user="app", password="wrong", prefix="/allowed/") as wrong,
            pytest.raises(PermissionDenied, match="app"),
        ):
            wrong.with_lease(Context.background(), "s", P(0, 10), 5, lambda c, p: None)


@pytest.mark.parametrize("order", ["swap lands first", "abandon lands first"])
def test_an_abandoned_swap_holds_nothing_whichever_lands_first(
    etcd_lessor: EtcdLessor, order: str
) -> None:
    """A swap whose sender gave up may reach etcd before or after the clean-up does (a paused
    etcd wakes up with both queued); either way the acquisition must end up holding nothing."""
    from lessor.etcd import section  # noqa: PLC0415
    from lessor.etcd.state import SectionTxns  # noqa: PLC0415

    transport = etcd_lessor._transport
    txns = SectionTxns(transport.rpc, SectionKeys.of(etcd_lessor.prefix, "s"))
    grant = transport.lease("LeaseGrant", transport.rpc.LeaseGrantRequest(TTL=30), 5, "test")
    ours = section.Entry(grant.ID, 1, SortedPartitions([P(0, 10)]), "late")
    snapshot = run(transport, txns.read(5))
    if order == "swap lands first":
        assert run(transport, txns.swap(snapshot, [], [], [ours], 5))[1]
        run(transport, txns.abandon(grant.ID, 1, 5))
    else:
        run(transport, txns.abandon(grant.ID, 1, 5))
        assert not run(transport, txns.swap(snapshot, [], [], [ours], 5))[1]
    assert run(transport, txns.read(5)).live() == []
    with etcd_lessor.lease("s", P(0, 10), 5) as lease:
        assert lease.partitions == [P(0, 10)]


def test_the_section_cache_is_bounded(
    etcd_server: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lessor that uses many sections keeps the state of only the most recently used."""
    monkeypatch.setattr("lessor.etcd.sections.MAX_CACHED_SECTIONS", 3)
    with EtcdLessor(etcd_server.endpoints, prefix=prefix) as it:
        for name in ("a", "b", "c", "a", "d", "e"):
            with it.lease(name, Partition(0, 10), 5) as lease:
                assert lease.partitions == [Partition(0, 10)]
        assert list(it._sections) == ["a", "d", "e"]
        with EtcdLessor(etcd_server.endpoints, prefix=prefix) as other:
            with other.lease("b", Partition(0, 10), 5):
                with it.lease("b", Partition(5, 20), 5) as lease:  # evicted: read afresh
                    assert lease.partitions == [Partition(10, 20)]
