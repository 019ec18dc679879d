"""Test certificates: a throwaway CA and server certificates it signs, written as PEM files.

Made with `cryptography` at the start of a test session (nothing secret is checked in), so that
real TLS clients (curl --cacert, openssl s_client, Python ssl) can verify the gateway.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path

    def texts(self) -> tuple[str, str]:
        return self.cert.read_text(), self.key.read_text()


@dataclass(frozen=True)
class TestPki:
    ca: Path  # the CA certificate clients trust
    default: CertFiles  # gw.test, localhost, 127.0.0.1 (RSA)
    other: CertFiles  # api.example.test, *.wild.test (ECDSA): a certificate entity's
    stray: CertFiles  # signed by the CA, for a mismatch with `default`'s key


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: object, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_pki(directory: Path) -> TestPki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fastgw test CA"))
        .issuer_name(_name("fastgw test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, names: list[str], key: object) -> CertFiles:
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())  # type: ignore[attr-defined]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        files = CertFiles(directory / f"{stem}.crt", directory / f"{stem}.key")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files.key)
        return files

    return TestPki(
        ca=ca_path,
        default=issue(
            "default", ["gw.test", "localhost", "127.0.0.1"], rsa.generate_private_key(65537, 2048)
        ),
        other=issue(
            "other", ["api.example.test", "*.wild.test"], ec.generate_private_key(ec.SECP256R1())
        ),
        stray=issue("stray", ["stray.test"], ec.generate_private_key(ec.SECP256R1())),
    )


_SESSION: list[TestPki] = []


def session_pki() -> TestPki:
    """One PKI per test process, made on first use (in a temporary directory)."""
    if not _SESSION:
        import tempfile

        _SESSION.append(make_pki(Path(tempfile.mkdtemp(prefix="fastgw-test-pki-"))))
    return _SESSION[0]
