"""Kong's `consumers:` entity: who a request is once a plugin has authenticated it (the model
and its lookups: fastgw/config/consumers.py), with what Kong nests under one: its credentials
(fastgw/config/entities/credentials.py) and the plugins scoped to it.

Credentials of Kong's other authentication plugins (hmac-auth, oauth2, mtls-auth, ...) and
consumer groups are not supported yet: an empty list of them (as decK writes) is accepted, a
non-empty one is an error saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastgw.config.consumers import Consumer, derived_id
from fastgw.config.entities.credentials import (
    CREDENTIAL_ENTITIES,
    SCHEMAS,
    CredentialDraft,
    is_uuid,
)
from fastgw.config.entities.plugins import CONSUMER_PLUGIN
from fastgw.config.model import PluginEntry
from fastgw.config.schema import (
    EMPTY,
    TAGS,
    Declared,
    Ignored,
    Reader,
    Records,
    Schema,
    Text,
    Unsupported,
)

# Entities decK nests under a consumer that fastgw has no use for yet: credentials of Kong's
# other auth plugins and consumer groups
UNSUPPORTED_NESTED = (
    "groups",
    "hmacauth_credentials",
    "keyauth_encrypted_credentials",
    "mtls_auth_credentials",
    "oauth2_credentials",
)


@dataclass(slots=True)
class ConsumerDraft:
    """A consumer as read, with what is nested under it (linked by the loader)."""

    consumer: Consumer
    credentials: list[CredentialDraft] = field(default_factory=list)
    plugins: list[PluginEntry] = field(default_factory=list)

    # Kong's unique keys (CONSUMER_UNIQUE), as `Records(unique=...)` reads them
    @property
    def id(self) -> str:
        return self.consumer.id

    @property
    def username(self) -> str | None:
        return self.consumer.username

    @property
    def custom_id(self) -> str | None:
        return self.consumer.custom_id


def _consumer(reader: Reader, values: dict[str, Any]) -> ConsumerDraft | None:
    username, custom_id, consumer_id = values["username"], values["custom_id"], values["id"]
    if consumer_id is not None and not is_uuid(consumer_id):
        reader.error("id", f"must be a UUID; got {consumer_id!r}")
        return None
    if username is None and custom_id is None:
        # Kong's rule: one of the two names the consumer
        reader.error("", "must have a username or a custom_id")
        return None
    consumer = Consumer(
        id=consumer_id or derived_id(username, custom_id),
        username=username,
        custom_id=custom_id,
        tags=values["tags"],
    )
    credentials = [draft for kind in CREDENTIAL_ENTITIES for draft in values[kind]]
    return ConsumerDraft(consumer, credentials, list(values["plugins"]))


_FIELDS: dict[str, Declared] = {
    "username": Text(),
    "custom_id": Text(),
    "id": Text(),
    "tags": TAGS,
    "created_at": Ignored(),
    "updated_at": Ignored(),
    "username_lower": Ignored(),
}
CONSUMER: Schema[ConsumerDraft | None] = Schema(
    {
        **_FIELDS,
        **{kind: Records(SCHEMAS[kind]) for kind in CREDENTIAL_ENTITIES},
        "plugins": Records(CONSUMER_PLUGIN),
        **{key: Unsupported(accepts=EMPTY) for key in UNSUPPORTED_NESTED},
    },
    build=_consumer,
    annotations=True,
)
# Kong's unique keys of a consumer (a derived id is unique with its username or custom_id)
CONSUMER_UNIQUE = ("username", "custom_id", "id")
