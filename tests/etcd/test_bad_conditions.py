"""Conditions that must end in a clear error, with nothing lost: a full etcd, an expired
auth token."""

from __future__ import annotations

import json

import grpc
import pyetcd
import pytest

from lessor import Context, Partition, Unavailable
from lessor.etcd import EtcdLessor
from lessor.etcd.keys import SectionKeys
from lessor.testing import LocalEtcd
from tests.support.etcd_admin import enable_auth

P = Partition


def test_out_of_space_is_unavailable_and_keeps_what_is_stored() -> None:
    with LocalEtcd(quota_bytes=4 * 1024 * 1024) as server:
        host, port = server.endpoint.rsplit(":", 1)
        client = pyetcd.client(host=host, port=int(port), timeout=5)
        with EtcdLessor(server.endpoints, acquire_timeout=2.0) as it:
            with it.lease("s", P(0, 10), 60):
                value_before, _ = client.get(SectionKeys.of("/lessor/", "s").value)
                filler = b"x" * (512 * 1024)
                with pytest.raises(grpc.RpcError) as full:  # fill etcd until its quota alarm
                    for i in range(64):
                        client.put(f"/filler/{i}", filler)
                assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                called = []
                with pytest.raises(Unavailable, match="out of space") as e:
                    it.with_lease(Context.background(), "s", P(10, 20), 5,
                                  lambda c, p: called.append(p))  # fmt: skip
                assert not called
                assert "'s'" in str(e.value)
                value_after, _ = client.get(SectionKeys.of("/lessor/", "s").value)
                assert value_after == value_before  # nothing stored was damaged
                assert json.loads(value_after)["leases"][0]["ranges"] == ["0_a"]
        client.close()


def test_an_expired_auth_token_is_renewed() -> None:
    with LocalEtcd(extra_args=["--auth-token-ttl", "1"]) as server:
        enable_auth(server)
        with EtcdLessor(server.endpoints, user="app", password="apppw",
                        prefix="/allowed/") as it:  # fmt: skip
            with it.lease("s", P(0, 10), 5) as lease:
                assert lease.partitions == [P(0, 10)]
            Context.background().wait(2.5)  # idle past the token's TTL: that is the fault
            with it.lease("s", P(0, 10), 5) as lease:
                assert lease.partitions == [P(0, 10)]
