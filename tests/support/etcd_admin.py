"""What the etcd tests do to a real etcd as its operator: look with a pyetcd client, turn auth on,
add users.

pyetcd (and cryptography) are imported only when called: the ``etcd3_client`` session must never
load pyetcd (see ``tests/etcd/test_etcd3_client.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lessor.testing import LocalEtcd


@contextlib.contextmanager
def admin_client(endpoint: str, **credentials: str) -> Iterator[Any]:
    """A pyetcd client to ``endpoint`` (``host:port``), to look at what the lessor stored."""
    import pyetcd  # noqa: PLC0415

    host, port = endpoint.rsplit(":", 1)
    client = pyetcd.client(host=host, port=int(port), timeout=5, **credentials)
    try:
        yield client
    finally:
        client.close()


def enable_auth(server: LocalEtcd) -> None:
    """root, and a user 'app' that may read and write /allowed/ only."""
    import pyetcd  # noqa: PLC0415

    rpc = pyetcd.etcdrpc
    with admin_client(server.endpoint) as admin:
        auth = admin.authstub
        auth.UserAdd(rpc.AuthUserAddRequest(name="root", password="rootpw"))
        auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"))
        auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
        auth.UserAdd(rpc.AuthUserAddRequest(name="app", password="apppw"))
        auth.RoleAdd(rpc.AuthRoleAddRequest(name="app-rw"))
        auth.RoleGrantPermission(
            rpc.AuthRoleGrantPermissionRequest(
                name="app-rw",
                perm=rpc.Permission(
                    permType=rpc.Permission.READWRITE, key=b"/allowed/", range_end=b"/allowed0"
                ),
            )
        )
        auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="app", role="app-rw"))
        auth.AuthEnable(rpc.AuthEnableRequest())


def add_user(server: LocalEtcd, name: str) -> None:
    """What an operator does: change the auth store, which makes older JWT tokens old."""
    import pyetcd  # noqa: PLC0415

    with admin_client(server.endpoint, user="root", password="rootpw") as admin:
        admin.authstub.UserAdd(
            pyetcd.etcdrpc.AuthUserAddRequest(name=name, password=f"{name}pw"),
            timeout=5,
            metadata=admin.metadata,
        )


def rsa_key_pair(directory: Path) -> tuple[Path, Path]:
    """A new RSA key pair in ``directory``, as PEM files: (private, public)."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / "jwt.key", directory / "jwt.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@contextlib.contextmanager
def etcd_with_auth(tokens: str, directory: Path) -> Iterator[LocalEtcd]:
    """An etcd with auth on (root, and 'app' confined to /allowed/), issuing ``tokens``:
    ``"jwt"`` (signed with RS256; they carry the auth revision they were issued at, so they go
    stale) or ``"simple"``."""
    args: list[str] = []
    if tokens == "jwt":
        private, public = rsa_key_pair(directory)
        args = ["--auth-token",
                f"jwt,pub-key={public},priv-key={private},sign-method=RS256,ttl=10m"]  # fmt: skip
    server = LocalEtcd(extra_args=args)
    try:
        server.start()
        enable_auth(server)
        yield server
    finally:
        server.close()
