"""PEM text as the config checks it: a certificate/key pair that belongs together, a CA
certificate, a PEM file named in the config.

Checked at load time so that `fastgw check` names a bad certificate at its key; the TLS contexts
are built by the wire from what passed. The messages are Kong's where Kong has one.
"""

from __future__ import annotations

import hashlib
import ssl

PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


class PemError(Exception):
    """A certificate or key that cannot be used; the message says why."""


def check_pair(cert: str, key: str) -> None:
    """Kong's check: the certificate's public key is the key's. Raises PemError."""
    # imported here: a config without certificates (most) does not pay for x509 parsing
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(cert.encode())
    except ValueError:
        raise PemError("invalid certificate: not a PEM X.509 certificate") from None
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError):
        raise PemError("invalid key: not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.PEM
    if certificate.public_key().public_bytes(encoding, public) != private.public_key().public_bytes(
        encoding, public
    ):
        raise PemError("certificate does not match key")  # Kong's wording


def read_pem_file(path: str) -> str:
    """A PEM file's text; raises PemError naming the problem."""
    try:
        with open(path, encoding="ascii") as file:
            return file.read()
    except OSError as error:
        raise PemError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise PemError(f"{path} is not PEM") from None


def ca_digest(pem: str) -> str:
    """The SHA-256 of the DER form (Kong's `cert_digest`) of `pem` when it is one CA
    certificate; raises PemError saying why not."""
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID

    if pem.count(PEM_BEGIN) != 1:
        raise PemError("must hold exactly one PEM certificate")
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise PemError("is not a valid PEM certificate") from None
    try:
        constraints = certificate.extensions.get_extension_for_oid(
            ExtensionOID.BASIC_CONSTRAINTS
        ).value
        is_ca = isinstance(constraints, x509.BasicConstraints) and constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        # Kong's check too: a leaf certificate cannot anchor a chain
        raise PemError("is not a CA certificate (its basic constraints lack CA:TRUE)")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


# the key type each jwt algorithm family verifies with (Kong's jwt_secrets.rsa_public_key)
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "Ed25519 or Ed448"}
# the curve each ECDSA algorithm signs with
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def public_key_problem(algorithm: str, pem: str) -> str | None:
    """Why `pem` cannot verify `algorithm` tokens (a jwt secret's `rsa_public_key`), or None.
    Kong's word for one that does not parse is "invalid key"."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        return "invalid key"
    family = algorithm[:2]
    wanted: tuple[type, ...] = {
        "RS": (rsa.RSAPublicKey,),
        "PS": (rsa.RSAPublicKey,),
        "ES": (ec.EllipticCurvePublicKey,),
        "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
    }[family]
    if not isinstance(key, wanted):
        return f"invalid key: {algorithm} needs an {_KEY_TYPES[family]} public key"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name != _EC_CURVES[algorithm]:
        return f"invalid key: {algorithm} needs a key on curve {_EC_CURVES[algorithm]}"
    return None
