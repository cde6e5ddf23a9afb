"""One datacenter's helper process, run inside that datacenter's network namespace.

    ip netns exec <ns> python dc_agent.py '<json config>'

It forwards the other datacenters' service addresses across the bridge through
:class:`~lessor.testing.FaultProxy` (``config["proxies"]``: ``name``, ``listen``,
``target``, ``delay``), so every byte that leaves the datacenter is delayed, and it is the
test's eyes inside the namespace, which the test process (in the root namespace, where
nothing is addressed) cannot reach itself.

Protocol: prints ``{"ready": true}`` once every proxy listens; then answers one JSON line per
JSON command line on stdin, ``{"error": "..."}`` when a command fails. Exits at end of input.

* ``{"cmd": "status", "endpoint": e}``: etcd's maintenance Status of ``e`` (the fields of
  :class:`lessor.testing.MemberStatus`), or ``{"status": null}`` if it does not answer.
* ``{"cmd": "members", "endpoint": e}``: the cluster's members as ``e`` lists them.
* ``{"cmd": "rtt", "endpoint": e, "op": "range" | "put", "n": n}``: ``n`` timed calls (after
  one untimed call that opens the connection), in milliseconds. ``range`` is a serializable
  read, answered by the member itself: one network round trip to it. ``put`` must be
  committed by a quorum: round trips between members too.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any

import grpc
import pyetcd.etcdrpc as rpc

from lessor.testing import FaultProxy, member_status

_PROBE_KEY = b"/lessor-datacenters-probe/"


class Agent:
    def __init__(self, name: str) -> None:
        self.name = name
        self._channels: dict[str, grpc.Channel] = {}

    def channel(self, endpoint: str) -> grpc.Channel:
        if endpoint not in self._channels:
            self._channels[endpoint] = grpc.insecure_channel(endpoint)
        return self._channels[endpoint]

    def status(self, endpoint: str, timeout: float = 0.5) -> dict[str, int] | None:
        status = member_status(self.channel(endpoint), timeout)
        return dataclasses.asdict(status) if status is not None else None

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        endpoint: str = request["endpoint"]
        if cmd == "status":
            return {"status": self.status(endpoint)}
        if cmd == "members":
            answer = rpc.ClusterStub(self.channel(endpoint)).MemberList(
                rpc.MemberListRequest(), timeout=5
            )
            return {
                "members": [
                    {"id": m.ID, "name": m.name, "peer_urls": list(m.peerURLs),
                     "client_urls": list(m.clientURLs)}
                    for m in answer.members
                ]
            }  # fmt: skip
        if cmd == "rtt":
            kv = rpc.KVStub(self.channel(endpoint))
            key = _PROBE_KEY + self.name.encode()
            if request["op"] == "range":

                def call() -> None:
                    kv.Range(rpc.RangeRequest(key=key, serializable=True), timeout=5)
            elif request["op"] == "put":

                def call() -> None:
                    kv.Put(rpc.PutRequest(key=key, value=b"x"), timeout=5)
            else:
                raise ValueError(f"unknown rtt op {request['op']!r}")
            call()  # connects
            times = []
            for _ in range(int(request["n"])):
                started = time.perf_counter()
                call()
                times.append((time.perf_counter() - started) * 1e3)
            return {"ms": times}
        raise ValueError(f"unknown command {cmd!r}")

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def main(cfg: dict[str, Any]) -> int:
    proxies = [
        FaultProxy(p["target"], listen=p["listen"], delay=float(p["delay"])) for p in cfg["proxies"]
    ]
    try:
        for proxy in proxies:
            proxy.start()
        agent = Agent(cfg["name"])
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            try:
                reply = agent.handle(json.loads(line))
            except Exception as e:  # reported to the test, which decides
                reply = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps(reply), flush=True)
        agent.close()
    finally:
        for proxy in proxies:
            proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
