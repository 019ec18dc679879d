"""The process's open-file limit: raised to the hard limit at start, and how many client
connections a listener may hold under it (the rest stays for upstreams, IdPs, logs).
"""

from __future__ import annotations

import resource

# File descriptors kept from client connections: listeners, the loop's own, logs, IdP and Redis
# clients and, above all, one upstream connection per request in flight (nginx counts both kinds
# against worker_connections). An eighth of the open-file limit, and at least 64.
FD_RESERVE_MIN = 64
FD_RESERVE_DIVISOR = 8


def client_connection_limit(fd_limit: int | None = None) -> int:
    """Client connections one listener may hold, given the process's open-file (soft) limit."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_limit == resource.RLIM_INFINITY:
            return 1 << 62
    return max(1, fd_limit - max(FD_RESERVE_MIN, fd_limit // FD_RESERVE_DIVISOR))


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one (as nginx's worker_rlimit_nofile would).

    Returns (before, after). Idle keep-alive connections each hold a descriptor, and the usual
    soft default of 1024 would cap the gateway at about 900 clients.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        return soft, soft
    return soft, hard
