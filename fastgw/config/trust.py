"""Which TLS servers the gateway trusts: the contexts built at config load from Kong's
`ca_certificates:` entity, for upstream services and for the identity providers plugins call.

- A service trusts the CAs its `ca_certificates` lists (Kong's meaning: they replace the system
  store for that service); without the list, the system store (`SSL_CERT_FILE` and
  `SSL_CERT_DIR` are honoured, as by OpenSSL everywhere). `tls_verify: false` turns checking off.
- Identity providers are trusted by the system store plus every configured CA certificate: a
  private CA in `ca_certificates` is how a config trusts an IdP on an internal network.

The entity is read by fastgw/config/entities/ca_certificates.py.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

from fastgw.config.model import CaCertificate


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
