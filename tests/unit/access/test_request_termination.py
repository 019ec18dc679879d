"""request-termination's every Kong key through a real gateway: the fixed answers and Kong's
texts, `trigger`, `echo`, the schema's checks, a decK dump's explicit nulls."""

from __future__ import annotations

import json
from typing import Any

import pytest
from access_wire import answer, get, settle, wire

from fastgw.config import ConfigError, parse_config


def terminating(config: str) -> Any:
    return wire(f"""
services:
  - name: api
    url: http://127.0.0.1:9
    routes: [{{name: r, paths: ["~/items/(?<id>[0-9]+)$", /]}}]
plugins: [{{name: request-termination, config: {config}}}]
""")


def test_kongs_default_answer_and_its_texts_by_status() -> None:
    response = terminating("{}").exchange(get("/x"))
    assert (response.status, json.loads(response.body)) == (503, {"message": "Service unavailable"})
    assert response.get("content-type") == "application/json; charset=utf-8"
    teapot = terminating("{status_code: 418}").exchange(get("/x"))
    assert (teapot.status, teapot.body, teapot.get("content-length")) == (418, b"", "0")
    quoted = terminating("""{status_code: 401, message: '"Error - Authentication required"'}""")
    assert json.loads(quoted.exchange(get("/x")).body) == {
        "message": '"Error - Authentication required"'
    }


def test_a_body_is_sent_as_it_is_with_its_content_type_or_none() -> None:
    html = terminating("{status_code: 200, body: '<h1>hi</h1>', content_type: text/html}")
    response = html.exchange(get("/x"))
    assert (response.body, response.get("content-type")) == (b"<h1>hi</h1>", "text/html")
    bare = terminating("{status_code: 200, body: plain}").exchange(get("/x"))
    assert (bare.body, bare.get("content-type")) == (b"plain", None)


def test_trigger_terminates_only_requests_that_carry_it() -> None:
    w = terminating("{status_code: 403, trigger: X-Stop_Now}")
    assert w.exchange(get("/x"), answer()).status == 200
    assert w.exchange(get("/x", "x-stop-now: 1")).status == 403
    assert w.exchange(get("/x?X-Stop_Now"), answer()).status == 403  # the exact query name
    assert w.exchange(get("/x?x-stop-now=1"), answer()).status == 200


@pytest.mark.asyncio
async def test_echo_answers_with_the_request_as_kong_describes_it() -> None:
    w = terminating("{status_code: 200, echo: true}")
    w.send(
        get(
            "/items/42?a=1&a=2&flag",
            "Content-Type: application/json",
            "X-Thing: one",
            method="POST",
            body=b'{"k": "v"}',
        )
    )
    await settle()
    response = w.response()
    echoed = json.loads(response.body)
    request = echoed["request"]
    assert request["method"] == "POST" and request["path"] == "/items/42"
    assert request["query"] == {"a": ["1", "2"], "flag": True}
    assert request["headers"]["x-thing"] == "one" and request["headers"]["host"] == "gw.test"
    assert request["body"] == {"k": "v"} and request["raw_body"] == '{"k": "v"}'
    assert (request["scheme"], request["host"], request["port"]) == ("http", "gw.test", 80)
    assert request["uri_captures"]["named"] == {"id": "42"}
    assert echoed["matched_route"]["name"] == "r" and echoed["matched_service"]["name"] == "api"
    assert set(echoed["kong"]) == {"worker_pid", "hostname"}
    assert "message" not in echoed  # Kong's table has no text for 200


def test_kongs_checks_across_keys() -> None:
    def problem(config: str) -> list[tuple[str, str]]:
        with pytest.raises(ConfigError) as raised:
            parse_config(
                '_format_version: "3.0"\n'
                f"plugins: [{{name: request-termination, config: {config}}}]",
                env={},
            )
        return raised.value.problems

    where = "plugins[0].config"
    assert problem("{message: a, body: b}") == [
        (where, "message cannot be used with content_type or body")
    ]
    assert problem("{content_type: text/html}") == [(where, "content_type requires a body")]
    assert problem("{echo: true, body: b}") == [
        (where, "echo cannot be used with content_type and body")
    ]
    assert problem("{trigger: 'a b'}")[0][0] == f"{where}.trigger"
    assert problem("{status_code: 600}") == [(f"{where}.status_code", "must be <= 599")]


def test_a_deck_dump_with_every_key_and_explicit_nulls_loads() -> None:
    config = parse_config(
        """
_format_version: "3.0"
plugins:
  - name: request-termination
    enabled: true
    protocols: [grpc, grpcs, http, https]
    config:
      {body: null, content_type: null, echo: false, message: null, status_code: 200, trigger: null}
""",
        env={},
    )
    [entry] = config.plugins
    assert entry.config.status_code == 200 and entry.config.trigger is None
