"""An in-memory model of the etcd semantics the lessor relies on, on a clock the test moves.

It answers the lessor's own protobuf requests (``pyetcd.etcdrpc``), so the real Txn builders of
``state.py`` and the real lease pool run against it:

* the KV store with revisions: a Txn that writes gets exactly one new revision, shared by its
  writes; its ops apply in order (a read after a write in the same branch sees it);
  ``create_revision``, ``mod_revision`` and ``version`` per key;
* Txn compares on VERSION, CREATE, MOD, VALUE and LEASE (a VALUE compare on a missing key is
  false, as in etcd), with ``range_end``; Txns nested in a branch (etcd >= 3.3), whose
  branches are decided, as etcd does, from the state before the outer Txn writes;
* leases: granted with the TTL asked, ended at ``grant time + TTL`` by :meth:`EtcdModel.expire`
  or by a revoke, deleting every key attached; a put naming an unknown lease refuses the whole
  Txn with "requested lease not found" (:class:`LeaseNotFound` here);
* the checks etcd makes before it applies a Txn (``api/v3rpc/key.go``), refused whole as
  etcd refuses them (``INVALID_ARGUMENT``, a :class:`LessorError` here): more than
  :data:`MAX_TXN_OPS` compares or ops in a branch (a nested Txn gets the room its parent
  leaves), and a key put twice, or put and deleted, in one branch and the Txns nested in it;
* faults, one call at a time (:class:`ModelTransport`): a reply lost after the call applied,
  a call dropped before it applied, and a call *delayed*: its caller is told it failed, and
  the model applies it whenever the test says (a commit that lands after its sender gave up).

It is not etcd: no watches, no compaction, no members. Tests that need those use a real one.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from lessor.errors import LessorError
from lessor.etcd.transport import LeaseNotFound, RetryableRpc

__all__ = ["MAX_TXN_OPS", "EtcdModel", "FakeClock", "ModelTransport"]

MAX_TXN_OPS = 128
"""etcd's ``--max-txn-ops`` default."""

rpc: Any = importlib.import_module("pyetcd.etcdrpc")


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@dataclass
class _Key:
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass
class _Lease:
    ttl: int
    expiry: float
    keys: set[bytes] = field(default_factory=set)


_TARGETS = {
    rpc.Compare.VERSION: "version",
    rpc.Compare.CREATE: "create_revision",
    rpc.Compare.MOD: "mod_revision",
    rpc.Compare.VALUE: "value",
    rpc.Compare.LEASE: "lease",
}


class EtcdModel:
    """One etcd cluster's KV store and leases."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.revision = 1
        self.kvs: dict[bytes, _Key] = {}
        self.leases: dict[int, _Lease] = {}
        self._next_lease = 0x7A000
        self.delayed: list[tuple[str, str, Any]] = []  # (service, method, request)

    # -- time ----------------------------------------------------------------------------------

    def expire(self) -> None:
        """End every lease whose TTL has run out, as etcd's lessor does."""
        now = self.clock()
        for lease_id in [i for i, lease in self.leases.items() if lease.expiry <= now]:
            self._revoke(lease_id)

    # -- requests ------------------------------------------------------------------------------

    def call(self, service: str, method: str, request: Any) -> Any:
        if service == "kv" and method == "Txn":
            return self._txn(request)
        if service == "kv" and method == "DeleteRange":
            rev = self.revision + 1
            deleted = self._delete(request.key, request.range_end, rev)
            if deleted:
                self.revision = rev
            return rpc.DeleteRangeResponse(header=self._header(), deleted=deleted)
        if service == "lease" and method == "LeaseGrant":
            self._next_lease += 1
            ttl = max(1, int(request.TTL))
            self.leases[self._next_lease] = _Lease(ttl, self.clock() + ttl)
            return rpc.LeaseGrantResponse(header=self._header(), ID=self._next_lease, TTL=ttl)
        if service == "lease" and method == "LeaseKeepAlive":
            lease = self.leases.get(request.ID)
            if lease is not None and lease.expiry > self.clock():
                lease.expiry = self.clock() + lease.ttl
                return rpc.LeaseKeepAliveResponse(header=self._header(), ID=request.ID,
                                                  TTL=lease.ttl)  # fmt: skip
            return rpc.LeaseKeepAliveResponse(header=self._header(), ID=request.ID, TTL=0)
        if service == "lease" and method == "LeaseRevoke":
            if request.ID not in self.leases:
                raise LeaseNotFound("etcdserver: requested lease not found")
            self._revoke(request.ID)
            return rpc.LeaseRevokeResponse(header=self._header())
        raise NotImplementedError(f"{service}.{method}")

    def apply_delayed(self, index: int) -> None:
        """Apply a delayed call now; its caller was told long ago that it failed."""
        service, method, request = self.delayed.pop(index)
        with contextlib.suppress(LeaseNotFound):  # refused whole, as etcd would
            self.call(service, method, request)

    # -- the KV store --------------------------------------------------------------------------

    def _header(self) -> Any:
        return rpc.ResponseHeader(revision=self.revision)

    def _keys(self, key: bytes, range_end: bytes) -> list[bytes]:
        if not range_end:
            return [key] if key in self.kvs else []
        if range_end == b"\0":
            return sorted(k for k in self.kvs if k >= key)
        return sorted(k for k in self.kvs if key <= k < range_end)

    def _compare(self, c: Any) -> bool:
        keys = self._keys(c.key, c.range_end)
        target = _TARGETS[c.target]
        if not keys:
            if c.target == rpc.Compare.VALUE:
                return False  # "no way to represent a missing value": etcd fails the compare
            return self._compare_value(c, target, _Key(b"", 0, 0, 0, 0))
        return all(self._compare_value(c, target, self.kvs[k]) for k in keys)

    @staticmethod
    def _compare_value(c: Any, target: str, kv: _Key) -> bool:
        have: Any
        want: Any = getattr(c, target)
        have = {
            "version": kv.version,
            "create_revision": kv.create_revision,
            "mod_revision": kv.mod_revision,
            "value": kv.value,
            "lease": kv.lease,
        }[target]
        result = c.result
        if result == rpc.Compare.EQUAL:
            return bool(have == want)
        if result == rpc.Compare.NOT_EQUAL:
            return bool(have != want)
        if result == rpc.Compare.GREATER:
            return bool(have > want)
        return bool(have < want)

    def _txn(self, request: Any) -> Any:
        _check_size(request, MAX_TXN_OPS)
        _check_keys(request.success)
        _check_keys(request.failure)
        path = self._path(request)  # etcd decides every branch, nested ones too, up front
        self._check_leases(request, path)  # and refuses the whole Txn for an unknown lease
        rev = self.revision + 1
        responses, wrote = self._apply(request, path, rev)
        if wrote:
            self.revision = rev
        return rpc.TxnResponse(header=self._header(), succeeded=path[0], responses=responses)

    def _path(self, request: Any) -> tuple[bool, list[Any]]:
        """Which branch a Txn takes, and the paths of the Txns nested in that branch (etcd
        >= 3.3), all from the state before the Txn writes anything, as etcd decides them."""
        succeeded = all(self._compare(c) for c in request.compare)
        ops = request.success if succeeded else request.failure
        nested = [self._path(op.request_txn) for op in ops
                  if op.WhichOneof("request") == "request_txn"]  # fmt: skip
        return succeeded, nested

    def _check_leases(self, request: Any, path: tuple[bool, list[Any]]) -> None:
        nested = iter(path[1])
        for op in request.success if path[0] else request.failure:
            kind = op.WhichOneof("request")
            if kind == "request_put":
                lease = op.request_put.lease
                if lease and lease not in self.leases:
                    raise LeaseNotFound("etcdserver: requested lease not found")
            elif kind == "request_txn":
                self._check_leases(op.request_txn, next(nested))

    def _apply(
        self, request: Any, path: tuple[bool, list[Any]], rev: int
    ) -> tuple[list[Any], bool]:
        """Apply one Txn's branch in order; a nested Txn's writes share the outer revision."""
        nested = iter(path[1])
        ops = request.success if path[0] else request.failure
        wrote = False
        responses = []
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_range":
                r = op.request_range
                kvs = [self._kv_message(k, r.keys_only) for k in self._keys(r.key, r.range_end)]
                responses.append(
                    rpc.ResponseOp(response_range=rpc.RangeResponse(kvs=kvs, count=len(kvs)))
                )
            elif kind == "request_put":
                self._put(op.request_put, rev)
                wrote = True
                responses.append(rpc.ResponseOp(response_put=rpc.PutResponse()))
            elif kind == "request_delete_range":
                d = op.request_delete_range
                deleted = self._delete(d.key, d.range_end, rev)
                wrote = wrote or deleted > 0
                responses.append(
                    rpc.ResponseOp(response_delete_range=rpc.DeleteRangeResponse(deleted=deleted))
                )
            elif kind == "request_txn":
                inner_path = next(nested)
                inner, inner_wrote = self._apply(op.request_txn, inner_path, rev)
                wrote = wrote or inner_wrote
                responses.append(
                    rpc.ResponseOp(
                        response_txn=rpc.TxnResponse(succeeded=inner_path[0], responses=inner)
                    )
                )
            else:
                raise NotImplementedError(kind)
        return responses, wrote

    def _kv_message(self, key: bytes, keys_only: bool) -> Any:
        kv = self.kvs[key]
        return rpc.kv_pb2.KeyValue(
            key=key,
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            value=b"" if keys_only else kv.value,
            lease=kv.lease,
        )

    def _put(self, put: Any, rev: int) -> None:
        old = self.kvs.get(put.key)
        if old is not None and old.lease and old.lease in self.leases:
            self.leases[old.lease].keys.discard(put.key)
        create = old.create_revision if old is not None else rev
        version = old.version + 1 if old is not None else 1
        self.kvs[put.key] = _Key(put.value, create, rev, version, put.lease)
        if put.lease:
            self.leases[put.lease].keys.add(put.key)

    def _delete(self, key: bytes, range_end: bytes, rev: int) -> int:
        keys = self._keys(key, range_end)
        for k in keys:
            kv = self.kvs.pop(k)
            if kv.lease and kv.lease in self.leases:
                self.leases[kv.lease].keys.discard(k)
        return len(keys)

    def _revoke(self, lease_id: int) -> None:
        lease = self.leases.pop(lease_id)
        rev = self.revision + 1
        deleted = 0
        for k in sorted(lease.keys):
            if k in self.kvs:
                del self.kvs[k]
                deleted += 1
        if deleted:
            self.revision = rev


FAULTS = ("ok", "lost", "dropped", "delayed")
"""What can happen to one call: answered; applied but its reply lost; never applied; applied
later (its caller told it failed)."""


class ModelTransport:
    """The lessor's :class:`~lessor.etcd.transport.Transport` over an :class:`EtcdModel`.

    Set :attr:`fault` before a call: it applies to the next call only.
    """

    endpoint = "model:2379"

    def __init__(self, etcd: EtcdModel) -> None:
        self.endpoints = [self.endpoint]
        self.rpc = rpc
        self.etcd = etcd
        self.fault = "ok"
        self.calls = 0

    def _call(self, service: str, method: str, request: Any) -> Any:
        fault, self.fault = self.fault, "ok"
        self.calls += 1
        if fault == "dropped":
            raise RetryableRpc(self.endpoint, grpc.StatusCode.UNAVAILABLE, "dropped (model)")
        if fault == "delayed" and service == "kv":
            self.etcd.delayed.append((service, method, request))
            raise RetryableRpc(self.endpoint, grpc.StatusCode.DEADLINE_EXCEEDED, "delayed (model)")
        response = self.etcd.call(service, method, request)
        if fault in ("lost", "delayed"):
            raise RetryableRpc(self.endpoint, grpc.StatusCode.DEADLINE_EXCEEDED, "lost (model)")
        return response

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call("kv", method, request)

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call("lease", method, request)

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        response = self._call("lease", "LeaseKeepAlive", rpc.LeaseKeepAliveRequest(ID=lease_id))
        if response.TTL <= 0:
            raise LeaseNotFound("etcdserver: requested lease not found")
        return int(response.TTL)

    def close(self) -> None:
        pass


def _refused(details: str) -> LessorError:
    return LessorError(f"etcd model refused a Txn: INVALID_ARGUMENT: etcdserver: {details}")


def _check_size(request: Any, room: int) -> None:
    """etcd's ``checkTxnRequest``: a Txn's size is the largest of its compares and branches;
    a Txn nested in a branch gets the room its parent leaves."""
    size = max(len(request.compare), len(request.success), len(request.failure))
    if size > room:
        raise _refused("too many operations in txn request")
    for op in [*request.success, *request.failure]:
        if op.WhichOneof("request") == "request_txn":
            _check_size(op.request_txn, room - size)


def _check_keys(ops: Any) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """etcd's ``checkIntervals``: no key put twice, or put and deleted, by one branch and the
    Txns nested in it (a nested Txn's two branches may put the same key: only one applies).
    Returns the branch's puts and deletes."""
    deletes = [
        (op.request_delete_range.key, op.request_delete_range.range_end)
        for op in ops
        if op.WhichOneof("request") == "request_delete_range"
    ]
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        then_puts, then_deletes = _check_keys(op.request_txn.success)
        else_puts, else_deletes = _check_keys(op.request_txn.failure)
        for key in then_puts:
            if key in puts or _deleted(key, deletes):
                raise _refused("duplicate key given in txn request")
            puts.add(key)
        for key in else_puts:
            if (key in puts and key not in then_puts) or _deleted(key, deletes):
                raise _refused("duplicate key given in txn request")
            puts.add(key)
        deletes += then_deletes + else_deletes
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or _deleted(key, deletes):
            raise _refused("duplicate key given in txn request")
        puts.add(key)
    return puts, deletes


def _deleted(key: bytes, deletes: list[tuple[bytes, bytes]]) -> bool:
    for low, end in deletes:
        if key == low if not end else low <= key and (end == b"\0" or key < end):
            return True
    return False
