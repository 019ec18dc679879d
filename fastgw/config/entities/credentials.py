"""Kong's credential entities: `keyauth_credentials`, `basicauth_credentials`, `jwt_secrets` and
`acls` (kong/plugins/<name>/daos.lua), nested under a consumer or at the top level naming one.

Each is read into a `CredentialDraft` first: its consumer is known only once the loader has
linked it (a nested one to its parent, a top-level one by `consumer:`), and a basic-auth
password is hashed with that consumer's id (Kong's `_transform`). `finish` makes the model
object (fastgw/config/credentials.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastgw.config.consumers import Consumer
from fastgw.config.credentials import (
    DEFAULT_JWT_ALGORITHM,
    JWT_ALGORITHMS,
    AclGroup,
    BasicAuthCredential,
    JwtSecret,
    KeyAuthCredential,
    password_hash,
)
from fastgw.config.pem import public_key_problem
from fastgw.config.schema import (
    TAGS,
    Declared,
    Findings,
    Ignored,
    Integer,
    Reader,
    Schema,
    Text,
    join,
)

# The namespace of derived credential ids (a fixed, random UUID: derived ids are stable, the
# same in every worker and after a restart, as consumers' are)
CREDENTIAL_ID_NAMESPACE = uuid.UUID("2b8f7c31-6d4e-4a0f-b2c9-5e7a1d3f9c60")
# what the entity list of each kind is called, nested or at the top level (Kong's names)
KEYAUTH = "keyauth_credentials"
BASICAUTH = "basicauth_credentials"
JWT_SECRETS = "jwt_secrets"
ACLS = "acls"
CREDENTIAL_ENTITIES = (KEYAUTH, BASICAUTH, JWT_SECRETS, ACLS)
# jwt algorithms whose key is the PEM `rsa_public_key` (every one but HMAC's)
_PUBLIC_KEY_ALGORITHMS = frozenset(JWT_ALGORITHMS) - {"HS256", "HS384", "HS512"}
_SHA1_HEX_LENGTH = 40
_HEX = frozenset("0123456789abcdef")


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


class ConsumerReference(Declared):
    """How a credential or plugin names its consumer: its id or username (Kong), or decK's
    mapping `{id: ...}` / `{username: ...}`. None when absent or unusable (said so)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> str | None:
        reader.ignore(key)
        raw = reader.raw.get(key)
        if raw is None:
            return None
        if isinstance(raw, str) and raw:
            return raw
        if isinstance(raw, Mapping):
            inner = reader.child(raw, key)
            found = inner.string("id") or inner.string("username")
            inner.finish()
            if found is None:
                inner.error("", "must name the consumer by id or username")
            return found
        reader.error(key, "must be a consumer's id or username")
        return None


@dataclass(slots=True)
class CredentialDraft:
    """A credential as read: `consumer` is the reference as written (None: absent)."""

    kind: str
    values: dict[str, Any]
    consumer: str | None
    path: str


def _draft(kind: str) -> Any:
    def build(reader: Reader, values: dict[str, Any]) -> CredentialDraft | None:
        if values["id"] is not None and not is_uuid(values["id"]):
            reader.error("id", f"must be a UUID; got {values['id']!r}")
            return None
        if kind == JWT_SECRETS and not _jwt_key_ok(reader, values):
            return None
        return CredentialDraft(kind, values, values.get("consumer"), reader.path)

    return build


def _jwt_key_ok(reader: Reader, values: dict[str, Any]) -> bool:
    """Kong's check: an algorithm other than HMAC's needs a PEM public key that parses."""
    algorithm = values["algorithm"]
    pem = values["rsa_public_key"]
    if algorithm not in _PUBLIC_KEY_ALGORITHMS:
        return True
    if pem is None:
        reader.error("rsa_public_key", f"is required for {algorithm}")
        return False
    problem = public_key_problem(algorithm, pem)
    if problem is not None:
        reader.error("rsa_public_key", problem)
        return False
    return True


_COMMON: dict[str, Declared] = {
    "id": Text(),
    "tags": TAGS,
    "created_at": Ignored(),
    "updated_at": Ignored(),
}
_FIELDS: dict[str, dict[str, Declared]] = {
    KEYAUTH: {
        # Kong generates a random key when none is given: see finish()
        "key": Text(),
        "ttl": Integer(minimum=0),
        **_COMMON,
        "created_at": Integer(minimum=0),  # seconds since the epoch: where `ttl` counts from
    },
    BASICAUTH: {"username": Text(required=True), "password": Text(required=True), **_COMMON},
    JWT_SECRETS: {
        "key": Text(),
        "secret": Text(),
        "rsa_public_key": Text(),
        "algorithm": Text(DEFAULT_JWT_ALGORITHM, one_of=JWT_ALGORITHMS),
        **_COMMON,
    },
    ACLS: {"group": Text(required=True), **_COMMON},
}


def _schema(kind: str, consumer: Declared) -> Schema[CredentialDraft | None]:
    return Schema({**_FIELDS[kind], "consumer": consumer}, build=_draft(kind), annotations=True)


# Nested under a consumer, `consumer:` may only repeat the parent; at the top level it is
# required (both checked when the loader links the draft)
SCHEMAS: dict[str, Schema[CredentialDraft | None]] = {
    kind: _schema(kind, ConsumerReference()) for kind in CREDENTIAL_ENTITIES
}


def names_parent(draft: CredentialDraft, parent: Consumer) -> bool:
    """A nested credential's `consumer:` is absent or names its own parent (Kong accepts
    that; anything else is `value must be null`)."""
    return draft.consumer is None or draft.consumer in (parent.id, parent.username)


@dataclass(slots=True)
class Finishing:
    """What finishing a config's credentials needs: Kong's `_transform`, the ids and unique
    values seen so far (a key, a username, a jwt key, a consumer's group once each)."""

    transform: bool
    problems: Findings
    warnings: Findings
    loaded_at: float = field(default_factory=time.time)
    first_at: dict[tuple[str, str], str] = field(default_factory=dict)
    per_consumer: dict[tuple[str, str], int] = field(default_factory=dict)

    def unique(self, draft: CredentialDraft, field_name: str, value: str) -> bool:
        """`value` of `field_name` not seen before in this kind (the problem said, at the
        later one, without quoting the value: it may be a key)."""
        first = self.first_at.setdefault((draft.kind + "." + field_name, value), draft.path)
        if first != draft.path:
            self.problems.append((join(draft.path, field_name), f"is already used by {first}"))
            return False
        return True

    def ordinal(self, draft: CredentialDraft, consumer: Consumer) -> int:
        """The credential's place among its consumer's of the same kind (0, 1, ...)."""
        key = (draft.kind, consumer.id)
        count = self.per_consumer.get(key, 0)
        self.per_consumer[key] = count + 1
        return count


def _id(draft: CredentialDraft, consumer: Consumer, natural: str) -> str:
    given: str | None = draft.values["id"]
    if given is not None:
        return given
    return str(uuid.uuid5(CREDENTIAL_ID_NAMESPACE, f"{draft.kind}:{consumer.id}:{natural}"))


def finish(draft: CredentialDraft, consumer: Consumer, finishing: Finishing) -> Any:
    """The model object of `draft`, of `consumer`; None (the problem said) when unusable."""
    values = draft.values
    if draft.kind == KEYAUTH:
        return _keyauth(draft, consumer, finishing)
    if draft.kind == BASICAUTH:
        username, password = values["username"], values["password"]
        if username is None or password is None:
            return None
        if not finishing.unique(draft, "username", username):
            return None
        if finishing.transform:
            password = password_hash(consumer.id, password)
        elif len(password) != _SHA1_HEX_LENGTH or not set(password) <= _HEX:
            # _transform: false (kong config db_export) stores what the file says: the hash
            finishing.problems.append(
                (
                    join(draft.path, "password"),
                    "must be Kong's stored hash (40 lower-case hex digits) when _transform "
                    "is false",
                )
            )
            return None
        return BasicAuthCredential(
            _id(draft, consumer, username), consumer, username, password, draft.path
        )
    if draft.kind == JWT_SECRETS:
        return _jwt(draft, consumer, finishing)
    group = values["group"]
    if group is None or not finishing.unique(draft, "group", f"{consumer.id}\n{group}"):
        return None
    return AclGroup(_id(draft, consumer, group), consumer, group, draft.path)


def _keyauth(
    draft: CredentialDraft, consumer: Consumer, finishing: Finishing
) -> KeyAuthCredential | None:
    values = draft.values
    ordinal = finishing.ordinal(draft, consumer)
    key = values["key"]
    if key is None:
        finishing.warnings.append(
            (
                join(draft.path, "key"),
                "is not set: Kong would generate a random key no client knows, so this "
                "credential authenticates no one (left out)",
            )
        )
        return None
    if not finishing.unique(draft, "key", key):
        return None
    expires_at = None
    if values["ttl"] is not None:
        expires_at = float(values["created_at"] or finishing.loaded_at) + values["ttl"]
    # not derived from the key: the id goes upstream as X-Credential-Identifier
    credential_id = _id(draft, consumer, str(ordinal))
    return KeyAuthCredential(credential_id, consumer, key, expires_at, draft.path)


def _jwt(draft: CredentialDraft, consumer: Consumer, finishing: Finishing) -> JwtSecret | None:
    values = draft.values
    key, algorithm, secret = values["key"], values["algorithm"], values["secret"]
    if key is None:
        finishing.warnings.append(
            (
                join(draft.path, "key"),
                "is not set: Kong would generate a random key no token names, so this "
                "secret verifies no token (left out)",
            )
        )
        return None
    if algorithm not in _PUBLIC_KEY_ALGORITHMS and secret is None:
        finishing.warnings.append(
            (
                join(draft.path, "secret"),
                f"is not set: Kong would generate a random secret, so no {algorithm} token "
                "verifies with it (left out)",
            )
        )
        return None
    if not finishing.unique(draft, "key", key):
        return None
    return JwtSecret(
        _id(draft, consumer, key),
        consumer,
        key,
        secret,
        values["rsa_public_key"],
        algorithm,
        draft.path,
    )
