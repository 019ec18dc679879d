"""What links to a consumer while the document is read: credentials (nested or naming their
consumer) and plugins scoped to one (`consumers[].plugins`, or a top-level plugin's `consumer:`).

Part of the loader's assembly (fastgw/config/loader.py): consumers come first in the document's
reading order, so every reference is resolved as soon as it is read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastgw.config.consumers import Consumer
from fastgw.config.credentials import (
    AclGroup,
    BasicAuthCredential,
    Credentials,
    JwtSecret,
    KeyAuthCredential,
)
from fastgw.config.entities.consumers import ConsumerDraft
from fastgw.config.entities.credentials import (
    ACLS,
    BASICAUTH,
    JWT_SECRETS,
    KEYAUTH,
    CredentialDraft,
    Finishing,
    finish,
    names_parent,
)
from fastgw.config.entities.plugins import attach, no_consumer
from fastgw.config.model import PluginEntry
from fastgw.config.reader import Findings, join

_NOT_YOURS = "value must be null (a nested credential belongs to the consumer it is under)"


class ConsumerLinks:
    """The consumers by id and username, their credentials, and the consumer-only plugins."""

    def __init__(self, transform: bool, problems: Findings, warnings: Findings) -> None:
        self.problems = problems
        self.finishing = Finishing(transform, problems, warnings)
        self.consumers: list[Consumer] = []
        self._by_reference: dict[str, Consumer] = {}
        self._credentials: dict[str, list[Any]] = {
            KEYAUTH: [], BASICAUTH: [], JWT_SECRETS: [], ACLS: []
        }  # fmt: skip
        self.plugins: list[PluginEntry] = []  # scoped to a consumer alone

    def add_consumer(self, draft: ConsumerDraft) -> None:
        consumer = draft.consumer
        self.consumers.append(consumer)
        self._by_reference.setdefault(consumer.id, consumer)
        if consumer.username is not None:
            self._by_reference.setdefault(consumer.username, consumer)
        for credential in draft.credentials:
            if names_parent(credential, consumer):
                self._finish(credential, consumer)
            else:
                self.problems.append((join(credential.path, "consumer"), _NOT_YOURS))
        for entry in draft.plugins:
            self.scope(entry, consumer.id, self.plugins)

    def add_credential(self, draft: CredentialDraft) -> None:
        """A top-level credential: its `consumer:` is required."""
        consumer = self.find(draft.consumer, join(draft.path, "consumer"))
        if consumer is not None:
            self._finish(draft, consumer)

    def find(self, reference: str | None, where: str) -> Consumer | None:
        """The consumer `reference` names (its id or username, as Kong resolves one)."""
        if reference is None:
            self.problems.append((where, "is required"))
            return None
        found = self._by_reference.get(reference)
        if found is None:
            self.problems.append((where, f'unknown consumer "{reference}"'))
        return found

    def scope(self, entry: PluginEntry, consumer_id: str, scope: list[PluginEntry]) -> None:
        """Add `entry`, scoped to the consumer, to `scope` (unless its plugin cannot be)."""
        if no_consumer(entry.name):
            self.problems.append(
                (
                    join(entry.path, "consumer"),
                    f"value must be null ({entry.name} cannot be scoped to a consumer, as in "
                    "Kong: it runs before anyone is known)",
                )
            )
            return
        attach(replace(entry, consumer=consumer_id), scope, self.problems)

    def _finish(self, draft: CredentialDraft, consumer: Consumer) -> None:
        credential = finish(draft, consumer, self.finishing)
        if credential is not None:
            self._credentials[draft.kind].append(credential)

    def credentials(self) -> Credentials:
        found = self._credentials
        return Credentials(
            keyauth_credentials=_of(found[KEYAUTH], KeyAuthCredential),
            basicauth_credentials=_of(found[BASICAUTH], BasicAuthCredential),
            jwt_secrets=_of(found[JWT_SECRETS], JwtSecret),
            acls=_of(found[ACLS], AclGroup),
        )


def _of(items: list[Any], kind: type) -> tuple[Any, ...]:
    assert all(isinstance(item, kind) for item in items)
    return tuple(items)
