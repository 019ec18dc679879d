"""acl's access step (Kong's kong/plugins/acl/handler.lua): the groups of who the request is
(the consumer's `acls`, or the groups openid-connect authenticated) against `allow` or `deny`.

A consumer's verdict and its X-Consumer-Groups value are made once per consumer when the config
loads; a request costs one dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from fastgw.config.credentials import AclGroup
from fastgw.plugins.api import Authenticated, Plugin, RequestContext
from fastgw.plugins.auth_config import Answer, error_answer
from fastgw.plugins.identity import AUTHENTICATED_GROUPS, CONSUMER_GROUPS, groups_header

PRIORITY: Final = 950  # Kong's
FORBIDDEN: Final = "You cannot consume this service"
UNAUTHORIZED: Final = "Unauthorized"


class Verdict:
    """What acl says of one set of groups: allowed, and the groups header's value."""

    __slots__ = ("allowed", "header")

    def __init__(self, allowed: bool, header: bytes | None) -> None:
        self.allowed = allowed
        self.header = header


class Acl(Plugin):
    """Kong's acl for one configured occurrence."""

    name = "acl"
    priority = PRIORITY

    def __init__(
        self,
        allow: Sequence[str],
        deny: Sequence[str],
        acls: Iterable[AclGroup],
        *,
        hide_groups_header: bool,
        always_use_authenticated_groups: bool,
    ) -> None:
        self._deny_mode = bool(deny)
        self._listed = frozenset(deny or allow)
        self._hide = hide_groups_header
        self._always_authenticated = always_use_authenticated_groups
        by_consumer: dict[str, list[str]] = {}
        for acl in acls:
            by_consumer.setdefault(acl.consumer.id, []).append(acl.group)
        self._consumers = {
            consumer_id: self.verdict(groups) for consumer_id, groups in by_consumer.items()
        }
        # a consumer without groups: nothing denies it, nothing allows it
        self._no_groups = Verdict(True, b"") if self._deny_mode else None
        self._forbidden: Answer = error_answer(403, FORBIDDEN)
        self._unauthorized: Answer = error_answer(401, UNAUTHORIZED)

    def verdict(self, groups: Sequence[str]) -> Verdict:
        listed = not self._listed.isdisjoint(groups)
        return Verdict(listed != self._deny_mode, groups_header(tuple(groups)))

    def access(self, ctx: RequestContext) -> None:
        principal = ctx.principal
        who = principal if isinstance(principal, Authenticated) else None
        consumer = who.consumer if who is not None else None
        credential = who.credential if who is not None else None
        authenticated = who.groups if who is not None else None
        consumer_id = consumer.id if consumer is not None else None
        if consumer_id is None and credential is not None:
            consumer_id = credential.consumer_id
        header_name = CONSUMER_GROUPS
        verdict: Verdict | None
        if consumer_id is None or (
            authenticated is not None and (credential is None or self._always_authenticated)
        ):
            if authenticated is None:
                self._refuse(ctx, credential is not None)
                return
            verdict = self.verdict(authenticated)
            header_name = AUTHENTICATED_GROUPS
        else:
            verdict = self._consumers.get(consumer_id) or self._no_groups
            if verdict is None:
                self._refuse(ctx, credential is not None)
                return
        if not verdict.allowed:
            self._refuse(ctx, True)
            return
        if not self._hide and verdict.header is not None:
            ctx.set_header(header_name, verdict.header)

    def _refuse(self, ctx: RequestContext, known: bool) -> None:
        """Kong: 403 for a request some credential authenticated, else 401."""
        status, body, headers = self._forbidden if known else self._unauthorized
        ctx.respond(status, body, headers)
