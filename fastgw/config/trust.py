"""Which TLS servers the gateway trusts: Kong's `ca_certificates:` entity as PEM text, for the
contexts the wire builds (fastgw/http/tls.py) towards upstream services and identity providers.

- A service trusts the CAs its `ca_certificates` lists (Kong's meaning: they replace the system
  store for that service); without the list, the system store (`SSL_CERT_FILE` and
  `SSL_CERT_DIR` are honoured, as by OpenSSL everywhere). `tls_verify: false` turns checking off.
- Identity providers are trusted by the system store plus every configured CA certificate: a
  private CA in `ca_certificates` is how a config trusts an IdP on an internal network.

The entity is read by fastgw/config/entities/ca_certificates.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastgw.config.model import CaCertificate


def pem_bundle(certificates: Iterable[CaCertificate]) -> str:
    return "\n".join(certificate.pem.strip() for certificate in certificates)
