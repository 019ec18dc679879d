"""An upstream target: where a route's requests go, its timeouts, and connecting with retries.

The exchange takes a pooled connection from `pool` or awaits `connect()`; a failure to connect
after every attempt the service allows raises `ConnectFailed` with the status to answer.
"""

from __future__ import annotations

import errno
import logging
from typing import Final

from fastgw.balancer.retry import connect_attempts
from fastgw.http.upstream import UpstreamConnection, UpstreamPool
from fastgw.ratelog import RateLimitedLog

log = logging.getLogger("fastgw.http")
_out_of_fds_log = RateLimitedLog(log, logging.ERROR)

_FD_ERRORS: Final = (errno.EMFILE, errno.ENFILE)


class ConnectFailed(Exception):
    """No connection to the upstream: 504 after a timeout, else 502."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class UpstreamTarget:
    """Where a route's requests go: the pool plus per-service timeouts (seconds) and retries."""

    __slots__ = (
        "connect_timeout",
        "host_header",
        "pool",
        "read_timeout",
        "retries",
        "version_and_host",
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
    ) -> None:
        self.pool = pool
        self.host_header = host_header
        # the end of the request line and the Host line, for requests that do not keep theirs
        self.version_and_host = b" HTTP/1.1\r\nhost: %b\r\n" % host_header
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.retries = retries

    async def connect(self) -> UpstreamConnection:
        """A new connection, trying as often as the service's `retries` allow."""
        status = 502
        for _ in range(connect_attempts(self.retries)):
            try:
                return await self.pool.connect(self.connect_timeout)
            except TimeoutError:
                status = 504
            except OSError as error:
                status = 502
                if error.errno in _FD_ERRORS:
                    _out_of_fds_log.emit(
                        "cannot connect to an upstream: out of file descriptors (%s); "
                        "answering 502",
                        error.strerror,
                    )
        raise ConnectFailed(status)
