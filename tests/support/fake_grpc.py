"""Stand-ins for gRPC in tests that drive a transport without etcd: a failed call, an answer."""

from __future__ import annotations

from typing import Any

from lessor.etcd.stream_messages import Refused

FakeRpcError = Refused
"""A failed call as gRPC reports one, a status code and its details: ``FakeRpcError(code,
details)``. The transports' own stand-in for a failure inside a stream's answer serves."""


class Reply:
    """An answer with the given fields (``Reply(token="t").token == "t"``)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)
