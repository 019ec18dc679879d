"""Who the caller is and what the upstream learns about it: the request's `Authenticated`
(fastgw.plugins.identity, Kong's kong.client.authenticate), claim headers and Kong's consumer
and group headers.

Built once per verified token (when it enters a cache), so a cache hit only copies them.

Consumer mapping follows Kong: `consumer_claims` are tried in order, each value looked up by
each `consumer_by` field in turn, and the first consumer found is the caller; none is a 403
unless `consumer_optional`. The credential is Kong's virtual one, the `credential_claim` (`sub`);
the groups, `authenticated_groups_claim` (for acl, and X-Authenticated-Groups). Whenever the
plugin maps consumers or has an `anonymous` consumer, every request it lets through carries all
five of Kong's headers, set or removed: `X-Consumer-ID`, `X-Consumer-Custom-ID`,
`X-Consumer-Username`, `X-Credential-Identifier` (the `credential_claim`, absent for the
anonymous consumer) and `X-Anonymous-Consumer` (`true` only for it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from fastgw.config.consumers import Consumer, Consumers
from fastgw.plugins.api import Authenticated, Credential, HeaderPairs
from fastgw.plugins.identity import (
    AUTHENTICATED_GROUPS,
    consumer_headers,
    groups_header,
    header_value,
)

from .errors import InsufficientScope
from .schema import OidcConfig
from .verify import claim_at

# Kong's kind of credential when openid-connect authenticated the request (no Kong entity)
KIND = "openid-connect"


class ConsumerNotFound(InsufficientScope):
    """The token is valid but names no configured consumer (Kong: 403)."""


def claim_header_value(value: Any) -> bytes | None:
    """A claim as an upstream header value (Kong: strings as is, arrays joined with ", ")."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
        text = ", ".join(str(item) for item in value)
    else:
        text = orjson.dumps(value).decode()
    return header_value(text)  # None: a claim must not split or end the header block


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _groups(value: Any) -> tuple[str, ...] | None:
    """Kong's authenticated groups from a claim: a list of names (or one name); None when the
    claim is absent or holds something else."""
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list):
        return tuple(str(item) for item in value if isinstance(item, (str, int)) and item != "")
    return None


class IdentityHeaders:
    """The upstream headers for a verified token's claims (claim headers, consumer headers)."""

    def __init__(self, config: OidcConfig, consumers: Consumers) -> None:
        self._claim_headers = tuple(
            (path, name.lower().encode()) for path, name in config.upstream_headers
        )
        self._consumer_claims = config.consumer_claims
        self._consumer_by = config.consumer_by
        self._ignore_case = config.by_username_ignore_case
        self._optional = config.consumer_optional
        self._credential_claim = config.credential_claim
        self._groups_claim = config.authenticated_groups_claim
        self._consumers = consumers
        self._anonymous = config.anonymous_consumer
        # Kong's headers are managed when the plugin knows consumers at all
        self._manages_consumers = config.maps_consumers or self._anonymous is not None

    def for_claims(self, claims: Mapping[str, Any]) -> tuple[HeaderPairs, Authenticated]:
        """The upstream headers and who the caller is. Raises ConsumerNotFound when consumer
        mapping is on and finds no consumer."""
        headers = tuple(
            (name, claim_header_value(claim_at(claims, path))) for path, name in self._claim_headers
        )
        consumer = self._consumer(claims) if self._consumer_claims else None
        subject = _text(claim_at(claims, self._credential_claim))
        groups = _groups(claim_at(claims, self._groups_claim)) if self._groups_claim else None
        # Kong's virtual credential: the credential_claim, of the mapped consumer if any
        credential = Credential(
            KIND, subject or "", subject or "", consumer.id if consumer is not None else None
        )
        if self._groups_claim:
            headers += ((AUTHENTICATED_GROUPS, groups_header(groups) if groups else None),)
        if self._manages_consumers:
            headers += consumer_headers(consumer, subject, anonymous=False)
        who = Authenticated(consumer, credential, groups, upstream_headers=headers)
        return headers, who

    def anonymous(self) -> tuple[HeaderPairs, Authenticated] | None:
        """The headers and identity of a request let through as the `anonymous` consumer (None:
        no such consumer, so failed requests are answered 401/403)."""
        if self._anonymous is None:
            return None
        removed = tuple((name, None) for _, name in self._claim_headers)
        if self._groups_claim:
            removed += ((AUTHENTICATED_GROUPS, None),)
        headers = removed + consumer_headers(self._anonymous, None, anonymous=True)
        return headers, Authenticated(
            self._anonymous, None, anonymous=True, upstream_headers=headers
        )

    def _consumer(self, claims: Mapping[str, Any]) -> Consumer | None:
        for path in self._consumer_claims:
            value = _text(claim_at(claims, path))
            if value is None:
                continue
            for field in self._consumer_by:
                found = self._consumers.find(value, field, ignore_case=self._ignore_case)
                if found is not None:
                    return found
        if self._optional:
            return None
        raise ConsumerNotFound("no consumer matches the token")
