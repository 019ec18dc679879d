"""The worker's own memory, as the kernel counts it: resident bytes.

What Kong exports per worker as kong_memory_workers_lua_vms_bytes is its Lua heap; a Python
worker's nearest honest figure is its resident set (the interpreter's heap, OpenSSL's and the
loop's buffers): what grows when something leaks, what the OOM killer reads.
"""

from __future__ import annotations

import os
import resource

_STATM = "/proc/self/statm"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """Resident memory of this process now (Linux), else its peak (getrusage)."""
    try:
        with open(_STATM, "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
