"""Path forms only some upstreams resolve: escaped slashes (`%2F`, `%5C`) and backslashes.

The gateway routes on the path as Kong and nginx do: `/open/..%2Fsecure` is a path under `/open`
and `/open\\..\\secure` too. An upstream that decodes `%2F` before resolving dot segments, or
reads `\\` as `/` (Node's URL, IIS), resolves them to `/secure`: a route that protects `/secure`
never saw the request. Envoy's answer is `path_with_escaped_slashes_action`; the same four actions
apply here to backslashes. Chosen once per config; a config that keeps both pays nothing.
"""

from __future__ import annotations

from typing import Final

# the actions, Envoy's names (HttpConnectionManager.PathWithEscapedSlashesAction)
KEEP_UNCHANGED: Final = 0  # route and forward the path as it came (Kong, nginx)
REJECT_REQUEST: Final = 1  # 400
UNESCAPE_AND_REDIRECT: Final = 2  # 307 to the path as the upstream would read it
UNESCAPE_AND_FORWARD: Final = 3  # route and forward the path as the upstream would read it
ACTIONS: Final = {
    "keep_unchanged": KEEP_UNCHANGED,
    "reject_request": REJECT_REQUEST,
    "unescape_and_redirect": UNESCAPE_AND_REDIRECT,
    "unescape_and_forward": UNESCAPE_AND_FORWARD,
}

_PERCENT: Final = 0x25  # b"%"[0]
_BACKSLASH: Final = 0x5C  # b"\\"[0]
_ESCAPES: Final = ((b"%2F", b"/"), (b"%2f", b"/"), (b"%5C", b"\\"), (b"%5c", b"\\"))


class PathRules:
    """The two actions of one config; `apply` gives the verdict for one path."""

    __slots__ = ("backslashes", "escaped_slashes")

    def __init__(self, escaped_slashes: int, backslashes: int) -> None:
        self.escaped_slashes = escaped_slashes
        self.backslashes = backslashes

    @staticmethod
    def of(escaped_slashes: str, backslashes: str) -> PathRules | None:
        """The rules for the settings' names; None when both keep the path (nothing to do)."""
        rules = PathRules(ACTIONS[escaped_slashes], ACTIONS[backslashes])
        if rules.escaped_slashes == KEEP_UNCHANGED and rules.backslashes == KEEP_UNCHANGED:
            return None
        return rules

    def apply(self, path: bytes) -> tuple[int, bytes]:
        """(action, path): KEEP_UNCHANGED with `path` when no rule applies; REJECT_REQUEST;
        or a redirect or forward with the path unescaped (before dot segments are resolved)."""
        action = KEEP_UNCHANGED
        if self.escaped_slashes != KEEP_UNCHANGED and _PERCENT in path:
            unescaped = path
            for escape, byte in _ESCAPES:
                unescaped = unescaped.replace(escape, byte)
            if unescaped != path:
                if self.escaped_slashes == REJECT_REQUEST:
                    return REJECT_REQUEST, path
                action, path = self.escaped_slashes, unescaped
        if self.backslashes != KEEP_UNCHANGED and _BACKSLASH in path:
            if self.backslashes == REJECT_REQUEST:
                return REJECT_REQUEST, path
            path = path.replace(b"\\", b"/")
            # a redirect wins: the client should learn the path it meant
            following = self.backslashes
            action = (
                UNESCAPE_AND_REDIRECT if UNESCAPE_AND_REDIRECT in (action, following) else following
            )
        return action, path
