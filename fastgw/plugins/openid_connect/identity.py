"""What the upstream learns about the caller: claim headers and Kong's consumer headers.

Built once per verified token (when it enters a cache), so a cache hit only copies them.

Consumer mapping follows Kong: `consumer_claims` are tried in order, each value looked up by
each `consumer_by` field in turn, and the first consumer found is the caller; none is a 403
unless `consumer_optional`. Whenever the plugin maps consumers or has an `anonymous` consumer, every
request it lets through carries all five of Kong's headers, set or removed, so a client cannot
send its own: `X-Consumer-ID`, `X-Consumer-Custom-ID`, `X-Consumer-Username`,
`X-Credential-Identifier` (the `credential_claim`, absent for the anonymous consumer) and
`X-Anonymous-Consumer` (`true` only for it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from fastgw.config.consumers import Consumer, Consumers

from .errors import InsufficientScope
from .schema import OidcConfig
from .verify import claim_at

CONSUMER_ID = b"x-consumer-id"
CONSUMER_CUSTOM_ID = b"x-consumer-custom-id"
CONSUMER_USERNAME = b"x-consumer-username"
CREDENTIAL_IDENTIFIER = b"x-credential-identifier"
ANONYMOUS_CONSUMER = b"x-anonymous-consumer"

_CONTROL_CHARS = frozenset(range(0x20)) | {0x7F}

# (lower-case header name, value); a None value removes a header the client may have sent
HeaderPairs = tuple[tuple[bytes, bytes | None], ...]


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
    encoded = text.encode()
    if any(byte in _CONTROL_CHARS for byte in encoded):
        return None  # a claim must not split or end the header block
    return encoded


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _encode(text: str | None) -> bytes | None:
    if text is None:
        return None
    return claim_header_value(text)


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
        self._consumers = consumers
        self._anonymous = config.anonymous_consumer
        # Kong's headers are managed when the plugin knows consumers at all
        self._manages_consumers = config.maps_consumers or self._anonymous is not None

    def for_claims(self, claims: Mapping[str, Any]) -> HeaderPairs:
        """Raises ConsumerNotFound when consumer mapping is on and finds no consumer."""
        headers = tuple(
            (name, claim_header_value(claim_at(claims, path))) for path, name in self._claim_headers
        )
        if not self._manages_consumers:
            return headers
        consumer = self._consumer(claims) if self._consumer_claims else None
        credential = _text(claim_at(claims, self._credential_claim))
        return headers + consumer_headers(consumer, credential, anonymous=False)

    def anonymous(self) -> HeaderPairs | None:
        """The headers of a request let through as the `anonymous` consumer (None: no such
        consumer, so failed requests are answered 401/403)."""
        if self._anonymous is None:
            return None
        removed = tuple((name, None) for _, name in self._claim_headers)
        return removed + consumer_headers(self._anonymous, None, anonymous=True)

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


def consumer_headers(
    consumer: Consumer | None, credential: str | None, *, anonymous: bool
) -> HeaderPairs:
    """Kong's five authentication headers, each set or removed."""
    return (
        (CONSUMER_ID, _encode(consumer.id) if consumer is not None else None),
        (CONSUMER_CUSTOM_ID, _encode(consumer.custom_id) if consumer is not None else None),
        (CONSUMER_USERNAME, _encode(consumer.username) if consumer is not None else None),
        (CREDENTIAL_IDENTIFIER, _encode(credential)),
        (ANONYMOUS_CONSUMER, b"true" if anonymous else None),
    )
