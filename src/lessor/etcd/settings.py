"""How ``lessor.get(ctx, "etcd")`` finds its settings: the ctx first, then the environment.

Put an :class:`EtcdSettings` on the context (``ctx.with_value(EtcdSettings, settings)``), or
set the environment variables below. Only the endpoints are required.

=============================  ================================================================
``LESSOR_ETCD_ENDPOINTS``      comma-separated ``host:port`` list (required)
``LESSOR_ETCD_PREFIX``         key prefix, default ``/lessor/``
``LESSOR_ETCD_CA_CERT``        CA certificate file (PEM) to verify etcd with; turns on TLS
``LESSOR_ETCD_CERT``           client certificate file (PEM), with ``LESSOR_ETCD_KEY``
``LESSOR_ETCD_KEY``            client private key file (PEM)
``LESSOR_ETCD_USER``           etcd user name, with ``LESSOR_ETCD_PASSWORD``
``LESSOR_ETCD_PASSWORD``       etcd password
``LESSOR_ETCD_HOLDER``         label recorded with each lease, default ``<hostname>:<pid>``
=============================  ================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from lessor.context import Context
from lessor.etcd.transport import parse_endpoint

__all__ = ["ENVIRONMENT", "EtcdSettings"]

ENVIRONMENT = {
    "endpoints": "LESSOR_ETCD_ENDPOINTS",
    "prefix": "LESSOR_ETCD_PREFIX",
    "ca_cert": "LESSOR_ETCD_CA_CERT",
    "cert_cert": "LESSOR_ETCD_CERT",
    "cert_key": "LESSOR_ETCD_KEY",
    "user": "LESSOR_ETCD_USER",
    "password": "LESSOR_ETCD_PASSWORD",
    "holder": "LESSOR_ETCD_HOLDER",
}


_SECRET = "***"
"""What the repr of :class:`EtcdSettings` shows for a password that is set."""


@dataclass(frozen=True, slots=True, repr=False)
class EtcdSettings:
    """Everything the registered ``"etcd"`` factory passes to :class:`EtcdLessor`.

    Its repr (and str) shows a password that is set as ``'***'``: settings end up in logs,
    tracebacks and debuggers, a password must not.
    """

    endpoints: tuple[str, ...]
    prefix: str = "/lessor/"
    ca_cert: str | None = None
    cert_cert: str | None = None
    cert_key: str | None = None
    user: str | None = None
    password: str | None = None
    holder: str | None = None

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "password" and value is not None:
                value = _SECRET
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @classmethod
    def of(cls, ctx: Context) -> EtcdSettings:
        """The settings on ``ctx`` (``ctx.with_value(EtcdSettings, settings)``), or else those
        in the environment."""
        settings = ctx.value(EtcdSettings)
        if settings is None:
            return cls.from_environment()
        if not isinstance(settings, EtcdSettings):
            raise TypeError(
                f"ctx value for EtcdSettings must be one, got a {type(settings).__name__}"
            )
        return settings

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of an etcd lessor built with these settings."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {
            "endpoints": list(self.endpoints)
        }

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> EtcdSettings:
        env = os.environ if environ is None else environ
        raw = env.get(ENVIRONMENT["endpoints"], "").strip()
        if not raw:
            raise ValueError(
                f"the etcd lessor needs its endpoints: set {ENVIRONMENT['endpoints']} "
                "(e.g. '10.0.0.1:2379,10.0.0.2:2379') or put lessor.etcd.EtcdSettings on the ctx"
            )
        endpoints = []
        for part in raw.split(","):
            try:
                endpoints.append(parse_endpoint(part))
            except ValueError as e:
                raise ValueError(f"{ENVIRONMENT['endpoints']}: {e}") from None
        optional = {
            field: env.get(variable) or None
            for field, variable in ENVIRONMENT.items()
            if field != "endpoints"
        }
        prefix = optional.pop("prefix") or "/lessor/"
        return cls(endpoints=tuple(endpoints), prefix=prefix, **optional)
