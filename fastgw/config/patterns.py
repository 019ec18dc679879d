"""Kong's route patterns: regex paths (`~/v[0-9]+/orders`) and regex header values (`~*^2\\.`).

Compiled when the config loads (a bad pattern is a config error naming the key); the router
runs what is compiled here.
"""

from __future__ import annotations

import re
from typing import Final

REGEX_MARK: Final = "~"  # Kong's prefix of a regex path
HEADER_REGEX_MARK: Final = "~*"  # Kong's prefix of a (case-insensitive) regex header value
PATH_HANDLINGS: Final = ("v0", "v1")
RegexError = re.error


def is_regex_path(path: str) -> bool:
    return path.startswith(REGEX_MARK)


def compile_path_regex(path: str) -> re.Pattern[bytes]:
    """Kong's regex path (`~/v[0-9]+/orders`) as a pattern anchored at the path's start.

    Named groups may be written `(?<name>...)` as in Kong (PCRE); percent-escapes are
    normalized as Kong does for regex paths (unreserved ones decoded, escaped when the decoded
    character is a regex metacharacter; the others upper-cased). Raises RegexError.
    """
    body = _normalize_regex_escapes(path[len(REGEX_MARK) :])
    body = re.sub(r"\(\?<(?![=!])", "(?P<", body)
    return re.compile(b"^" + body.encode())


def compile_header_regex(value: str) -> re.Pattern[bytes]:
    """A `~*regex` header value as a case-insensitive pattern. Raises RegexError."""
    return re.compile(value[len(HEADER_REGEX_MARK) :].encode(), re.IGNORECASE)


def _normalize_regex_escapes(body: str) -> str:
    def replace(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        if char.isascii() and (char.isalnum() or char in "-._~"):
            return re.escape(char)
        return match.group(0).upper()

    return re.sub(r"%([0-9A-Fa-f]{2})", replace, body)
