"""fastgw: an OAuth-aware HTTP/1.1 edge gateway on uvloop + httptools.

The package root exposes the version and the embedding entry points.
"""

from fastgw import build_info as _build_info  # noqa: F401  (FASTGW_PURE=1 takes effect here)

__version__ = "0.1.0"
