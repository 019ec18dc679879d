"""An upstream target: where requests go, its pool, its timeouts, and its health.

The exchange takes a pooled connection from `pool` or awaits `connect()`, which raises
`ConnectFailed` with the status to answer; it reports what happened (`report_*`), which feeds
the passive health check of a target that belongs to a Kong upstream with one configured.
"""

from __future__ import annotations

import errno
import logging
from typing import Final

from fastgw.balancer.health import (
    HEALTHY,
    TCP_FAILURE,
    TIMEOUT,
    UNHEALTHY,
    TargetHealth,
    Thresholds,
)
from fastgw.http.upstream import UpstreamConnection, UpstreamPool
from fastgw.observability.ratelog import RateLimitedLog

log = logging.getLogger("fastgw.http")
health_log = logging.getLogger("fastgw.balancer")
_out_of_fds_log = RateLimitedLog(log, logging.ERROR)

_FD_ERRORS: Final = (errno.EMFILE, errno.ENFILE)


class ConnectFailed(Exception):
    """No connection to the upstream: 504 after a timeout, else 502."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class UpstreamTarget:
    """One address requests go to: the pool plus per-service timeouts (seconds) and retries;
    for a target of a Kong upstream also its name, weight and health."""

    __slots__ = (
        "connect_timeout",
        "connecting",
        "health",
        "host_header",
        "name",
        "passive",
        "pool",
        "read_timeout",
        "retries",
        "upstream_name",
        "version_and_host",
        "weight",
        "write_timeout",
    )

    def __init__(
        self,
        pool: UpstreamPool,
        host_header: bytes,
        connect_timeout: float,
        read_timeout: float,
        write_timeout: float,
        retries: int,
        *,
        name: str = "",
        upstream_name: str = "",
        weight: int = 100,
        passive: Thresholds | None = None,
    ) -> None:
        self.pool = pool
        self.host_header = host_header
        # the end of the request line and the Host line, for requests that do not keep theirs
        self.version_and_host = b" HTTP/1.1\r\nhost: %b\r\n" % host_header
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.retries = retries
        self.name = name or f"{pool.host}:{pool.port}"  # Kong's `target`: host:port
        self.upstream_name = upstream_name  # "" for a service's own host
        self.weight = weight
        self.health = TargetHealth()
        self.passive = passive  # None: no passive health check (circuit breaker) counts
        self.connecting = 0  # connections being opened, for least-connections

    # -- connecting ------------------------------------------------------------------------------

    async def connect(self) -> UpstreamConnection:
        """A new connection (one attempt: retries are the exchange's, see retry.py)."""
        self.connecting += 1
        try:
            return await self.pool.connect(self.connect_timeout)
        except TimeoutError:
            self.report(TIMEOUT)
            raise ConnectFailed(504) from None
        except OSError as error:
            if error.errno in _FD_ERRORS:
                _out_of_fds_log.emit(
                    "cannot connect to an upstream: out of file descriptors (%s); answering 502",
                    error.strerror,
                )
            else:
                self.report(TCP_FAILURE)
            raise ConnectFailed(502) from None
        finally:
            self.connecting -= 1

    @property
    def in_flight(self) -> int:
        """Requests on their way to or at this target (one per busy connection)."""
        return len(self.pool.busy) + self.connecting

    # -- passive health --------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """Kong's name for the target's health."""
        return HEALTHY if self.health.healthy else UNHEALTHY

    def report(self, outcome: int) -> None:
        """A request's outcome (health.SUCCESS, HTTP_FAILURE, TCP_FAILURE or TIMEOUT)."""
        passive = self.passive
        if passive is not None and self.health.report(outcome, passive):
            self.health_changed("passive")

    def report_status(self, status: int) -> None:
        passive = self.passive
        if passive is not None:
            outcome = passive.outcome_of_status(status)
            if outcome >= 0 and self.health.report(outcome, passive):
                self.health_changed("passive")

    def report_active(self, outcome: int, thresholds: Thresholds) -> None:
        if self.health.report(outcome, thresholds):
            self.health_changed("active")

    def health_changed(self, check: str) -> None:
        health_log.warning(
            "upstream %s target %s is now %s (%s health check)",
            self.upstream_name,
            self.name,
            "healthy" if self.health.healthy else "unhealthy",
            check,
        )
