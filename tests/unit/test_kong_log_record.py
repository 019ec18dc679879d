"""Kong's log record: shapes, and what never reaches the file (secrets in headers and queries)."""

from __future__ import annotations

from fastgw.plugins.kong_log.record import (
    header_table,
    redact_query,
    request_headers,
    response_headers,
)


def test_secret_query_parameters_are_redacted_in_the_uri_and_the_table() -> None:
    query, table = redact_query(b"client_id=me&client_secret=s3cr%20t&flag&x=1&x=2&Password=p")
    assert "s3cr" not in query and query.count("REDACTED") == 2
    assert table == {
        "client_id": "me",
        "client_secret": "REDACTED",
        "flag": True,
        "x": ["1", "2"],
        "Password": "REDACTED",
    }
    assert redact_query(b"") == ("", {})


def test_headers_as_kong_tables_them_with_the_sensitive_ones_redacted() -> None:
    table = header_table(
        [("authorization", "Basic x"), ("x-a", "1"), ("x-a", "2"), ("x-token", "t")],
        frozenset({"authorization", "x-token"}),
    )
    assert table == {"authorization": "REDACTED", "x-a": ["1", "2"], "x-token": "REDACTED"}


def test_upstream_header_lines_are_tabled_with_set_cookie_redacted() -> None:
    fields = b"Content-Type: text/plain\r\nSet-Cookie: a=b\r\nX-Empty:\r\nVia: 1\r\nvia:  2 \r\n"
    assert response_headers(fields) == {
        "content-type": "text/plain",
        "set-cookie": "REDACTED",
        "x-empty": "",
        "via": ["1", "2"],
    }


def test_request_headers_a_plugin_reads_tokens_from_are_redacted_repeated_or_not() -> None:
    """openid-connect's bearer headers (RouteInfo.sensitive_headers): one value each, or a name
    given twice (the slow way), every value REDACTED."""
    redact = frozenset({"x-access-token", "access-token"})
    once = [(b"x-access-token", b"tok-1"), (b"access-token", b"tok-2"), (b"x-a", b"1")]
    assert request_headers(once, redact) == {
        "x-access-token": "REDACTED",
        "access-token": "REDACTED",
        "x-a": "1",
    }
    twice = [(b"x-access-token", b"tok-1"), (b"x-access-token", b"tok-3"), (b"x-a", b"1")]
    assert request_headers(twice, redact) == {
        "x-access-token": ["REDACTED", "REDACTED"],
        "x-a": "1",
    }
