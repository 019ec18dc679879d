"""The `rate-limiting` config: Kong's keys, types, defaults and checks
(kong/plugins/rate-limiting/schema.lua and Kong's redis record, kong/tools/redis/schema.lua),
declared once and read into `RateLimitingConfig`.

Kong's messages where Kong has one: the period order, `sync_rate`, the keys a policy or a
`limit_by` requires, and `cluster` refused as a DB-less Kong refuses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fastgw.config.schema import (
    Boolean,
    Integer,
    Number,
    Reader,
    Record,
    Schema,
    Shorthand,
    Text,
)

# Kong's periods, shortest first (the order of its period check and of the response headers)
PERIODS = ("second", "minute", "hour", "day", "month", "year")
LIMIT_BY = ("consumer", "credential", "ip", "service", "header", "path")
# A DB-less Kong offers these; `cluster` needs Kong's database
POLICIES = ("local", "redis")
SYNC_RATE_REALTIME = -1  # Kong's: every request counted in Redis as it comes
MIN_SYNC_RATE = 0.02  # seconds (Kong's bound)
DEFAULT_ERROR_CODE = 429
DEFAULT_ERROR_MESSAGE = "API rate limit exceeded"
DEFAULT_REDIS_PORT = 6379
DEFAULT_REDIS_TIMEOUT = 2000  # milliseconds (Kong's)
MAX_TIMEOUT = 2**31 - 2  # Kong's typedefs.timeout
# Kong's typedefs.header_name and typedefs.path checks
_HEADER_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/%:@!$&'()*+,;=-]*$")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


@dataclass(frozen=True, slots=True)
class RedisRecord:
    """Kong's `redis` record (one Redis server; Kong's names and defaults)."""

    host: str | None
    port: int
    timeout: int  # milliseconds: connect and each reply
    username: str | None
    password: str | None = field(repr=False)
    database: int
    ssl: bool
    ssl_verify: bool
    server_name: str | None


@dataclass(frozen=True, slots=True)
class RateLimitingConfig:
    limits: tuple[tuple[str, float], ...]  # (period, limit), shortest period first
    limit_by: str
    header_name: str | None
    path: str | None
    policy: str
    fault_tolerant: bool
    redis: RedisRecord
    hide_client_headers: bool
    error_code: int
    error_message: str
    sync_rate: float


def _redis(reader: Reader, values: dict[str, Any]) -> RedisRecord:
    return RedisRecord(**values)


REDIS: Schema[RedisRecord] = Schema(
    {
        "host": Text(),
        "port": Integer(DEFAULT_REDIS_PORT, minimum=0, maximum=65535),
        "timeout": Integer(DEFAULT_REDIS_TIMEOUT, minimum=0, maximum=MAX_TIMEOUT),
        "username": Text(),
        "password": Text(allow_empty=True),
        "database": Integer(0),
        "ssl": Boolean(False),
        "ssl_verify": Boolean(False),
        "server_name": Text(),
    },
    build=_redis,
)


def _shorthand(name: str, kind: Any) -> Shorthand:
    # Kong's deprecated flat keys of the redis record (to go in Kong 4.0)
    return Shorthand(
        f"redis_{name}",
        ("redis", name),
        kind,
        message=f"rate-limiting: config.redis_{name} is deprecated, please use "
        f"config.redis.{name} instead",
    )


SHORTHANDS = (
    _shorthand("host", Text()),
    _shorthand("port", Integer()),
    _shorthand("password", Text(allow_empty=True)),
    _shorthand("username", Text()),
    _shorthand("ssl", Boolean(False)),
    _shorthand("ssl_verify", Boolean(False)),
    _shorthand("server_name", Text()),
    _shorthand("timeout", Integer()),
    _shorthand("database", Integer()),
)


class Limit(Number):
    """A period's limit: a number > 0 (Kong's `gt = 0`; fractions allowed)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> Any:
        value = super().read(reader, key)
        if value is not None and value <= 0:
            reader.error(key, "value must be greater than 0")
            return None
        return value


def _lua_number(value: float) -> str:
    return f"{value:.1f}"  # Kong's %.1f in the period message


def _check_periods(reader: Reader, values: dict[str, Any]) -> None:
    """Kong's custom_validator: no longer period with a lower limit, sync_rate's use."""
    for index, lower in enumerate(PERIODS):
        low = values[lower]
        if low is None:
            continue
        for upper in PERIODS[index + 1 :]:
            high = values[upper]
            if high is not None and high < low:
                reader.error(
                    "",
                    f"The limit for {upper}({_lua_number(high)}) cannot be lower than the "
                    f"limit for {lower}({_lua_number(low)})",
                )
                return
    policy, sync_rate = values["policy"], values["sync_rate"]
    if policy != "redis" and sync_rate != SYNC_RATE_REALTIME:
        reader.error("", "sync_rate can only be used with the redis policy")
    elif policy == "redis" and sync_rate != SYNC_RATE_REALTIME and sync_rate < MIN_SYNC_RATE:
        reader.error("", "sync_rate must be greater than 0.02, or -1 to disable")


def _check_entity(reader: Reader, values: dict[str, Any]) -> None:
    """Kong's entity checks: a limit at least, and what a policy or a `limit_by` needs."""
    if all(values[period] is None for period in PERIODS):
        names = ", ".join(f"'config.{period}'" for period in PERIODS)
        reader.error("", f"at least one of these fields must be non-empty: {names}")
    if values["policy"] == "redis" and values["redis"].host is None:
        reader.error("redis.host", "required field missing")
    if values["limit_by"] == "header" and values["header_name"] is None:
        reader.error("header_name", "required field missing")
    if values["limit_by"] == "path" and values["path"] is None:
        reader.error("path", "required field missing")


class Policy(Text):
    """`policy`: Kong's one_of, worded as Kong words it."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("local", allow_empty=True)

    def read(self, reader: Reader, key: str) -> Any:
        value = super().read(reader, key)
        if value not in POLICIES:
            reader.error(key, f"expected one of: {', '.join(POLICIES)}")
            return "local"
        return value


class HeaderName(Text):
    """Kong's typedefs.header_name."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> Any:
        value = super().read(reader, key)
        if value is not None and not _HEADER_NAME.match(value):
            reader.error(
                key,
                f"bad header name '{value}', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
            )
            return None
        return value


class RequestPath(Text):
    """Kong's typedefs.path: "/" first, no empty segment, RFC 3986 characters."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> Any:
        value = super().read(reader, key)
        if value is None:
            return None
        if not value.startswith("/"):
            reader.error(key, "should start with: /")
        elif "//" in value:
            reader.error(key, "must not have empty segments")
        elif not _PATH.match(value):
            reader.error(
                key,
                f"invalid path: '{value}' (characters outside of the reserved list of RFC 3986 "
                "found)",
            )
        elif "%" in _PERCENT.sub("", value):
            reader.error(key, "invalid url-encoded value")
        else:
            return value
        return None


class ErrorCode(Number):
    """`error_code`: Kong's number > 0, which Kong can only send between 400 and 599 (any other
    fails each rejected request with a 500): refused here at load."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(DEFAULT_ERROR_CODE)

    def read(self, reader: Reader, key: str) -> Any:
        value = super().read(reader, key)
        if value != int(value) or not 400 <= value <= 599:
            reader.error(key, "must be an HTTP error status, between 400 and 599")
            return DEFAULT_ERROR_CODE
        return int(value)


def _config(reader: Reader, values: dict[str, Any]) -> RateLimitingConfig:
    limits = tuple((period, values.pop(period)) for period in PERIODS)
    return RateLimitingConfig(
        limits=tuple((period, limit) for period, limit in limits if limit is not None),
        **values,
    )


RATE_LIMITING: Schema[RateLimitingConfig] = Schema(
    {
        **{period: Limit() for period in PERIODS},
        "limit_by": Text("consumer", one_of=LIMIT_BY),
        "header_name": HeaderName(),
        "path": RequestPath(),
        "policy": Policy(),
        "fault_tolerant": Boolean(True),
        "redis": Record(REDIS),
        "hide_client_headers": Boolean(False),
        "error_code": ErrorCode(),
        "error_message": Text(DEFAULT_ERROR_MESSAGE, allow_empty=True),
        "sync_rate": Number(SYNC_RATE_REALTIME),
    },
    build=_config,
    checks=(_check_periods, _check_entity),
    shorthands=SHORTHANDS,
)
