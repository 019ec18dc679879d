"""Kong's `consumers:` entity: who a request is once a plugin has authenticated it (the model
and its lookups: fastgw/config/consumers.py).

Credentials of other authentication plugins, ACL groups and consumer-scoped plugins are not
supported yet: an empty list of them (as decK writes) is accepted, a non-empty one is an error
saying so.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastgw.config.consumers import Consumer, derived_id
from fastgw.config.schema import (
    EMPTY,
    TAGS,
    Declared,
    Ignored,
    Reader,
    Schema,
    Text,
    Unsupported,
)

# Entities decK nests under a consumer: credentials of Kong's other auth plugins, ACL groups,
# consumer groups and consumer-scoped plugins
NESTED_ENTITIES = (
    "acls",
    "basicauth_credentials",
    "groups",
    "hmacauth_credentials",
    "jwt_secrets",
    "keyauth_credentials",
    "keyauth_encrypted_credentials",
    "mtls_auth_credentials",
    "oauth2_credentials",
    "plugins",
)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def _consumer(reader: Reader, values: dict[str, Any]) -> Consumer | None:
    username, custom_id, consumer_id = values["username"], values["custom_id"], values["id"]
    if consumer_id is not None and not _is_uuid(consumer_id):
        reader.error("id", f"must be a UUID; got {consumer_id!r}")
        return None
    if username is None and custom_id is None:
        # Kong's rule: one of the two names the consumer
        reader.error("", "must have a username or a custom_id")
        return None
    return Consumer(
        id=consumer_id or derived_id(username, custom_id),
        username=username,
        custom_id=custom_id,
        tags=values["tags"],
    )


_FIELDS: dict[str, Declared] = {
    "username": Text(),
    "custom_id": Text(),
    "id": Text(),
    "tags": TAGS,
    "created_at": Ignored(),
    "updated_at": Ignored(),
    "username_lower": Ignored(),
}
CONSUMER: Schema[Consumer | None] = Schema(
    {**_FIELDS, **{key: Unsupported(accepts=EMPTY) for key in NESTED_ENTITIES}},
    build=_consumer,
    annotations=True,
)
# Kong's unique keys of a consumer (a derived id is unique with its username or custom_id)
CONSUMER_UNIQUE = ("username", "custom_id", "id")
