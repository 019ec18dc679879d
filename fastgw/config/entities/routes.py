"""Kong's `routes:` entity (traditional router): what a request must match (paths, hosts,
methods, headers, SNIs, protocols) and how it is sent on.

Nested in a service, or at the top level naming its service (the loader attaches it).
Kong's expressions router (`expression`, `priority`) is not supported yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastgw.config.addresses import has_path_breaker, host_pattern_problem
from fastgw.config.entities.drafts import RouteDraft, ServiceDraft
from fastgw.config.entities.plugins import PLUGIN, scoped
from fastgw.config.entities.references import Reference
from fastgw.config.model import Route
from fastgw.config.patterns import (
    PATH_HANDLINGS,
    RegexError,
    compile_header_regex,
    compile_path_regex,
    is_regex_path,
)
from fastgw.config.schema import (
    FALSY,
    TAGS,
    Boolean,
    Checked,
    Declared,
    Findings,
    Ignored,
    Integer,
    Reader,
    Records,
    Schema,
    Strings,
    Text,
    Unsupported,
    join,
)
from fastgw.config.vocabulary import (
    DEFAULT_HTTPS_REDIRECT_STATUS,
    DEFAULT_ROUTE_PROTOCOLS,
    HTTPS_REDIRECT_STATUSES,
    MAX_REGEX_PRIORITY,
    ROUTE_PROTOCOLS,
    TLS_PROTOCOLS,
)

MATCH_KEYS = ("paths", "hosts", "methods", "headers", "snis")
# the Host header is matched by `hosts`; Kong refuses it in a route's `headers` too
_HEADERS_FORBIDDEN = frozenset({"host"})
_HEADER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")


def host_patterns(reader: Reader, key: str, items: Sequence[object]) -> tuple[str, ...]:
    """Route hosts (or SNIs, the same patterns), lower case; problems at `key[index]`."""
    base = reader.key_path(key)
    result: list[str] = []
    for index, item in enumerate(items):
        reason = host_pattern_problem(item, key)
        if reason is None and isinstance(item, str):
            result.append(item.lower())
        else:
            reader.problems.append((join(base, index), reason or "must be a non-empty string"))
    return tuple(result)


class HostPatterns(Declared):
    """Kong's route `hosts` and `snis`: names with at most a leading "*." or trailing ".*"."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[str, ...]:
        return host_patterns(reader, key, reader.sequence(key))


class Paths(Declared):
    """Kong's route `paths`: prefixes starting with "/", or regexes starting with "~"."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[str, ...]:
        base = reader.key_path(key)
        result: list[str] = []
        for index, item in enumerate(reader.sequence(key)):
            reason = None
            if not isinstance(item, str) or not item:
                reason = "must be a non-empty string"
            elif is_regex_path(item):
                try:
                    compile_path_regex(item)
                except RegexError as error:
                    reason = f"is not a valid regex: {error.msg}"
            elif not item.startswith("/"):
                reason = 'must start with "/" (or "~" for a regex)'
            elif has_path_breaker(item):
                reason = 'must not contain whitespace, "?" or "#"'
            if reason is None:
                result.append(item)
            else:
                reader.problems.append((join(base, index), reason))
        return tuple(result)


class Methods(Declared):
    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[str, ...]:
        base = reader.key_path(key)
        result: list[str] = []
        for index, item in enumerate(reader.sequence(key)):
            if isinstance(item, str) and item.isascii() and item.isalpha() and item.isupper():
                result.append(item)
            else:
                reader.problems.append(
                    (join(base, index), 'must be an uppercase method like "GET"')
                )
        return tuple(result)


class Headers(Declared):
    """Kong's route `headers: {name: [values]}`; a lone string value is taken as one."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        headers = reader.mapping(key)
        result: list[tuple[str, tuple[str, ...]]] = []
        for raw_name in list(headers.raw):
            name = str(raw_name)
            lower = name.lower()
            values = headers.strings(name, scalar_ok=True)
            if not lower or not set(lower) <= _HEADER_NAME_CHARS:
                headers.error(name, "is not a header name")
            elif lower in _HEADERS_FORBIDDEN:
                headers.error(name, "cannot be matched in headers; use hosts")
            elif not values:
                headers.error(name, "must list at least one value")
            else:
                for value in values:
                    if value.startswith("~*"):
                        try:
                            compile_header_regex(value)
                        except RegexError as error:
                            headers.error(name, f"has an invalid regex {value!r}: {error.msg}")
                result.append((lower, values))
        headers.finish()
        return tuple(result)


def _snis_need_tls(reader: Reader, values: dict[str, Any]) -> None:
    if values["snis"] and not set(TLS_PROTOCOLS) & set(values["protocols"]):
        reader.error("snis", "can only be set when 'protocols' has 'https' or 'wss'")


def _matches_something(reader: Reader, values: dict[str, Any]) -> None:
    if not any(reader.raw.get(key) for key in MATCH_KEYS):
        reader.error("", "must have at least one of paths, hosts, methods, headers or snis")


def _draft(reader: Reader, values: dict[str, Any]) -> RouteDraft:
    route = Route(
        name=values["name"],
        paths=values["paths"],
        hosts=values["hosts"],
        methods=values["methods"],
        strip_path=values["strip_path"],
        preserve_host=values["preserve_host"],
        plugins=(),
        path=reader.path,
        headers=values["headers"],
        regex_priority=values["regex_priority"],
        path_handling=values["path_handling"],
        protocols=tuple(dict.fromkeys(values["protocols"])) or DEFAULT_ROUTE_PROTOCOLS,
        https_redirect_status_code=values["https_redirect_status_code"],
        snis=values["snis"],
    )
    return RouteDraft(route, scoped(values["plugins"], reader.problems))


_EXPRESSIONS = "not supported yet (the expressions router)"

ROUTE: Schema[RouteDraft] = Schema(
    {
        "protocols": Strings(
            DEFAULT_ROUTE_PROTOCOLS, one_of=ROUTE_PROTOCOLS, lone=False, non_empty=True
        ),
        "snis": Checked(HostPatterns(), _snis_need_tls),
        "https_redirect_status_code": Integer(
            DEFAULT_HTTPS_REDIRECT_STATUS, one_of=HTTPS_REDIRECT_STATUSES
        ),
        "name": Text(),
        "paths": Paths(),
        "hosts": HostPatterns(),
        "methods": Methods(),
        "strip_path": Boolean(True),
        "preserve_host": Boolean(False),
        "headers": Headers(),
        "regex_priority": Integer(0, minimum=-MAX_REGEX_PRIORITY - 1, maximum=MAX_REGEX_PRIORITY),
        "path_handling": Text("v0", one_of=PATH_HANDLINGS),
        "tags": TAGS,
        # decK writes these with their defaults on every route: accept those, reject the rest
        "request_buffering": Boolean(True),
        "response_buffering": Boolean(True),
        "id": Ignored(),
        "created_at": Ignored(),
        "updated_at": Ignored(),
        "sources": Unsupported(accepts=FALSY),
        "destinations": Unsupported(accepts=FALSY),
        "expression": Unsupported(_EXPRESSIONS),
        "priority": Unsupported(_EXPRESSIONS),
        "plugins": Records(PLUGIN),
    },
    build=_draft,
    checks=(_matches_something,),
    annotations=True,
)


@dataclass(frozen=True, slots=True)
class TopLevelRoute:
    """A top-level route before it is attached to the service it names."""

    draft: RouteDraft
    service: str | None  # None: absent (is required) or unusable (said so)
    service_given: bool


def _top_level(reader: Reader, values: dict[str, Any]) -> TopLevelRoute:
    return TopLevelRoute(_draft(reader, values), values["service"], reader.has("service"))


TOP_LEVEL_ROUTE = ROUTE.extended({"service": Reference()}, build=_top_level)


def add_to_service(
    draft: RouteDraft,
    service: ServiceDraft,
    routes_by_name: dict[str, RouteDraft],
    problems: Findings,
) -> None:
    """Attach a route to its service; a route name is used once in the document."""
    draft.service = service
    service.routes.append(draft)
    name = draft.route.name
    if name is not None:
        first = routes_by_name.setdefault(name, draft)
        if first is not draft:
            problems.append(
                (join(draft.route.path, "name"), f"is already used by {first.route.path}")
            )
