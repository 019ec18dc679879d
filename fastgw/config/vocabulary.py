"""Kong's names and defaults that the config reads and the layers above act on.

Config's own vocabulary (it imports nothing of the wire or the balancer): the balancer, the
health checker and the wire use the same strings and numbers, Kong's, from their own modules.
"""

from __future__ import annotations

from typing import Final

# "3.0" is Kong 3's format; decK still emits "1.1" and "2.1", which read the same for our subset
FORMAT_VERSIONS: Final = ("3.0", "2.1", "1.1")

# -- services and routes --------------------------------------------------------------------------

PROTOCOL_PORTS: Final[dict[str, int]] = {"http": 80, "https": 443}  # a service's protocols
DEFAULT_SERVICE_TIMEOUT_MS: Final = 60_000  # Kong's connect/write/read_timeout default
MAX_SERVICE_TIMEOUT_MS: Final = 2**31 - 2  # Kong's upper bound for service timeouts
DEFAULT_RETRIES: Final = 5  # Kong's service retries default
MAX_RETRIES: Final = 32_767  # Kong's upper bound for retries

# Kong's http subsystem protocols; ws and wss are its WebSocket routes' (wss, like https, asks
# for TLS). Any route proxies a WebSocket upgrade, as in Kong 3.
ROUTE_PROTOCOLS: Final = ("http", "https", "ws", "wss")
DEFAULT_ROUTE_PROTOCOLS: Final = ("http", "https")  # Kong's default
TLS_PROTOCOLS: Final = ("https", "wss")
# Kong's answer on a plain-HTTP request to a route that requires TLS: 426 with a JSON message,
# or one of these redirects to the https URL.
HTTPS_REDIRECT_STATUSES: Final = (426, 301, 302, 307, 308)
DEFAULT_HTTPS_REDIRECT_STATUS: Final = 426
# Kong's bound on regex_priority (a 32-bit signed integer in its schema)
MAX_REGEX_PRIORITY: Final = 2**31 - 1

# -- upstreams and targets ------------------------------------------------------------------------

ROUND_ROBIN: Final = "round-robin"
LEAST_CONNECTIONS: Final = "least-connections"
CONSISTENT_HASHING: Final = "consistent-hashing"
LATENCY: Final = "latency"  # Kong's, not supported yet
ALGORITHMS: Final = (ROUND_ROBIN, LEAST_CONNECTIONS, CONSISTENT_HASHING)
# Kong's hash_on values fastgw computes; cookie and uri_capture are errors saying so.
HASH_ON: Final = ("none", "consumer", "ip", "header", "path", "query_arg")
HASH_ON_UNSUPPORTED: Final = ("cookie", "uri_capture")
DEFAULT_SLOTS: Final = 10_000  # Kong's
MIN_SLOTS, MAX_SLOTS = 10, 2**16  # Kong's bounds
DEFAULT_WEIGHT: Final = 100  # Kong's target weight
MAX_WEIGHT: Final = 65_535
DEFAULT_TARGET_PORT: Final = 8000  # Kong's, for a target given without a port

# Kong's health check defaults (kong/db/schema/entities/upstreams.lua)
CHECK_TYPES: Final = ("tcp", "http", "https", "grpc", "grpcs")
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
MAX_COUNT: Final = 255  # Kong's one_byte_integer, for the healthy and unhealthy counts
MAX_INTERVAL: Final = 65_535  # seconds, Kong's bound for intervals and the probe timeout
