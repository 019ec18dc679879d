"""Kong's `ca_certificates:` entity: CAs a service trusts by id, and every IdP call trusts
(the contexts built from them: fastgw/config/trust.py)."""

from __future__ import annotations

from typing import Any

from fastgw.config.model import CaCertificate
from fastgw.config.pem import PemError, ca_digest
from fastgw.config.schema import TAGS, Ignored, Reader, Schema, Text


def _ca_certificate(reader: Reader, values: dict[str, Any]) -> CaCertificate | None:
    pem = values["cert"]
    if pem is None:
        return None
    try:
        actual = ca_digest(pem)
    except PemError as error:
        reader.error("cert", str(error))
        return None
    digest = values["cert_digest"]
    if digest is not None and digest.lower() != actual:
        reader.error("cert_digest", "does not match cert (SHA-256 of its DER form)")
        return None
    return CaCertificate(values["id"], pem, actual, reader.path)


CA_CERTIFICATE: Schema[CaCertificate | None] = Schema(
    {
        "cert": Text(required=True),
        "cert_digest": Text(),
        "id": Text(),
        "tags": TAGS,
        "created_at": Ignored(),
        "updated_at": Ignored(),
    },
    build=_ca_certificate,
    annotations=True,
)
