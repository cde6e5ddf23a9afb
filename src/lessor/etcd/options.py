"""The settings every etcd lessor takes, checked once: :class:`Options`.

``EtcdLessor`` and ``AsyncEtcdLessor`` take the same keyword arguments with the same meaning,
defaults and errors (documented on :class:`~lessor.etcd.lessor.EtcdLessor`); each then opens
its own kind of connection from the same :class:`Options`.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lessor import checks
from lessor.etcd.channels import TLSConfig
from lessor.etcd.keys import validate_prefix
from lessor.etcd.state import TOMBSTONE

__all__ = ["Options"]


@dataclass(frozen=True, slots=True)
class Options:
    """An etcd lessor's checked settings."""

    endpoints: Sequence[str] | None  # exactly one of endpoints and client is set
    client: Any
    tls: TLSConfig | None
    user: str | None
    password: str | None
    endpoint_order: str
    prefix: str
    holder: str
    rpc_timeout: float
    release_timeout: float
    acquire_timeout: float
    margin: float
    share_leases: bool

    @classmethod
    def check(
        cls,
        kind: str,
        endpoints: Sequence[str] | None,
        *,
        client: Any,
        prefix: str,
        holder: str | None,
        ca_cert: str | None,
        cert_cert: str | None,
        cert_key: str | None,
        user: str | None,
        password: str | None,
        rpc_timeout: float,
        release_timeout: float,
        endpoint_order: str,
        acquire_timeout: float,
        margin: float,
        share_leases: bool,
        lease_reuse: float | None,
    ) -> Options:
        """Check a ``kind`` lessor's arguments (``kind`` names it in errors); raise the error
        that names the first one that is wrong."""
        prefix = validate_prefix(prefix)
        rpc_timeout = checks.duration(rpc_timeout, "rpc_timeout")
        release_timeout = checks.duration(release_timeout, "release_timeout")
        acquire_timeout = checks.duration(acquire_timeout, "acquire_timeout")
        margin = checks.duration(margin, "margin", zero=True)
        checks.flag(share_leases, "share_leases")
        if lease_reuse is not None:
            lease_reuse = checks.duration(lease_reuse, "lease_reuse", zero=True)
            warnings.warn(
                f"{kind}(lease_reuse=...) is deprecated: etcd leases are shared by renewal, "
                "with no slack; pass share_leases=False for one lease per acquisition",
                DeprecationWarning,
                stacklevel=3,
            )
            share_leases = share_leases and lease_reuse > 0
        tls = None
        if client is not None:
            if endpoints is not None:
                raise ValueError("give endpoints or client, not both")
            if any(v is not None for v in (ca_cert, cert_cert, cert_key, user, password)):
                raise ValueError("TLS and auth options apply to endpoints; configure the client")
        elif endpoints is not None:
            if any(v is not None for v in (ca_cert, cert_cert, cert_key)):
                tls = TLSConfig(ca_cert, cert_cert, cert_key)
        else:
            raise ValueError(f"{kind} needs endpoints (['host:port', ...]) or a client")
        if holder is not None:
            checks.instance(holder, "holder", str, "a str or None")
        if holder is not None and holder.encode("utf-8", "replace") == TOMBSTONE:
            raise ValueError(f"holder must not be {holder!r}: that marks abandoned acquisitions")
        return cls(
            endpoints=endpoints,
            client=client,
            tls=tls,
            user=user,
            password=password,
            endpoint_order=endpoint_order,
            prefix=prefix,
            holder=holder if holder is not None else f"{socket.gethostname()}:{os.getpid()}",
            rpc_timeout=rpc_timeout,
            release_timeout=release_timeout,
            acquire_timeout=acquire_timeout,
            margin=margin,
            share_leases=share_leases,
        )
