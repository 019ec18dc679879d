"""Which TLS servers the gateway trusts: Kong's `ca_certificates:` entity and the contexts built
from it at config load, for upstream services and for the identity providers plugins call.

- A service trusts the CAs its `ca_certificates` lists (Kong's meaning: they replace the system
  store for that service); without the list, the system store (`SSL_CERT_FILE` and
  `SSL_CERT_DIR` are honoured, as by OpenSSL everywhere). `tls_verify: false` turns checking off.
- Identity providers are trusted by the system store plus every configured CA certificate: a
  private CA in `ca_certificates` is how a config trusts an IdP on an internal network.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

from fastgw.config.schema import Reader, join

PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True, slots=True)
class CaCertificate:
    id: str | None
    pem: str = field(repr=False)
    digest: str  # SHA-256 of the DER form, hex: Kong's `cert_digest`
    path: str  # where it was configured, e.g. "ca_certificates[0]"


def read_ca_certificates(
    raw: object, path: str, problems: list[tuple[str, str]]
) -> tuple[CaCertificate, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append((path, "must be an array"))
        return ()
    result: list[CaCertificate] = []
    seen_ids: dict[str, str] = {}
    for index, item in enumerate(raw):
        reader = Reader(item, join(path, index), problems)
        pem = reader.string("cert", required=True)
        digest = reader.string("cert_digest")
        cert_id = reader.string("id")
        reader.strings("tags")
        reader.ignore("created_at", "updated_at")
        reader.finish()
        if pem is None:
            continue
        actual = _check_ca(reader, pem)
        if actual is None:
            continue
        if digest is not None and digest.lower() != actual:
            reader.error("cert_digest", "does not match cert (SHA-256 of its DER form)")
            continue
        if cert_id is not None:
            first = seen_ids.setdefault(cert_id, reader.path)
            if first != reader.path:
                reader.error("id", f"is already used by {first}")
                continue
        result.append(CaCertificate(cert_id, pem, actual, reader.path))
    return tuple(result)


def _check_ca(reader: Reader, pem: str) -> str | None:
    """The DER digest of `pem` when it is one CA certificate; records the problem otherwise."""
    # imported here: a config without CA certificates (most) does not pay for x509 parsing
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID

    if pem.count(PEM_BEGIN) != 1:
        reader.error("cert", "must hold exactly one PEM certificate")
        return None
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        reader.error("cert", "is not a valid PEM certificate")
        return None
    try:
        constraints = certificate.extensions.get_extension_for_oid(
            ExtensionOID.BASIC_CONSTRAINTS
        ).value
        is_ca = isinstance(constraints, x509.BasicConstraints) and constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        # Kong's check too: a leaf certificate cannot anchor a chain
        reader.error("cert", "is not a CA certificate (its basic constraints lack CA:TRUE)")
        return None
    der = ssl.PEM_cert_to_DER_cert(pem)
    return hashlib.sha256(der).hexdigest()


def pem_bundle(certificates: Iterable[CaCertificate]) -> str:
    return "\n".join(certificate.pem.strip() for certificate in certificates)


def upstream_context(verify: bool, trusted: tuple[CaCertificate, ...]) -> ssl.SSLContext:
    """The client context towards one https service (built once, at config load)."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if not trusted:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checks and verification on
    context.load_verify_locations(cadata=pem_bundle(trusted))
    return context
