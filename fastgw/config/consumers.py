"""Kong's `consumers:` entity: who a request is once a plugin has authenticated it.

Read and checked once at config load; plugins look consumers up by id, username or custom_id.

A consumer without an `id` gets one derived from its username (or custom_id), so the same
config gives the same `X-Consumer-ID` in every worker and after every restart. Credentials of
other authentication plugins and consumer-scoped plugins are not supported yet: an empty list of
them (as decK writes) is accepted, a non-empty one is an error saying so.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastgw.config.schema import Reader, join

# The namespace of derived consumer ids (a fixed, random UUID: derived ids are stable)
CONSUMER_ID_NAMESPACE = uuid.UUID("6f1c2a8e-3d0b-4b7e-9a51-1f0c7d2e8b44")

CONSUMER_BY = ("id", "username", "custom_id")

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


@dataclass(frozen=True, slots=True)
class Consumer:
    id: str
    username: str | None
    custom_id: str | None
    tags: tuple[str, ...] = ()


class Consumers:
    """The configured consumers, indexed the ways plugins look them up."""

    def __init__(self, consumers: tuple[Consumer, ...] = ()) -> None:
        self.all = consumers
        self._by: dict[str, dict[str, Consumer]] = {field: {} for field in CONSUMER_BY}
        self._by_username_lower: dict[str, Consumer] = {}
        for consumer in consumers:
            self._by["id"][consumer.id] = consumer
            if consumer.username is not None:
                self._by["username"][consumer.username] = consumer
                self._by_username_lower.setdefault(consumer.username.lower(), consumer)
            if consumer.custom_id is not None:
                self._by["custom_id"][consumer.custom_id] = consumer

    def __len__(self) -> int:
        return len(self.all)

    def find(self, value: str, by: str, *, ignore_case: bool = False) -> Consumer | None:
        """The consumer whose `by` field (id, username, custom_id) is `value`."""
        found = self._by[by].get(value)
        if found is None and by == "username" and ignore_case:
            found = self._by_username_lower.get(value.lower())
        return found

    def reference(self, value: str) -> Consumer | None:
        """A consumer named the way Kong's `anonymous` names one: by id or username."""
        return self.find(value, "id") or self.find(value, "username")


def derived_id(username: str | None, custom_id: str | None) -> str:
    key = f"username:{username}" if username is not None else f"custom_id:{custom_id}"
    return str(uuid.uuid5(CONSUMER_ID_NAMESPACE, key))


def read_consumers(raw: object, path: str, problems: list[tuple[str, str]]) -> Consumers:
    if raw is None:
        return Consumers()
    if not isinstance(raw, list):
        problems.append((path, "must be an array"))
        return Consumers()
    consumers: list[Consumer] = []
    first_at: dict[tuple[str, str], str] = {}
    for index, item in enumerate(raw):
        reader = Reader(item, join(path, index), problems)
        consumer = _read_consumer(reader)
        reader.finish()
        if consumer is None:
            continue
        for field in ("username", "custom_id", "id"):
            value = getattr(consumer, field)
            where = first_at.setdefault((field, value), reader.path)
            if value is not None and where != reader.path:
                reader.error(field, f"is already used by {where}")
                break
        else:
            consumers.append(consumer)
    return Consumers(tuple(consumers))


def _read_consumer(reader: Reader) -> Consumer | None:
    username: str | None = reader.string("username")
    custom_id: str | None = reader.string("custom_id")
    consumer_id: str | None = reader.string("id")
    tags = reader.strings("tags")
    reader.ignore("created_at", "updated_at", "username_lower")
    for key in NESTED_ENTITIES:
        if _non_empty(reader.raw.get(key)):
            reader.error(key, "not supported yet")
        reader.ignore(key)
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
        tags=tags,
    )


def _non_empty(value: Any) -> bool:
    return value is not None and value != [] and value != {}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36
