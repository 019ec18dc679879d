"""The `cors` step (Kong's access and header_filter phases): a browser's preflight is answered
here and never reaches the upstream; every other response gets its CORS fields.

Kong sets the response fields in header_filter; here they are response edits made in access,
which apply alike to the upstream's answer and to a local one (a later plugin's 401), as
Kong's header_filter runs for both. The Vary field is added to the upstream's (`Vary: Origin`
whenever the answer depends on the Origin), set on a preflight.
"""

from __future__ import annotations

from typing import Final

from fastgw.plugins.api import Plugin, RequestContext

from .origins import ANY, Matcher, compile_origin, is_plain, normalize_origin
from .schema import CorsConfig

PRIORITY: Final = 2000  # Kong's

_OPTIONS: Final = b"OPTIONS"
_ORIGIN: Final = b"origin"
_REQUEST_METHOD: Final = b"access-control-request-method"
_REQUEST_HEADERS: Final = b"access-control-request-headers"
_REQUEST_PRIVATE_NETWORK: Final = b"access-control-request-private-network"
_ALLOW_ORIGIN: Final = b"access-control-allow-origin"
_ALLOW_CREDENTIALS: Final = b"access-control-allow-credentials"
_ALLOW_HEADERS: Final = b"access-control-allow-headers"
_ALLOW_METHODS: Final = b"access-control-allow-methods"
_MAX_AGE: Final = b"access-control-max-age"
_ALLOW_PRIVATE_NETWORK: Final = b"access-control-allow-private-network"
_EXPOSE_HEADERS: Final = b"access-control-expose-headers"
_VARY: Final = b"vary"
_VARY_ORIGIN: Final = (_VARY, b"Origin")
_TRUE: Final = b"true"

# How the configured origins decide Access-Control-Allow-Origin (Kong's configure_origin):
_ALL: Final = 0  # none, or just "*": "*" for everyone
_ONE: Final = 1  # one plain origin: sent as it is, whatever the request's Origin
_LIST: Final = 2  # the request's Origin, normalized, if an entry matches it


class Fields:
    """The response fields of one answer, as Kong's set_header / add_header / clear_header make
    them: replacing the upstream's (`set`), added to them (`add`), or none (`clear`)."""

    __slots__ = ("added", "cleared", "set")

    def __init__(self) -> None:
        self.set: list[tuple[bytes, bytes]] = []
        self.added: list[tuple[bytes, bytes]] = []
        self.cleared: list[bytes] = []


class Cors(Plugin):
    name = "cors"
    priority = PRIORITY

    def __init__(self, config: CorsConfig) -> None:
        self.config = config
        origins = config.origins
        self._mode = _LIST
        self._one = b""
        if not origins or origins == (ANY,):
            self._mode = _ALL
        elif len(origins) == 1 and is_plain(origins[0]):
            self._mode = _ONE
            self._one = origins[0].encode()
        # Kong: a "*" anywhere in the list allows every request that has an Origin; the
        # entries are compiled (and the "*" found) before any of them is matched
        self._any_in_list = ANY in origins
        self._matchers: tuple[Matcher, ...] = tuple(
            m for m in (compile_origin(o) for o in origins) if m is not None
        )
        self._allow_headers = ",".join(config.headers).encode() if config.headers else None
        self._allow_methods = ",".join(config.methods).encode()
        self._max_age = _number(config.max_age) if config.max_age is not None else None
        self._expose = ",".join(config.exposed_headers).encode() if config.exposed_headers else None

    def access(self, ctx: RequestContext) -> None:
        origin = ctx.get_header(_ORIGIN)
        if ctx.method == _OPTIONS and origin and ctx.get_header(_REQUEST_METHOD) is not None:
            if not self.config.preflight_continue:
                self._preflight(ctx, origin)
            return  # continued preflights are proxied untouched, without CORS fields
        if not origin and not self.config.allow_origin_absent:
            return
        fields = self._origin_fields(origin)
        if self._expose is not None:
            fields.set.append((_EXPOSE_HEADERS, self._expose))
        for name in fields.cleared:
            ctx.remove_response_header(name)
        for name, value in fields.added:
            ctx.add_response_header(name, value)
        for name, value in fields.set:
            ctx.set_response_header(name, value)

    def _preflight(self, ctx: RequestContext, origin: bytes) -> None:
        """Kong's answer to a preflight: 200, no body, the allowed origin, methods, headers."""
        fields = self._origin_fields(origin)
        answer = [*fields.added, *fields.set]
        if self._allow_headers is not None:
            answer.append((_ALLOW_HEADERS, self._allow_headers))
        else:
            requested = ctx.get_header(_REQUEST_HEADERS)
            if requested is not None:
                answer.append((_ALLOW_HEADERS, requested))
        answer.append((_ALLOW_METHODS, self._allow_methods))
        if self._max_age is not None:
            answer.append((_MAX_AGE, self._max_age))
        if self.config.private_network and ctx.get_header(_REQUEST_PRIVATE_NETWORK) == _TRUE:
            answer.append((_ALLOW_PRIVATE_NETWORK, _TRUE))
        ctx.respond(200, b"", answer)

    def _origin_fields(self, origin: bytes | None) -> Fields:
        """Kong's configure_origin then configure_credentials."""
        fields = Fields()
        allow_all = self._allowed_origin(origin, fields)
        if self.config.credentials:
            if not allow_all:
                fields.set.append((_ALLOW_CREDENTIALS, _TRUE))
            elif origin:
                # "*" cannot go with credentials: the request's own Origin is echoed instead
                _vary(fields)
                fields.set = [field for field in fields.set if field[0] != _ALLOW_ORIGIN]
                fields.set += ((_ALLOW_ORIGIN, origin), (_ALLOW_CREDENTIALS, _TRUE))
        return fields

    def _allowed_origin(self, origin: bytes | None, fields: Fields) -> bool:
        """Access-Control-Allow-Origin; True when it is "*" (every origin allowed)."""
        mode = self._mode
        if mode == _ALL:
            fields.set.append((_ALLOW_ORIGIN, b"*"))
            return True
        _vary(fields)  # the answer depends on the Origin: caches must key on it
        if mode == _ONE:
            fields.set.append((_ALLOW_ORIGIN, self._one))
            return False
        if origin:
            if self._any_in_list:
                fields.set.append((_ALLOW_ORIGIN, b"*"))
                return True
            normalized = normalize_origin(origin.decode("latin-1"))
            for matcher in self._matchers:
                if matcher.matches(normalized):
                    fields.set.append((_ALLOW_ORIGIN, normalized.domain.encode("latin-1")))
                    return False
        fields.cleared.append(_ALLOW_ORIGIN)
        return False


def _vary(fields: Fields) -> None:
    if _VARY_ORIGIN not in fields.added:
        fields.added.append(_VARY_ORIGIN)


def _number(value: float) -> bytes:
    """Lua's tostring of a number: 3600 and 3600.0 are "3600"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).encode()
