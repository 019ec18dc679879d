"""Response fields a plugin renders itself (RequestContext.set_response_lines, rate-limiting's
seven): set as `set_response_header` sets them, over the upstream's fields of those names,
after the other edits, on local answers too."""

from __future__ import annotations

from fastgw.http.edits import ResponseEdits
from fastgw.http.exchange import Exchange
from tests.unit.test_response_edits import proxied

LINES = b"x-ratelimit-remaining-minute: 4\r\nratelimit-remaining: 4\r\n"
NAMES = (b"x-ratelimit-remaining-minute", b"ratelimit-remaining")


def test_rendered_lines_follow_the_upstreams_fields() -> None:
    def edit(exchange: Exchange) -> None:
        exchange.set_response_lines(LINES, NAMES, b"ratelimit")

    answer = b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 2\r\n\r\nok"
    _, sent = proxied(edit, answer)
    assert sent == (b"HTTP/1.1 200 OK\r\nServer: up\r\n" + LINES + b"content-length: 2\r\n\r\nok")


def test_they_replace_the_upstreams_fields_of_those_names_whatever_their_case() -> None:
    def edit(exchange: Exchange) -> None:
        exchange.set_response_lines(LINES, NAMES, b"ratelimit")

    answer = (
        b"HTTP/1.1 200 OK\r\nRateLimit-Remaining: 99\r\nX-RateLimit-Remaining-Hour: 7\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    _, sent = proxied(edit, answer)
    # the upstream's own hour field stays: only the names set are replaced
    assert sent == (
        b"HTTP/1.1 200 OK\r\nX-RateLimit-Remaining-Hour: 7\r\n"
        + LINES
        + b"content-length: 2\r\n\r\nok"
    )


def test_an_edit_after_them_sees_them_as_ordinary_fields() -> None:
    edits = ResponseEdits()
    edits.set_lines(LINES, NAMES, b"ratelimit")
    edits.set(b"ratelimit-remaining", b"3")
    edits.add(b"vary", b"Origin")
    assert edits.apply(b"server: up\r\n") == (
        b"server: up\r\nx-ratelimit-remaining-minute: 4\r\nratelimit-remaining: 3\r\n"
        b"vary: Origin\r\n"
    )


def test_lines_after_other_edits_and_on_a_local_answer() -> None:
    edits = ResponseEdits()
    edits.set(b"x-ratelimit-remaining-minute", b"old")
    edits.set_lines(LINES, NAMES, b"ratelimit")
    assert edits.apply_to([(b"content-type", b"text/plain"), (b"RateLimit-Remaining", b"9")]) == [
        (b"content-type", b"text/plain"),
        (b"x-ratelimit-remaining-minute", b"4"),
        (b"ratelimit-remaining", b"4"),
    ]
