"""What the shared token cache writes: AES-256-GCM sealed values under HMAC-derived keys.

Both keys come from `cluster_cache_secret` through HKDF-SHA256, so a Redis dump or a hostile
writer without the secret yields no token, no client id and no entry the gateway would accept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# A leading byte names the format, so a later one can be told apart (and an old one refused).
SEAL_VERSION = b"\x01"
# AES-GCM's standard nonce; random per value: 2^32 values under one key keep the collision
# chance below 2^-32, and a fleet writes a value per client per token lifetime.
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
# HKDF `info` strings: one key for values, one for the index, never the same bytes twice
_VALUES_INFO = b"fastgw openid-connect token cache: values"
_KEYS_INFO = b"fastgw openid-connect token cache: keys"


def _derive(secret: str, info: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info)
    return hkdf.derive(secret.encode())


class Sealer:
    """Seals values bound to their key (the key is the associated data: a valid value moved to
    another client's key fails to open), and derives the keys from the cache material."""

    __slots__ = ("_aead", "_index_key")

    def __init__(self, secret: str) -> None:
        self._aead = AESGCM(_derive(secret, _VALUES_INFO))
        self._index_key = _derive(secret, _KEYS_INFO)

    def slot(self, material: str) -> str:
        """The key for `material` (a cache key with what shapes the token request): a keyed
        hash, so nobody without the secret can test guesses of a client's id and secret."""
        digest = hmac.new(self._index_key, material.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def seal(self, slot: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return SEAL_VERSION + nonce + self._aead.encrypt(nonce, plaintext, slot.encode())

    def open(self, slot: str, sealed: bytes) -> bytes | None:
        """The plaintext, or None when `sealed` was not sealed for `slot` with this secret."""
        if len(sealed) < 1 + NONCE_BYTES + TAG_BYTES or sealed[:1] != SEAL_VERSION:
            return None
        nonce, ciphertext = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, slot.encode())
        except InvalidTag:
            return None
