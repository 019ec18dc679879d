"""Where one attempt of a request goes upstream (`Hop`), and the trait through which the proxy
decides the attempts of a request (`Forwarding`): the wire asks, it never chooses.

The exchange sends to `exchange.target`, a hop. It asks its `Forwarding` (fastgw.proxy.forwarding
implements it) only when there is something to decide: where a balanced request goes first, what
follows a failed attempt, and, for a hop whose outcomes are watched, each status and failure.
A request to a plain service on a pooled connection asks nothing.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Final

from mypy_extensions import trait

from fastgw.http.upstream import UpstreamConnection, UpstreamPool
from fastgw.observability.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from fastgw.http.exchange import Exchange

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


@trait
class Forwarding:
    """What the proxy decides for one request going upstream.

    A method returning a hop sends the request there next (on a fresh connection); returning
    None means the forwarding has answered the exchange itself (`Exchange.respond_error`).
    """

    __slots__ = ()

    def first_hop(self, exchange: Exchange) -> Hop | None:
        """Where the request goes, asked once the plugins ran when `exchange.target` is unset."""
        raise NotImplementedError

    def connect_failed(self, exchange: Exchange, failure: int) -> Hop | None:
        """No connection to `exchange.target` (CONNECT_TIMEOUT, CONNECT_REFUSED, ...)."""
        raise NotImplementedError

    def lost(self, exchange: Exchange, reused: bool, got_response: bool) -> Hop | None:
        """The connection carrying the request ended before the response head. `reused`: it
        had served requests before; `got_response`: some of the response had come."""
        raise NotImplementedError

    def failed(self, exchange: Exchange, timed_out: bool) -> None:
        """A watched hop timed out or sent what cannot be forwarded; the exchange answers."""
        raise NotImplementedError

    def responded(self, exchange: Exchange, status: int) -> None:
        """A watched hop's response status."""
        raise NotImplementedError
