"""The fault proxy delays, blackholes and resets real TCP connections on loopback."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from lessor import Context, Partition, Unavailable
from lessor.etcd import EtcdLessor
from lessor.testing import FaultProxy, LocalEtcd


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _round_trip(address: str, payload: bytes = b"ping", timeout: float = 5.0) -> float:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        started = time.monotonic()
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            got += chunk
        assert got == payload
        return time.monotonic() - started


def test_delay_is_added_each_way(echo: str) -> None:
    with FaultProxy(echo) as direct, FaultProxy(echo, delay=0.05) as slow:
        assert _round_trip(direct.address) < 0.05
        assert 0.1 <= _round_trip(slow.address) < 0.5  # 50 ms there, 50 ms back
        slow.set_delay(0)
        assert _round_trip(slow.address) < 0.05
        big = bytes(range(256)) * 4096  # 1 MiB keeps its order through the queue
        assert _round_trip(direct.address, big) < 5


def test_blackhole_and_heal(echo: str) -> None:
    with FaultProxy(echo) as proxy:
        host, port = proxy.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=0.3) as s:
            proxy.blackhole()
            s.sendall(b"lost?")
            with pytest.raises(TimeoutError):
                s.recv(10)
            proxy.heal()
            s.settimeout(5)
            assert s.recv(10) == b"lost?"  # held back, then delivered, as TCP retransmits


def test_reset_closes_connections(echo: str) -> None:
    with FaultProxy(echo) as proxy:
        host, port = proxy.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
            proxy.reset()
            assert s.recv(1) == b""  # closed by the proxy
        assert _round_trip(proxy.address) < 1  # new connections still work


def test_lessor_through_a_slow_then_cut_link() -> None:
    with LocalEtcd() as server, FaultProxy(server.endpoint, delay=0.005) as link, \
            EtcdLessor([link.address], acquire_timeout=1.0) as it:  # fmt: skip
        with it.lease("s", Partition(0, 10), 5) as lease:
            assert lease.partitions == [Partition(0, 10)]
        link.blackhole()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            it.with_lease(Context.background().with_timeout(1.0), "s", Partition(0, 10), 5,
                          lambda c, p: None)  # fmt: skip
        assert time.monotonic() - started < 2.5  # by the 1 s deadline, not rpc_timeout (5 s)
        link.heal()
        with it.lease("s", Partition(0, 10), 5) as lease:
            assert lease.partitions == [Partition(0, 10)]
