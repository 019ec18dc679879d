"""openid-connect's deprecated keys Kong still accepts (its `shorthand_fields`), declared for
the schema engine (fastgw/config/schema.py `Shorthand`): each moved to its replacement, or
dropped, with Kong's warning.

Data only. The config's own ones (session and cookie renames of Kong 3.2, the flat
`session_redis_*` of 3.4-3.7) and those of the `cluster_cache_redis` record (Kong Enterprise's
redis schema: `timeout`, `sentinel_addresses`, `cluster_addresses`). Most replacements belong
to flows this gateway does not run (kong_keys.py IGNORED): accepted there, with no effect.
"""

from __future__ import annotations

from typing import Any

from fastgw.config.schema import Boolean, Declared, Integer, Number, Reader, Shorthand, Text

_GONE = "option does not exist anymore"  # Kong's word for a dropped session option


def _same_site(off_means: str) -> Any:
    """Kong's samesite translation: "off" became the given value, the rest as they are."""

    def translate(value: Any) -> Any:
        return off_means if value == "off" else value

    return translate


def _rename(old: str, new: str, kind: Declared, translate: Any = None) -> Shorthand:
    """A Kong 3.2 rename: no `replaced_with`, so the new key's value wins when both are set."""
    if translate is None:
        return Shorthand(old, (new,), kind, mismatch_is_error=False)
    return Shorthand(old, (new,), kind, translate, mismatch_is_error=False)


def _dropped(old: str, kind: Declared) -> Shorthand:
    return Shorthand(old, (), kind, message=_GONE)


SHORTHANDS = (
    _rename("authorization_cookie_lifetime", "authorization_rolling_timeout", Number()),
    _rename(
        "authorization_cookie_samesite",
        "authorization_cookie_same_site",
        Text(),
        _same_site("Default"),
    ),
    _rename("authorization_cookie_httponly", "authorization_cookie_http_only", Boolean(True)),
    _rename("session_cookie_lifetime", "session_rolling_timeout", Number()),
    _rename("session_cookie_idletime", "session_idling_timeout", Number()),
    _rename("session_cookie_samesite", "session_cookie_same_site", Text(), _same_site("Lax")),
    _rename("session_cookie_httponly", "session_cookie_http_only", Boolean(True)),
    _rename("session_memcache_prefix", "session_memcached_prefix", Text()),
    _rename("session_memcache_socket", "session_memcached_socket", Text()),
    _rename("session_memcache_host", "session_memcached_host", Text()),
    _rename("session_memcache_port", "session_memcached_port", Integer()),
    _rename(
        "session_redis_cluster_maxredirections",
        "session_redis_cluster_max_redirections",
        Integer(),
    ),
    _dropped("session_cookie_renew", Number()),
    _dropped("session_cookie_maxsize", Integer()),
    _dropped("session_strategy", Text()),
    _dropped("session_compressor", Text()),
)


class RedisAddresses(Declared):
    """Kong's `host:port` address list (`sentinel_addresses`, `cluster_addresses`): at least
    one, each with exactly one colon and a numeric port (so no IPv6 literal, as in Kong)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> None:
        raw = reader.raw.get(key)
        if not isinstance(raw, list) or not raw:
            reader.error(key, "must be a non-empty array of host:port addresses")
            return
        for index, address in enumerate(raw):
            parts = address.split(":") if isinstance(address, str) else []
            if len(parts) != 2 or not parts[1].isdigit():
                where = f"{reader.key_path(key)}[{index}]"
                reader.problems.append((where, f"Invalid Redis host address: {address}"))


def _nodes(host_key: str) -> Any:
    def translate(addresses: list[str]) -> list[dict[str, Any]]:
        nodes = []
        for address in addresses:
            host, _, port = address.partition(":")
            nodes.append({host_key: host, "port": int(port)})
        return nodes

    return translate


REDIS_SHORTHANDS = (
    Shorthand(
        "timeout",
        ("connect_timeout",),
        Integer(minimum=0),
        also=(("send_timeout",), ("read_timeout",)),
        message="is deprecated, use connect_timeout, send_timeout and read_timeout",
    ),
    Shorthand("sentinel_addresses", ("sentinel_nodes",), RedisAddresses(), _nodes("host")),
    Shorthand("cluster_addresses", ("cluster_nodes",), RedisAddresses(), _nodes("ip")),
)
