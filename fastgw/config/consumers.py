"""Kong's consumers as plugins see them: who a request is once a plugin has authenticated it.

Part of the config model (read by fastgw/config/entities/consumers.py); plugins look consumers
up by id, username or custom_id.

A consumer without an `id` gets one derived from its username (or custom_id), so the same
config gives the same `X-Consumer-ID` in every worker and after every restart.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# The namespace of derived consumer ids (a fixed, random UUID: derived ids are stable)
CONSUMER_ID_NAMESPACE = uuid.UUID("6f1c2a8e-3d0b-4b7e-9a51-1f0c7d2e8b44")

CONSUMER_BY = ("id", "username", "custom_id")


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
