"""Addresses as the config writes them: listen addresses (Kong's proxy_listen), upstream
targets, host names and host patterns, and the characters a URL path may not hold.

Each function gives the value or the reason it is not one (a str), which the caller records at
its key; `parse_listen` and `parse_listeners` are the command line's, and raise ConfigError.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from fastgw.config.model import Listener
from fastgw.config.reader import Findings, raise_if
from fastgw.config.vocabulary import DEFAULT_TARGET_PORT
from fastgw.errors import ConfigError

# characters of a DNS name (underscore too: seen in the wild, e.g. docker-compose service names)
HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
# Flags of a Kong proxy_listen entry fastgw knows; the others (http2, proxy_protocol, ...) are
# config errors rather than silently ignored.
LISTEN_FLAGS = ("ssl",)


def is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def split_listen(value: object) -> tuple[str, int] | str:
    """(host, port), or the reason `value` is not a listen address."""
    if not isinstance(value, str):
        return 'must be a string such as "127.0.0.1:8000"'
    host, colon, port_text = value.rpartition(":")
    if not colon:
        return f'must be "host:port", "[ipv6]:port" or ":port"; got {value!r}'
    if host.startswith("["):
        if not host.endswith("]") or not is_ipv6(host[1:-1]):
            return f"has an invalid IPv6 address; got {value!r}"
        host = host[1:-1]
    elif ":" in host:
        return f'IPv6 addresses need brackets, as in "[::1]:8000"; got {value!r}'
    elif not host:
        host = "0.0.0.0"
    elif not set(host.lower()) <= HOSTNAME_CHARS:
        return f"has an invalid host; got {value!r}"
    if not (port_text.isascii() and port_text.isdigit()):
        return f"has an invalid port; got {value!r}"
    port = int(port_text)
    if port > 65535:
        return f"port must be <= 65535; got {value!r}"
    return host, port


def split_target(value: str) -> tuple[str, int] | str:
    """A Kong target, "host:port" or "host" (port 8000, Kong's default), IPv6 in brackets."""
    if (value.startswith("[") and value.endswith("]")) or (":" not in value):
        value = f"{value}:{DEFAULT_TARGET_PORT}"
    result = split_listen(value)
    if isinstance(result, str):
        return result.replace('"host:port", "[ipv6]:port" or ":port"', '"host:port"')
    if result[1] == 0:
        return f"port must be >= 1; got {value!r}"
    return result


def listeners_of(items: Sequence[tuple[str, object]], problems: Findings) -> tuple[Listener, ...]:
    """Kong's proxy_listen entries, "host:port [ssl]", each with the key path of its problem."""
    listeners = []
    for path, item in items:
        if not isinstance(item, str) or not item.strip():
            problems.append((path, 'must be a string such as "0.0.0.0:8443 ssl"'))
            continue
        address, *flags = item.split()
        unknown = [flag for flag in flags if flag not in LISTEN_FLAGS]
        if unknown:
            problems.append((path, f"unsupported flag {unknown[0]!r} (known: ssl); got {item!r}"))
            continue
        result = split_listen(address)
        if isinstance(result, str):
            problems.append((path, result))
            continue
        listeners.append(Listener(result[0], result[1], "ssl" in flags))
    return tuple(listeners)


def parse_listen(value: str, key: str) -> tuple[str, int]:
    """(host, port) from "127.0.0.1:8000", "[::1]:8000" or ":8000" (all interfaces).

    Port 0 is allowed: the OS picks a free port (handy in tests).
    """
    result = split_listen(value)
    if isinstance(result, str):
        raise ConfigError([(key, result)])
    return result


def parse_listeners(value: str, key: str) -> tuple[Listener, ...]:
    """Kong's proxy_listen syntax: "127.0.0.1:8000, 127.0.0.1:8443 ssl"."""
    problems: Findings = []
    listeners = listeners_of([(key, part.strip()) for part in value.split(",")], problems)
    raise_if(problems)
    if not listeners:
        raise ConfigError([(key, "must name at least one address")])
    return listeners


def is_host_pattern(host: str) -> bool:
    """A host name, with at most a leading "*." or a trailing ".*" (Kong's route hosts)."""
    if host.startswith("*."):
        name = host[2:]
    elif host.endswith(".*"):
        name = host[:-2]
    else:
        name = host
    return bool(name) and set(name) <= HOSTNAME_CHARS and not name.startswith(".")


def host_pattern_problem(item: object, key: str) -> str | None:
    """Why `item` of a route's `hosts` (or `snis`, the same patterns) is not one, or None."""
    if not isinstance(item, str) or not item:
        return "must be a non-empty string"
    if ":" in item:
        return f"ports in {key} are not supported"
    if not is_host_pattern(item.lower()):
        return 'must be a host name, with at most a leading "*." or trailing ".*"'
    return None


def has_path_breaker(text: str) -> bool:
    """True when `text` holds a character that ends or corrupts a request-target path."""
    return any(char.isspace() or char in "?#" or not char.isprintable() for char in text)
