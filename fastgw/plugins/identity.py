"""Who a request is, as the upstream learns it: Kong's identity headers, their one owner, and
`authenticate` (Kong's kong.client.authenticate with its plugins' set_consumer). Compiled.

Every authentication plugin (key-auth, basic-auth, jwt, openid-connect) hands `authenticate` an
`Authenticated` made once per credential at config load (its headers prebuilt); acl sets the
group headers. The names are the gateway's own: the proxy hands `IDENTITY_HEADERS` to the wire,
which drops a client's copy (and any "_" alias of it) before plugins run, so the upstream only
ever sees what a plugin set.
"""

from __future__ import annotations

from typing import Final

from fastgw.config.consumers import Consumer
from fastgw.plugins.api import Authenticated, Credential, HeaderPairs, RequestContext

# Kong's names (kong/constants.lua HEADERS), lower case as the wire keeps them
CONSUMER_ID: Final = b"x-consumer-id"
CONSUMER_CUSTOM_ID: Final = b"x-consumer-custom-id"
CONSUMER_USERNAME: Final = b"x-consumer-username"
CREDENTIAL_IDENTIFIER: Final = b"x-credential-identifier"
ANONYMOUS_CONSUMER: Final = b"x-anonymous-consumer"
CONSUMER_GROUPS: Final = b"x-consumer-groups"
AUTHENTICATED_GROUPS: Final = b"x-authenticated-groups"

IDENTITY_HEADERS: Final = frozenset(
    {
        CONSUMER_ID,
        CONSUMER_CUSTOM_ID,
        CONSUMER_USERNAME,
        CREDENTIAL_IDENTIFIER,
        ANONYMOUS_CONSUMER,
        CONSUMER_GROUPS,
        AUTHENTICATED_GROUPS,
    }
)

# Kong joins group names with a comma and a space (acl's and openid-connect's group headers)
GROUP_SEPARATOR: Final = ", "

_CONTROL_CHARS: Final = frozenset(range(0x20)) | {0x7F}


def header_value(text: str | None) -> bytes | None:
    """`text` as a header value, or None when there is none or it would break the header
    block (a control character)."""
    if text is None:
        return None
    encoded = text.encode()
    for byte in encoded:
        if byte in _CONTROL_CHARS:
            return None
    return encoded


def consumer_headers(
    consumer: Consumer | None, credential_identifier: str | None, *, anonymous: bool
) -> HeaderPairs:
    """Kong's five authentication headers, each set (a value) or removed (None), as its auth
    plugins' set_consumer writes them."""
    return (
        (CONSUMER_ID, header_value(consumer.id) if consumer is not None else None),
        (CONSUMER_CUSTOM_ID, header_value(consumer.custom_id) if consumer is not None else None),
        (CONSUMER_USERNAME, header_value(consumer.username) if consumer is not None else None),
        (CREDENTIAL_IDENTIFIER, header_value(credential_identifier)),
        (ANONYMOUS_CONSUMER, b"true" if anonymous else None),
    )


def identity(consumer: Consumer, credential: Credential) -> Authenticated:
    """Who a request that authenticated with `credential` (of `consumer`) is."""
    headers = consumer_headers(consumer, credential.identifier or None, anonymous=False)
    return Authenticated(consumer, credential, upstream_headers=headers)


def anonymous_identity(consumer: Consumer) -> Authenticated:
    """Who a request is when it failed authentication and the plugin's `anonymous` consumer
    takes it on (Kong: no credential, `X-Anonymous-Consumer: true`)."""
    headers = consumer_headers(consumer, None, anonymous=True)
    return Authenticated(consumer, None, anonymous=True, upstream_headers=headers)


def authenticate(ctx: RequestContext, who: Authenticated) -> None:
    """Kong's kong.client.authenticate and the identity headers: `who` is the request's
    principal from now on, and the upstream gets its headers (`who` is made by `identity` or
    `anonymous_identity`: identity headers only).

    One pass over the request's headers: when none of them is an identity header (the usual
    case: the wire withholds the client's, and no earlier plugin set any), the values are
    appended as they are; else each is set or removed."""
    ctx.principal = who
    headers = ctx.headers
    for name, _ in headers:
        if name in IDENTITY_HEADERS:
            apply_headers(ctx, who.upstream_headers)
            return
    headers.extend(who.upstream_values)


def apply_headers(ctx: RequestContext, pairs: HeaderPairs) -> None:
    """Set each header of `pairs` that has a value, remove each that has none (looked up
    first: removing rebuilds the header list, and usually there is nothing to remove)."""
    for name, value in pairs:
        if value is not None:
            ctx.set_header(name, value)
        elif ctx.get_header(name) is not None:
            ctx.remove_header(name)


def has_credential(ctx: RequestContext) -> bool:
    """An earlier plugin authenticated the request with a real credential (not as its
    anonymous consumer): Kong's "logical OR" of auth plugins with `anonymous` stops here."""
    principal = ctx.principal
    return isinstance(principal, Authenticated) and principal.credential is not None


def groups_header(groups: tuple[str, ...]) -> bytes | None:
    return header_value(GROUP_SEPARATOR.join(groups))
