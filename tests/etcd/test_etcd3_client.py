"""A user's own PyPI ``etcd3`` client works with the lessor.

``etcd3`` 0.12.0 imports only with the pure-Python protobuf
(``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``), which must be chosen before any protobuf
import, so this runs in its own nox session (``nox -s etcd3_client``) and is skipped elsewhere.
Under the pure-Python protobuf, ``etcd3`` and ``pyetcd`` cannot both load their generated
messages into one process (both register ``rpc.proto``), so everything here goes through
``etcd3`` clients: a lessor given a client uses that client's messages and never imports
``pyetcd``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from lessor import Context, Partition, Unavailable
from lessor.etcd import EtcdLessor
from lessor.etcd.aio_client_transport import AsyncClientTransport
from lessor.etcd.transport import WatchEvent
from lessor.testing import LocalEtcd

etcd3 = pytest.importorskip("etcd3", reason="runs in `nox -s etcd3_client` (needs etcd3 0.12)")

P = Partition


@pytest.fixture
def etcd3_client(etcd_server: LocalEtcd) -> Iterator[Any]:
    host, port = etcd_server.endpoint.rsplit(":", 1)
    client = etcd3.client(host=host, port=int(port), timeout=5)
    yield client
    client.close()


def test_etcd3_client_leases_and_excludes(etcd3_client: Any, etcd_server: LocalEtcd) -> None:
    assert type(etcd3_client).__module__.startswith("etcd3.")
    host, port = etcd_server.endpoint.rsplit(":", 1)
    other_client = etcd3.client(host=host, port=int(port), timeout=5)
    with (
        EtcdLessor(client=etcd3_client, prefix="/etcd3/") as via_etcd3,
        EtcdLessor(client=other_client, prefix="/etcd3/") as other,
    ):
        with via_etcd3.lease("s", P(0, 10), 30) as a:
            assert a.partitions == [P(0, 10)]
            with other.lease("s", P(0, 20), 30) as b:
                assert b.partitions == [P(10, 20)]
                assert b.token > a.token
        with via_etcd3.lease("s", P(0, 20), 30) as c:
            assert c.partitions == [P(0, 20)]
        value, _ = etcd3_client.get("/etcd3/s/s")
        assert value is not None and b'"ranges"' in value
    other_client.close()
    assert "pyetcd" not in sys.modules
    other_client.close()
    assert "pyetcd" not in sys.modules


def test_etcd3_client_errors_are_lessors() -> None:
    with LocalEtcd() as server:
        host, port = server.endpoint.rsplit(":", 1)
        client = etcd3.client(host=host, port=int(port), timeout=1)
        with EtcdLessor(client=client, acquire_timeout=1.0) as it:
            server.stop()
            with pytest.raises(Unavailable):
                it.with_lease(Context.background(), "s", P(0, 1), 5, lambda c, p: None)
        client.close()


def test_etcd3_client_from_asyncio(etcd3_client: Any, prefix: str) -> None:
    """What ``AsyncEtcdLessor(client=...)`` calls etcd through: the same client, from asyncio."""
    key = prefix.encode() + b"k"

    async def main() -> None:
        transport = AsyncClientTransport(etcd3_client)
        rpc = transport.rpc
        grant = await transport.lease("LeaseGrant", rpc.LeaseGrantRequest(TTL=10), 5.0, "t")
        put = await transport.kv("Put", rpc.PutRequest(key=key, value=b"v", lease=grant.ID),
                                 5.0, "t")  # fmt: skip
        assert await transport.keep_alive(grant.ID, 5.0, "renewing") == 10
        revision = int(put.header.revision)
        async with await transport.watch(key, key + b"\x00", revision + 1, 5.0, "t") as watch:
            await transport.lease("LeaseRevoke", rpc.LeaseRevokeRequest(ID=grant.ID), 5.0, "t")
            event = await anext(watch)
            assert (event.kind, event.key) == ("DELETE", key)
            assert isinstance(event, WatchEvent)
        await transport.close()

    asyncio.run(main())
    assert "pyetcd" not in sys.modules
