"""Escaped slashes and backslashes in a path (fastgw/proxy/path_rules.py): Envoy's four actions."""

from __future__ import annotations

import pytest

from fastgw.proxy.path_rules import (
    KEEP_UNCHANGED,
    REJECT_REQUEST,
    UNESCAPE_AND_FORWARD,
    UNESCAPE_AND_REDIRECT,
    PathRules,
)


def rules(escaped: str, backslash: str = "keep_unchanged") -> PathRules:
    found = PathRules.of(escaped, backslash)
    assert found is not None
    return found


def test_keeping_both_is_no_rule_at_all() -> None:
    assert PathRules.of("keep_unchanged", "keep_unchanged") is None


@pytest.mark.parametrize(
    ("escaped", "path", "expected"),
    [
        ("reject_request", b"/open/..%2Fsecure", (REJECT_REQUEST, b"/open/..%2Fsecure")),
        ("reject_request", b"/open/..%5csecure", (REJECT_REQUEST, b"/open/..%5csecure")),
        ("reject_request", b"/open/a%20b", (KEEP_UNCHANGED, b"/open/a%20b")),  # other escapes
        ("unescape_and_forward", b"/open/..%2fsecure", (UNESCAPE_AND_FORWARD, b"/open/../secure")),
        ("unescape_and_redirect", b"/a%2Fb", (UNESCAPE_AND_REDIRECT, b"/a/b")),
        ("unescape_and_forward", b"/plain", (KEEP_UNCHANGED, b"/plain")),
    ],
)
def test_escaped_slashes(escaped: str, path: bytes, expected: tuple[int, bytes]) -> None:
    assert rules(escaped).apply(path) == expected


def test_backslashes_read_as_slashes_and_a_redirect_wins() -> None:
    assert rules("keep_unchanged", "unescape_and_forward").apply(b"/open\\..\\secure") == (
        UNESCAPE_AND_FORWARD,
        b"/open/../secure",
    )
    # an escaped backslash becomes one, then the backslash rule reads it as "/"
    assert rules("unescape_and_forward", "unescape_and_redirect").apply(b"/a%5C..%5Cb") == (
        UNESCAPE_AND_REDIRECT,
        b"/a/../b",
    )
    assert rules("keep_unchanged", "reject_request").apply(b"/a\\b")[0] == REJECT_REQUEST
    # kept: an escaped backslash stays escaped when only backslashes have a rule
    assert rules("keep_unchanged", "reject_request").apply(b"/a%5Cb") == (KEEP_UNCHANGED, b"/a%5Cb")
