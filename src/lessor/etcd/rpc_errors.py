"""What a failed gRPC call to etcd means: lessor's errors, translated from the call's status.

Every failure a transport meets leaves it through :func:`translate`, as one of:

* :class:`RetryableRpc`: another attempt, maybe on another endpoint, can succeed (the member
  was unreachable, overloaded, or answered too late). Whether a write took effect is unknown.
* :class:`LeaseNotFound`: etcd does not know the lease the request named.
* :class:`~lessor.errors.PermissionDenied`, :class:`~lessor.errors.Unavailable` or
  :class:`~lessor.errors.LessorError`, naming the endpoint and the operation: no retry helps.

:func:`retryable` and :func:`stale_token` are the two questions a transport asks of a status
before translating it: whether to move on to the next endpoint, and whether to log in again.
"""

from __future__ import annotations

import re

import grpc

from lessor.errors import LessorError, PermissionDenied, Unavailable

__all__ = [
    "AUTH_OLD_REVISION",
    "LeaseNotFound",
    "RetryableRpc",
    "retryable",
    "stale_token",
    "status_of",
    "translate",
]

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

# etcd's own strings, from api/v3rpc/rpctypes/error.go (etcd-io/etcd):
#   ErrGRPCNoSpace                = status.New(codes.ResourceExhausted,
#                                       "etcdserver: mvcc: database space exceeded")
#   ErrGRPCRequestTooManyRequests = status.New(codes.ResourceExhausted,
#                                       "etcdserver: too many requests")
#   ErrGRPCInvalidAuthToken       = status.New(codes.Unauthenticated,
#                                       "etcdserver: invalid auth token")
#   ErrGRPCAuthOldRevision        = status.New(codes.InvalidArgument,
#                                       "etcdserver: revision of auth store is old")
# RESOURCE_EXHAUSTED alone says nothing: NOSPACE lasts until an operator acts, "too many
# requests" (a member whose applied index lags its committed index) passes by itself, and
# gRPC uses the code too for a message over a size limit ("... larger than max (N vs. M)").
_NO_SPACE = "database space exceeded"
_TOO_MANY_REQUESTS = "etcdserver: too many requests"
_INVALID_AUTH_TOKEN = "invalid auth token"
AUTH_OLD_REVISION = "revision of auth store is old"
_TOO_LARGE = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")


class RetryableRpc(Exception):
    """A call failed in a way another attempt (maybe on another endpoint) can fix.

    Whether the request took effect is unknown: a write may have committed.
    """

    def __init__(self, endpoint: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"etcd {endpoint}: {code.name}: {details}")
        self.endpoint = endpoint
        self.code = code


class LeaseNotFound(Exception):
    """etcd does not know the lease a request named: it expired or was revoked."""


def retryable(code: object, details: str) -> bool:
    # etcd (3.5.16 at least) can answer a read it could not serve for want of quorum with
    # UNKNOWN "context deadline exceeded", racing gRPC's own DEADLINE_EXCEEDED.
    return (
        code in _RETRYABLE
        or (
            code == grpc.StatusCode.UNKNOWN
            and ("context deadline exceeded" in details or "context canceled" in details)
        )
        # An overloaded member refuses before proposing anything; another member, or this
        # one a moment later, can serve.
        or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_MANY_REQUESTS in details)
    )


def stale_token(code: object, details: str) -> bool:
    """etcd refused the request's auth token, and a new login can fix that.

    This is what etcd's Go client retries after logging in again (``shouldRefreshToken`` in
    client/v3/retry_interceptor.go: ``ErrInvalidAuthToken`` or ``ErrAuthOldRevision``): a
    simple token expires when idle (``--auth-token-ttl``), and any change to users, roles or
    permissions makes every token issued before it old, which a JWT token carries in itself.
    """
    return (code == grpc.StatusCode.UNAUTHENTICATED and _INVALID_AUTH_TOKEN in details) or (
        code == grpc.StatusCode.INVALID_ARGUMENT and AUTH_OLD_REVISION in details
    )


def _exhausted(endpoint: str, what: str, details: str) -> Exception:
    """What a RESOURCE_EXHAUSTED that is not "too many requests" (retryable) means.

    A message over a gRPC size limit is neither out of space nor passing: the same request
    would fail again. gRPC in this process says ``CLIENT: Received ...`` or ``CLIENT: Sent
    ...``; etcd's gRPC server says ``grpc: received message larger than max``.
    """
    found = _TOO_LARGE.search(details)
    if found is None and _NO_SPACE in details:
        return Unavailable(
            f"{what}: etcd {endpoint} is out of space ({details}); an operator must compact "
            "and defragment it and disarm the NOSPACE alarm"
        )
    if found is None:
        return LessorError(f"{what}: etcd {endpoint} failed: RESOURCE_EXHAUSTED: {details}")
    size, limit = f"{found[1]} bytes", f"{found[2]} bytes"
    if "CLIENT:" in details and "Received" in details:
        message, whose = f"etcd {endpoint}'s answer was {size}", "this client's receive limit"
        setting = "grpc.max_receive_message_length"
    elif "CLIENT:" in details:
        message, whose = f"the request to etcd {endpoint} was {size}", "this client's send limit"
        setting = "grpc.max_send_message_length"
    else:
        message, whose = f"the request to etcd {endpoint} was {size}", "etcd's limit"
        setting = "etcd's --max-request-bytes plus 512 KiB of gRPC overhead"
    return LessorError(f"{what}: {message}, over {whose} of {limit} ({setting}): {details}")


def status_of(err: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """A failed call's status code and details (UNKNOWN, and the text, when it has none)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else str(err)) or ""
    return code, details


def translate(err: grpc.RpcError, endpoint: str, what: str) -> Exception:
    """The exception a failed call becomes; ``what`` names the operation and section."""
    code, details = status_of(err)
    if retryable(code, details):
        return RetryableRpc(endpoint, code, details)
    if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
        return LeaseNotFound(details)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDenied(f"{what}: etcd {endpoint} refused: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT and (
        "authentication failed" in details or "user name" in details or AUTH_OLD_REVISION in details
    ):
        # Channels logs in again on an old token (see stale_token); a user's own client
        # (ClientTransport) must do so itself.
        refused = (
            "a token issued before its users or roles last changed (log in again)"
            if AUTH_OLD_REVISION in details
            else "the credentials"
        )
        return PermissionDenied(f"{what}: etcd {endpoint} refused {refused}: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return _exhausted(endpoint, what, details)
    return LessorError(f"{what}: etcd {endpoint} failed: {code.name}: {details}")
