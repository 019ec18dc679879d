"""Kong's credential entities as the authentication plugins see them: key-auth keys, basic-auth
users, jwt secrets and acl groups, each of one consumer.

Part of the config model (read by fastgw/config/entities/credentials.py); the plugins index them
once per config. Secrets are kept out of `repr`, so no log line or error shows one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from fastgw.config.consumers import Consumer

# Kong's jwt_secrets.algorithm choices (3.7+), HS256 by default
JWT_ALGORITHMS = (
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
    "PS256", "PS384", "PS512", "EdDSA",
)  # fmt: skip
DEFAULT_JWT_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class KeyAuthCredential:
    """A `keyauth_credentials` entry; `expires_at` (epoch seconds) from Kong's `ttl`, else
    None: a credential past it is as if it did not exist, as in Kong."""

    id: str
    consumer: Consumer
    key: str = field(repr=False)
    expires_at: float | None
    path: str


@dataclass(frozen=True, slots=True)
class BasicAuthCredential:
    """A `basicauth_credentials` entry: `password` as Kong stores it, the SHA-1 hex of the
    password followed by the consumer's id (`password_hash`)."""

    id: str
    consumer: Consumer
    username: str
    password: str = field(repr=False)
    path: str


@dataclass(frozen=True, slots=True)
class JwtSecret:
    """A `jwt_secrets` entry: `key` is what the token's key claim (`iss`) names; `secret` the
    HMAC secret (HS*), `rsa_public_key` the PEM public key of the other algorithms."""

    id: str
    consumer: Consumer
    key: str
    secret: str | None = field(repr=False)
    rsa_public_key: str | None
    algorithm: str
    path: str


@dataclass(frozen=True, slots=True)
class AclGroup:
    """An `acls` entry: `consumer` is in `group`."""

    id: str
    consumer: Consumer
    group: str
    path: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """Every credential entity of the config, in document order."""

    keyauth_credentials: tuple[KeyAuthCredential, ...] = ()
    basicauth_credentials: tuple[BasicAuthCredential, ...] = ()
    jwt_secrets: tuple[JwtSecret, ...] = ()
    acls: tuple[AclGroup, ...] = ()

    def __len__(self) -> int:
        return (
            len(self.keyauth_credentials)
            + len(self.basicauth_credentials)
            + len(self.jwt_secrets)
            + len(self.acls)
        )


def password_hash(consumer_id: str, password: str) -> str:
    """Kong's basic-auth storage (kong/plugins/basic-auth/crypto.lua): the lower-case hex SHA-1
    of the password then the consumer's id, no separator."""
    return hashlib.sha1((password + consumer_id).encode(), usedforsecurity=False).hexdigest()
