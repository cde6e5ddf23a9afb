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
from lessor.testing import LocalEtcd, ServerTLS

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


@pytest.mark.parametrize("who", ["no client certificate", "wrong CA", "plain text"])
def test_refused_tls_is_unavailable_not_a_grpc_error(
    tls_etcd: LocalEtcd, pki: Path, who: str
) -> None:
    options: dict[str, str] = {
        "no client certificate": {"ca_cert": str(pki / "ca.pem")},
        "wrong CA": {
            "ca_cert": str(pki / "stranger-ca.pem"),
            "cert_cert": str(pki / "client.pem"),
            "cert_key": str(pki / "client.key"),
        },
        "plain text": {},
    }[who]  # type: ignore[assignment]
    with EtcdLessor(tls_etcd.endpoints, acquire_timeout=1.0, **options) as it, \
            pytest.raises(Unavailable, match=tls_etcd.endpoint):  # fmt: skip
        it.with_lease(Context.background(), "s", P(0, 10), 5, lambda c, p: None)
