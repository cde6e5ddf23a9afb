"""Stand-ins for gRPC in tests that drive a transport without etcd: a failed call, an answer."""

from __future__ import annotations

from typing import Any

import grpc


class FakeRpcError(grpc.RpcError):
    """A failed call as gRPC reports one: a status code and its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Reply:
    """An answer with the given fields (``Reply(token="t").token == "t"``)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)
