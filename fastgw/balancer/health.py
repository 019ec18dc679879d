"""Target health: Kong's healthcheck settings and the counters that turn a target off and on.

Pure: outcomes in (a status, a connect failure, a timeout), a healthy/unhealthy verdict out, as
lua-resty-healthcheck (Kong's health checker) counts them. No sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

# Kong's defaults (kong/db/schema/entities/upstreams.lua), one place.
ACTIVE_TYPE: Final = "http"
ACTIVE_TIMEOUT: Final = 1.0  # seconds
ACTIVE_CONCURRENCY: Final = 10
ACTIVE_HTTP_PATH: Final = "/"
ACTIVE_HEALTHY_STATUSES: Final = (200, 302)
ACTIVE_UNHEALTHY_STATUSES: Final = (429, 404, 500, 501, 502, 503, 504, 505)
PASSIVE_HEALTHY_STATUSES: Final = (
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
    300, 301, 302, 303, 304, 305, 306, 307, 308,
)  # fmt: skip
PASSIVE_UNHEALTHY_STATUSES: Final = (429, 500, 503)
# Every interval and threshold defaults to 0: checks and circuit breaker off until configured.

# What happened to one request or probe, as the checker counts it.
SUCCESS: Final = 0
HTTP_FAILURE: Final = 1
TCP_FAILURE: Final = 2
TIMEOUT: Final = 3

# Kong's names for a target's state (Admin API /upstreams/{name}/health).
HEALTHY: Final = "HEALTHY"
UNHEALTHY: Final = "UNHEALTHY"
HEALTHCHECKS_OFF: Final = "HEALTHCHECKS_OFF"


class Thresholds:
    """One check's (active or passive) statuses and counts; a count of 0 switches it off."""

    __slots__ = (
        "healthy_statuses",
        "http_failures",
        "successes",
        "tcp_failures",
        "timeouts",
        "unhealthy_statuses",
    )

    def __init__(
        self,
        healthy_statuses: frozenset[int],
        successes: int,
        unhealthy_statuses: frozenset[int],
        http_failures: int,
        tcp_failures: int,
        timeouts: int,
    ) -> None:
        self.healthy_statuses = healthy_statuses
        self.successes = successes
        self.unhealthy_statuses = unhealthy_statuses
        self.http_failures = http_failures
        self.tcp_failures = tcp_failures
        self.timeouts = timeouts

    @property
    def counts_anything(self) -> bool:
        return bool(self.successes or self.http_failures or self.tcp_failures or self.timeouts)

    def outcome_of_status(self, status: int) -> int:
        """SUCCESS, HTTP_FAILURE, or -1 for a status this check does not count."""
        if status in self.healthy_statuses:
            return SUCCESS
        if status in self.unhealthy_statuses:
            return HTTP_FAILURE
        return -1

    def limit(self, outcome: int) -> int:
        if outcome == SUCCESS:
            return self.successes
        if outcome == HTTP_FAILURE:
            return self.http_failures
        if outcome == TCP_FAILURE:
            return self.tcp_failures
        return self.timeouts


class TargetHealth:
    """One target's verdict and counters: failures of one kind in a row turn it off, successes
    in a row turn it on again. A success clears the failure counts and a failure the successes
    (lua-resty-healthcheck); a target already healthy counts no successes, an unhealthy one no
    failures."""

    __slots__ = ("counts", "healthy")

    def __init__(self) -> None:
        self.healthy = True
        self.counts = [0, 0, 0, 0]  # by outcome: SUCCESS, HTTP_FAILURE, TCP_FAILURE, TIMEOUT

    def report(self, outcome: int, thresholds: Thresholds) -> bool:
        """Count `outcome` under `thresholds`; True when the verdict changed."""
        limit = thresholds.limit(outcome)
        counts = self.counts
        if outcome == SUCCESS:
            if self.healthy:
                counts[HTTP_FAILURE] = counts[TCP_FAILURE] = counts[TIMEOUT] = 0
                return False
            if not limit:
                return False
            counts[HTTP_FAILURE] = counts[TCP_FAILURE] = counts[TIMEOUT] = 0
            counts[SUCCESS] += 1
            if counts[SUCCESS] >= limit:
                self.set(True)
                return True
            return False
        if not self.healthy:
            counts[SUCCESS] = 0
            return False
        if not limit:
            return False
        counts[SUCCESS] = 0
        counts[outcome] += 1
        if counts[outcome] >= limit:
            self.set(False)
            return True
        return False

    def set(self, healthy: bool) -> None:
        self.healthy = healthy
        counts = self.counts
        counts[SUCCESS] = counts[HTTP_FAILURE] = counts[TCP_FAILURE] = counts[TIMEOUT] = 0


class ActiveCheck:
    """Kong's `healthchecks.active` of one upstream."""

    __slots__ = (
        "check_type",
        "concurrency",
        "headers",
        "healthy_interval",
        "http_path",
        "https_sni",
        "https_verify_certificate",
        "thresholds",
        "timeout",
        "unhealthy_interval",
    )

    def __init__(
        self,
        *,
        check_type: str,
        timeout: float,
        concurrency: int,
        http_path: str,
        https_sni: str | None,
        https_verify_certificate: bool,
        headers: Sequence[tuple[str, str]],
        healthy_interval: float,
        unhealthy_interval: float,
        thresholds: Thresholds,
    ) -> None:
        self.check_type = check_type
        self.timeout = timeout
        self.concurrency = concurrency
        self.http_path = http_path
        self.https_sni = https_sni
        self.https_verify_certificate = https_verify_certificate
        self.headers = tuple(headers)
        self.healthy_interval = healthy_interval
        self.unhealthy_interval = unhealthy_interval
        self.thresholds = thresholds

    @property
    def enabled(self) -> bool:
        return bool(self.healthy_interval or self.unhealthy_interval)
