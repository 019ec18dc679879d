"""fastgw: an OAuth-aware HTTP/1.1 edge gateway on uvloop + httptools.

The package root exposes the version and the embedding entry points.
"""

__version__ = "0.1.0"
