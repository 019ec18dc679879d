"""An upstream's `healthchecks` record, Kong's: active probes and passive counting (the circuit
breaker), each with its `healthy` and `unhealthy` thresholds, and the upstream's `threshold`.

Every interval and count defaults to 0, which switches that check off, as in Kong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastgw.config.model import ActiveHealthcheck, CheckThresholds
from fastgw.config.schema import (
    Boolean,
    Checked,
    Declared,
    Integer,
    Number,
    Reader,
    Record,
    Schema,
    Text,
    join,
    values_of,
)
from fastgw.config.vocabulary import (
    ACTIVE_CONCURRENCY,
    ACTIVE_HEALTHY_STATUSES,
    ACTIVE_HTTP_PATH,
    ACTIVE_TIMEOUT,
    ACTIVE_TYPE,
    ACTIVE_UNHEALTHY_STATUSES,
    CHECK_TYPES,
    MAX_COUNT,
    MAX_INTERVAL,
    PASSIVE_HEALTHY_STATUSES,
    PASSIVE_UNHEALTHY_STATUSES,
)

MAX_CONCURRENCY = 2**31  # Kong's bound for active.concurrency


class Statuses(Declared):
    """Kong's `http_statuses`: an array of HTTP status codes (absent: None, the default's)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> frozenset[int] | None:
        reader.ignore(key)
        raw = reader.raw.get(key)
        if raw is None:
            return None
        if not isinstance(raw, list) or not all(
            isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 999
            for item in raw
        ):
            reader.error(key, "must be an array of integers between 100 and 999")
            return None
        return frozenset(raw)


class ProbeHeaders(Declared):
    """Kong's typedefs.headers: a map of name to an array of values (or one value)."""

    __slots__ = ()

    def read(self, reader: Reader, key: str) -> tuple[tuple[str, str], ...]:
        reader.ignore(key)
        raw = reader.raw.get(key)
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            reader.error(key, "must be a map of header names to arrays of values")
            return ()
        headers: list[tuple[str, str]] = []
        for name, values in raw.items():
            if isinstance(values, str):
                values = [values]
            ok = isinstance(name, str) and name.replace("-", "").isalnum()
            if (
                not ok
                or not isinstance(values, list)
                or not all(isinstance(v, str) for v in values)
            ):
                reader.error(join(key, str(name)), "must be a header name with an array of values")
                continue
            if any("\r" in v or "\n" in v for v in values):
                reader.error(join(key, str(name)), "values must not contain line breaks")
                continue
            headers += [(name, value) for value in values]
        return tuple(headers)


def _count() -> Integer:
    return Integer(0, minimum=0, maximum=MAX_COUNT)


def _interval() -> Number:
    return Number(0, minimum=0, maximum=MAX_INTERVAL)


# The keys of one `healthy` / `unhealthy` record; active ones have an `interval` too
_HEALTHY = {"http_statuses": Statuses(), "successes": _count()}
_UNHEALTHY = {
    "http_statuses": Statuses(),
    "http_failures": _count(),
    "tcp_failures": _count(),
    "timeouts": _count(),
}
PASSIVE_HEALTHY = Schema(_HEALTHY, build=values_of)
PASSIVE_UNHEALTHY = Schema(_UNHEALTHY, build=values_of)
ACTIVE_HEALTHY = Schema({"interval": _interval(), **_HEALTHY}, build=values_of)
ACTIVE_UNHEALTHY = Schema({"interval": _interval(), **_UNHEALTHY}, build=values_of)


def _thresholds(
    healthy: dict[str, Any],
    unhealthy: dict[str, Any],
    healthy_default: tuple[int, ...],
    unhealthy_default: tuple[int, ...],
) -> CheckThresholds:
    healthy_statuses = healthy["http_statuses"]
    unhealthy_statuses = unhealthy["http_statuses"]
    return CheckThresholds(
        healthy_statuses=frozenset(
            healthy_default if healthy_statuses is None else healthy_statuses
        ),
        successes=healthy["successes"],
        unhealthy_statuses=frozenset(
            unhealthy_default if unhealthy_statuses is None else unhealthy_statuses
        ),
        http_failures=unhealthy["http_failures"],
        tcp_failures=unhealthy["tcp_failures"],
        timeouts=unhealthy["timeouts"],
    )


def _no_grpc(reader: Reader, values: dict[str, Any]) -> None:
    if values["type"] in ("grpc", "grpcs"):
        reader.error("type", "grpc is not supported")
        values["type"] = ACTIVE_TYPE


def _passive(reader: Reader, values: dict[str, Any]) -> CheckThresholds | None:
    thresholds = _thresholds(
        values["healthy"],
        values["unhealthy"],
        PASSIVE_HEALTHY_STATUSES,
        PASSIVE_UNHEALTHY_STATUSES,
    )
    return thresholds if thresholds.counts_anything else None  # None: nothing is counted


def _active(reader: Reader, values: dict[str, Any]) -> ActiveHealthcheck | None:
    healthy, unhealthy = values["healthy"], values["unhealthy"]
    if not (healthy["interval"] or unhealthy["interval"]):
        return None  # no probes
    http_path = values["http_path"]
    return ActiveHealthcheck(
        check_type=values["type"],
        timeout=float(values["timeout"]) or ACTIVE_TIMEOUT,
        concurrency=values["concurrency"],
        http_path=http_path,
        https_sni=values["https_sni"],
        https_verify_certificate=values["https_verify_certificate"],
        headers=values["headers"],
        healthy_interval=float(healthy["interval"]),
        unhealthy_interval=float(unhealthy["interval"]),
        thresholds=_thresholds(
            healthy, unhealthy, ACTIVE_HEALTHY_STATUSES, ACTIVE_UNHEALTHY_STATUSES
        ),
    )


def _http_path(reader: Reader, values: dict[str, Any]) -> None:
    if not values["http_path"].startswith("/"):
        reader.error("http_path", 'must start with "/"')
        values["http_path"] = ACTIVE_HTTP_PATH


ACTIVE: Schema[ActiveHealthcheck | None] = Schema(
    {
        "type": Checked(Text(ACTIVE_TYPE, one_of=CHECK_TYPES), _no_grpc),
        "timeout": Number(ACTIVE_TIMEOUT, minimum=0, maximum=MAX_INTERVAL),
        "concurrency": Integer(ACTIVE_CONCURRENCY, minimum=1, maximum=MAX_CONCURRENCY),
        "http_path": Checked(Text(ACTIVE_HTTP_PATH), _http_path),
        "https_sni": Text(),
        "https_verify_certificate": Boolean(True),
        "headers": ProbeHeaders(),
        "healthy": Record(ACTIVE_HEALTHY),
        "unhealthy": Record(ACTIVE_UNHEALTHY),
    },
    build=_active,
)

PASSIVE: Schema[CheckThresholds | None] = Schema(
    {
        "healthy": Record(PASSIVE_HEALTHY),
        "unhealthy": Record(PASSIVE_UNHEALTHY),
        "type": Checked(Text("http", one_of=CHECK_TYPES), _no_grpc),
    },
    build=_passive,
)


@dataclass(frozen=True, slots=True)
class Healthchecks:
    threshold: float  # the percentage of healthy weight below which the upstream is down
    active: ActiveHealthcheck | None
    passive: CheckThresholds | None


def _healthchecks(reader: Reader, values: dict[str, Any]) -> Healthchecks:
    return Healthchecks(float(values["threshold"]), values["active"], values["passive"])


HEALTHCHECKS = Schema(
    {
        "threshold": Number(0, minimum=0, maximum=100),
        "active": Record(ACTIVE),
        "passive": Record(PASSIVE),
    },
    build=_healthchecks,
)
