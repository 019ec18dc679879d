"""Where one attempt of a request goes upstream (`Hop`): the pool, the Host line, the timeouts,
and why a connection to it could not be made.

The exchange sends to `exchange.target`, a hop; what follows a failed attempt is its
`Forwarding`'s to decide (fastgw/http/exchange.py declares the trait, fastgw.proxy.forwarding
implements it).
"""

from __future__ import annotations

import errno
import logging
from typing import Final

from fastgw.http.upstream import UpstreamConnection, UpstreamPool
from fastgw.observability.ratelog import RateLimitedLog

log = logging.getLogger("fastgw.http")
_out_of_fds_log = RateLimitedLog(log, logging.ERROR)

_FD_ERRORS: Final = (errno.EMFILE, errno.ENFILE)

# Why a connection to a hop could not be made (ConnectFailed.failure).
CONNECT_TIMEOUT: Final = 1  # none within connect_timeout: 504 when not tried again
CONNECT_REFUSED: Final = 2  # refused, unreachable, the TLS handshake failed: 502
OUT_OF_SOCKETS: Final = 3  # the gateway is out of file descriptors (not the hop's doing): 502


class ConnectFailed(Exception):
    """No connection to the hop; `failure` says why, `status` is the answer if none follows."""

    def __init__(self, failure: int) -> None:
        super().__init__(failure)
        self.failure = failure
        self.status = 504 if failure == CONNECT_TIMEOUT else 502


class Hop:
    """One upstream address as the wire needs it: the pool, the end of the request line with the
    Host line, the timeouts (seconds). Built once per service at config load."""

    __slots__ = (
        "connect_timeout",
        "connecting",
        "host_header",
        "pool",
        "read_timeout",
        "version_and_host",
        "watched",
        "write_timeout",
    )

    def __init__(
        self,
        pool: UpstreamPool,
        host_header: bytes,
        connect_timeout: float,
        read_timeout: float,
        write_timeout: float,
        watched: bool = False,
    ) -> None:
        self.pool = pool
        self.host_header = host_header
        # the end of the request line and the Host line, for requests that do not keep theirs
        self.version_and_host = b" HTTP/1.1\r\nhost: %b\r\n" % host_header
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        # the forwarding counts this hop's statuses and failures (a passive health check)
        self.watched = watched
        self.connecting = 0  # connections being opened, for least-connections

    async def connect(self) -> UpstreamConnection:
        """A new connection: one attempt (whether another follows is the forwarding's)."""
        self.connecting += 1
        try:
            return await self.pool.connect(self.connect_timeout)
        except TimeoutError:
            raise ConnectFailed(CONNECT_TIMEOUT) from None
        except OSError as error:
            if error.errno in _FD_ERRORS:
                _out_of_fds_log.emit(
                    "cannot connect to an upstream: out of file descriptors (%s); answering 502",
                    error.strerror,
                )
                raise ConnectFailed(OUT_OF_SOCKETS) from None
            raise ConnectFailed(CONNECT_REFUSED) from None
        finally:
            self.connecting -= 1

    @property
    def in_flight(self) -> int:
        """Requests on their way to or at this hop (one per busy connection)."""
        return len(self.pool.busy) + self.connecting
