"""Every TLS context of the gateway, built once at config load from PEM text: the HTTPS
listeners' server contexts, and the client contexts towards upstreams, health-check probes and
the services plugins call (identity providers).

A listener has a default certificate (kong.conf's ssl_cert / ssl_cert_key) and one context per
certificate entity, chosen by the SNI the client sends; an unknown or missing SNI gets the
default. The wire takes the ready contexts; nothing here runs per request.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from typing import Final, Protocol

# TLS 1.0 and 1.1 are deprecated (RFC 8996); Kong's default ssl_protocols are TLSv1.2 TLSv1.3.
MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2
ALPN_PROTOCOLS: Final = ("http/1.1",)  # HTTP/2 is not spoken here
# The attribute of the SSLObject where the SNI callback leaves the name the client sent.
SERVER_NAME_ATTRIBUTE: Final = "fastgw_server_name"


class TlsError(Exception):
    """A certificate or key that cannot be used; the message says why."""


class CertificatePair:
    """One certificate chain and its key, PEM text (plus an optional second pair of another key
    type, Kong's cert_alt / key_alt: RSA beside ECDSA)."""

    __slots__ = ("cert", "cert_alt", "key", "key_alt")

    def __init__(
        self, cert: str, key: str, cert_alt: str | None = None, key_alt: str | None = None
    ):
        self.cert = cert
        self.key = key
        self.cert_alt = cert_alt
        self.key_alt = key_alt


@contextlib.contextmanager
def _pem_files(*texts: str) -> Iterator[list[str]]:
    """The PEM texts in private files for load_cert_chain (which reads only files), removed
    after: the key never stays on disk."""
    with tempfile.TemporaryDirectory(prefix="fastgw-tls-") as directory:
        paths = []
        for index, text in enumerate(texts):
            path = os.path.join(directory, f"{index}.pem")
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(text)
            paths.append(path)
        yield paths


def _reason(error: ssl.SSLError) -> str:
    reason = getattr(error, "reason", None) or str(error)
    if "KEY_VALUES_MISMATCH" in reason:
        return "certificate does not match key"  # Kong's wording
    if reason in ("PEM lib", "NO_START_LINE", "NO_CERTIFICATE_OR_CRL_FOUND"):
        return "invalid PEM (cannot read the certificate or key)"
    return f"cannot be used: {reason}"


def check_pair(cert: str, key: str) -> None:
    """Kong's check: the certificate's public key is the key's. Raises TlsError."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(cert.encode())
    except ValueError:
        raise TlsError("invalid certificate: not a PEM X.509 certificate") from None
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError):
        raise TlsError("invalid key: not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.PEM
    if certificate.public_key().public_bytes(encoding, public) != private.public_key().public_bytes(
        encoding, public
    ):
        raise TlsError("certificate does not match key")  # Kong's wording


def _load(context: ssl.SSLContext, cert: str, key: str) -> None:
    check_pair(cert, key)
    with _pem_files(cert, key) as (cert_path, key_path):
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as error:
            raise TlsError(_reason(error)) from None


def server_context(pair: CertificatePair) -> ssl.SSLContext:
    """A server context for one certificate: TLS 1.2+, ALPN http/1.1, OpenSSL's session cache
    and tickets (resumption) as the ssl module leaves them on. Raises TlsError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _load(context, pair.cert, pair.key)
    if pair.cert_alt is not None and pair.key_alt is not None:
        _load(context, pair.cert_alt, pair.key_alt)
    return context


def read_pem_file(path: str) -> str:
    """A PEM file's text; raises TlsError naming the problem."""
    try:
        with open(path, encoding="ascii") as file:
            return file.read()
    except OSError as error:
        raise TlsError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise TlsError(f"{path} is not PEM") from None


class SniContexts:
    """The listeners' contexts: certificates by server name (exact, then `*.` / `.*` wildcard),
    and the default for any other name or none."""

    __slots__ = ("default", "exact", "prefixes", "suffixes")

    def __init__(
        self,
        default: ssl.SSLContext,
        named: Sequence[tuple[Sequence[str], ssl.SSLContext]] = (),
    ) -> None:
        self.default = default
        self.exact: dict[str, ssl.SSLContext] = {}
        self.suffixes: list[tuple[str, ssl.SSLContext]] = []  # "*.example.com" -> ".example.com"
        self.prefixes: list[tuple[str, ssl.SSLContext]] = []  # "example.*" -> "example."
        for names, context in named:
            for name in names:
                name = name.lower()
                if name.startswith("*."):
                    self.suffixes.append((name[1:], context))
                elif name.endswith(".*"):
                    self.prefixes.append((name[:-1], context))
                else:
                    self.exact.setdefault(name, context)
        # the longest wildcard is the most specific
        self.suffixes.sort(key=lambda item: -len(item[0]))
        self.prefixes.sort(key=lambda item: -len(item[0]))
        if named:
            default.sni_callback = self._select  # type: ignore[assignment]
        else:
            default.sni_callback = _remember_name  # type: ignore[assignment]

    def for_name(self, name: str) -> ssl.SSLContext:
        name = name.lower()
        context = self.exact.get(name)
        if context is not None:
            return context
        for suffix, context in self.suffixes:
            if name.endswith(suffix) and len(name) > len(suffix):
                return context
        for prefix, context in self.prefixes:
            if name.startswith(prefix) and len(name) > len(prefix):
                return context
        return self.default

    def _select(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        _remember_name(ssl_object, server_name, context)
        if server_name:
            chosen = self.for_name(server_name)
            if chosen is not context:
                ssl_object.context = chosen


def _remember_name(
    ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
) -> None:
    """Keep the SNI for routing (routes' `snis`): the SSLObject gives no other way to read it."""
    with contextlib.suppress(AttributeError):
        setattr(ssl_object, SERVER_NAME_ATTRIBUTE, (server_name or "").lower())


def server_name_of(ssl_object: object) -> bytes:
    """The SNI the client sent (lower case), b"" when it sent none."""
    name = getattr(ssl_object, SERVER_NAME_ATTRIBUTE, "")
    return name.encode("idna") if name and not name.isascii() else name.encode()


# -- towards other servers ------------------------------------------------------------------------


def _unverified() -> ssl.SSLContext:
    """`tls_verify: false` (Kong's word): encrypted, but any certificate and name is taken."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def upstream_context(verify: bool, ca_pem: str | None = None) -> ssl.SSLContext:
    """Towards an https service or an https health-check probe. `ca_pem` (the service's
    `ca_certificates`, Kong's meaning) replaces the system store; without it, the system store
    (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured, as by OpenSSL everywhere)."""
    if not verify:
        return _unverified()
    if not ca_pem:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checks and verification on
    context.load_verify_locations(cadata=ca_pem)
    return context


def client_context(verify: bool, ca_pem: str | None = None) -> ssl.SSLContext:
    """Towards a service a plugin calls (an IdP): the system store plus `ca_pem` (every
    configured CA certificate: how a config trusts an IdP on an internal network)."""
    if not verify:
        return _unverified()
    context = ssl.create_default_context()
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    return context


# -- HTTPS listeners -------------------------------------------------------------------------------


class _HasPairAndNames(Protocol):
    @property
    def pair(self) -> CertificatePair: ...
    @property
    def snis(self) -> tuple[str, ...]: ...


def sni_contexts(
    default: CertificatePair | None, certificates: Sequence[_HasPairAndNames]
) -> ssl.SSLContext:
    """The context an HTTPS listener takes: the default certificate, switching by SNI to a
    certificate entity's. Raises TlsError (config validation has checked every pair)."""
    if default is None:
        raise TlsError("an ssl listener needs ssl_cert and ssl_cert_key")
    named = [(certificate.snis, server_context(certificate.pair)) for certificate in certificates]
    return SniContexts(server_context(default), named).default
