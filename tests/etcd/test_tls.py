"""TLS to etcd: a CA, a server certificate for 127.0.0.1, and client certificates."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lessor import Context, Partition, Unavailable
from lessor.etcd import EtcdLessor
from lessor.etcd.channels import TLSConfig
from lessor.etcd.transport import RetryableRpc
from lessor.testing import LocalEtcd, ServerTLS
from tests.support.aio_bridge import KINDS, our_channels

P = Partition


def _issue(
    directory: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *, server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca = _issue(d, "ca", None)
    _issue(d, "server", ca, server=True)
    _issue(d, "client", ca)
    _issue(d, "stranger-ca", None)
    return d


@pytest.fixture(scope="module")
def tls_etcd(pki: Path) -> Iterator[LocalEtcd]:
    tls = ServerTLS(
        cert_file=str(pki / "server.pem"),
        key_file=str(pki / "server.key"),
        ca_file=str(pki / "ca.pem"),
        probe_cert_file=str(pki / "client.pem"),
        probe_key_file=str(pki / "client.key"),
    )
    with LocalEtcd(tls=tls) as server:
        yield server


def test_leases_over_mutual_tls(tls_etcd: LocalEtcd, pki: Path) -> None:
    with (
        EtcdLessor(
            tls_etcd.endpoints,
            ca_cert=str(pki / "ca.pem"),
            cert_cert=str(pki / "client.pem"),
            cert_key=str(pki / "client.key"),
        ) as it,
        it.lease("s", P(0, 10), 5) as lease,
    ):
        assert lease.partitions == [P(0, 10)]


REFUSED = ["no client certificate", "wrong CA", "plain text"]


def _refused(pki: Path, who: str) -> dict[str, str]:
    """The TLS options (``EtcdLessor``'s) with which ``who`` is refused."""
    return {
        "no client certificate": {"ca_cert": str(pki / "ca.pem")},
        "wrong CA": {
            "ca_cert": str(pki / "stranger-ca.pem"),
            "cert_cert": str(pki / "client.pem"),
            "cert_key": str(pki / "client.key"),
        },
        "plain text": {},
    }[who]


@pytest.mark.parametrize("who", REFUSED)
def test_refused_tls_is_unavailable_not_a_grpc_error(
    tls_etcd: LocalEtcd, pki: Path, who: str
) -> None:
    options = _refused(pki, who)
    with EtcdLessor(tls_etcd.endpoints, acquire_timeout=1.0, **options) as it, \
            pytest.raises(Unavailable, match=tls_etcd.endpoint):  # fmt: skip
        it.with_lease(Context.background(), "s", P(0, 10), 5, lambda c, p: None)


# -- our own channels, threaded and asyncio (the transports under EtcdLessor and AsyncEtcdLessor) --


@pytest.mark.parametrize("kind", KINDS)
def test_channels_over_mutual_tls(tls_etcd: LocalEtcd, pki: Path, kind: str) -> None:
    tls = TLSConfig(str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key"))
    channels = our_channels(kind, tls_etcd.endpoints, tls=tls)
    try:
        channels.kv("Put", channels.rpc.PutRequest(key=b"/tls", value=b"v"), 5.0, "t")
        found = channels.kv("Range", channels.rpc.RangeRequest(key=b"/tls"), 5.0, "t")
        assert [kv.value for kv in found.kvs] == [b"v"]
    finally:
        channels.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("who", REFUSED)
def test_channels_refused_tls_is_retryable_naming_the_endpoint(
    tls_etcd: LocalEtcd, pki: Path, who: str, kind: str
) -> None:
    options = _refused(pki, who)
    tls = TLSConfig(**options) if options else None
    channels = our_channels(kind, tls_etcd.endpoints, tls=tls)
    try:
        with pytest.raises(RetryableRpc, match=tls_etcd.endpoint):
            channels.kv("Range", channels.rpc.RangeRequest(key=b"/tls"), 2.0, "t")
    finally:
        channels.close()
