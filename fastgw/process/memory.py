"""Giving the heap back after a flood of connections: glibc's malloc keeps what the connections
freed (OpenSSL's per-handshake state, the TLS protocol's buffers) and RSS never comes down.

Measured: 1,500 TLS connects that never sent a ClientHello, five times over, left RSS at 249 MiB
with no Python object of theirs alive; malloc_trim(0) brought it back to 51 MiB in 28 ms. So once
the open connections fell far below their peak and stopped falling, the worker trims, at most
every TRIM_INTERVAL.

It waits for the wave of closes to end: a trim halfway through it would take the peak down to
where the wave stood, and what the connections closing after it freed would stay in the process
for good (seen: RSS 92 MiB after tests/integration/test_tls_flood.py's flood, 44 MiB before it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger("fastgw")

# Trim once this many connections closed since the peak (about 40 KB each after a handshake:
# some 10 MiB), and the open ones are at most half the peak.
TRIM_AFTER_CLOSED: Final = 256
# A trim walks the heap (28 ms for 200 MiB): never more often than this.
TRIM_INTERVAL: Final = 10.0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


class HeapTrimmer:
    """A ticker sweep: watches a connection count and trims the heap after it fell."""

    def __init__(self, open_connections: Callable[[], int]) -> None:
        self.open_connections = open_connections
        self.peak = 0
        self.previous = 0  # the count at the last sweep
        self.last_trim = 0.0
        self.trims = 0
        self._trim = _malloc_trim()

    def sweep(self, now: float) -> None:
        current = self.open_connections()
        falling = current < self.previous
        self.previous = current
        if current > self.peak:
            self.peak = current
            return
        if (
            self._trim is None
            or falling
            or self.peak - current < TRIM_AFTER_CLOSED
            or current > self.peak // 2
            or now - self.last_trim < TRIM_INTERVAL
        ):
            return
        started = time.perf_counter()
        self._trim(0)
        log.debug(
            "heap trimmed after %d connections closed (%.1f ms)",
            self.peak - current,
            (time.perf_counter() - started) * 1000,
        )
        self.trims += 1
        self.peak = current
        self.last_trim = now
