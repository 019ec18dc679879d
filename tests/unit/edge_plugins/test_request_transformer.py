"""request-transformer through a real gateway: what the upstream receives, in Kong's order and
with Kong's rules; its templates; its config errors."""

from __future__ import annotations

import json

import pytest
from gateway_wire import GatewayWire, answer, get, settle

from fastgw.config import ConfigError, parse_config
from fastgw.plugins.request_transformer import MAX_BODY_SIZE
from fastgw.plugins.request_transformer.templates import TemplateError, parse


def wire(config: str, paths: str = "[/]", service_path: str = "") -> GatewayWire:
    return GatewayWire(f"""
_format_version: "3.0"
services:
  - name: api
    url: http://127.0.0.1:9{service_path}
    routes:
      - name: api
        paths: {paths}
        strip_path: false
        plugins:
          - name: request-transformer
            config: {config}
""")


def forwarded(w: GatewayWire, request: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    """(request line, fields, body) of what reached the upstream; the client gets 200."""
    w.send(request)
    return _forwarded_now(w)


def _forwarded_now(w: GatewayWire) -> tuple[str, dict[str, list[str]], bytes]:
    sent = w.upstream_received()
    assert sent, "the request did not reach the upstream"
    w.respond(answer())
    assert w.response().status == 200
    head, _, body = sent.partition(b"\r\n\r\n")
    line, *lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, list[str]] = {}
    for field in lines:
        name, _, value = field.partition(":")
        fields.setdefault(name.lower(), []).append(value.strip())
    return line, fields, body


def test_headers_remove_rename_replace_add_append_in_kongs_order() -> None:
    w = wire(
        "{remove: {headers: [X-Gone]}, rename: {headers: ['X-Old:X-New']}, "
        "replace: {headers: ['X-Replaced:new', 'X-Absent:never']}, "
        "add: {headers: ['New-Header:Header Value', 'X-Replaced:not added']}, "
        "append: {headers: ['X-List:b', 'X-Fresh:1']}}"
    )
    _, fields, _ = forwarded(
        w,
        get("/", "X-Gone: 1", "X-Old: moved", "X-Replaced: old", "X-List: a", "X-New: lost"),
    )
    assert "x-gone" not in fields and "x-old" not in fields
    assert fields["x-new"] == ["moved"]  # Kong: the renamed value replaces what was there
    assert fields["x-replaced"] == ["new"]
    assert "x-absent" not in fields  # replace needs the header
    assert fields["new-header"] == ["Header Value"]
    assert fields["x-list"] == ["a", "b"]
    assert fields["x-fresh"] == ["1"]


def test_replacing_host_sets_the_upstream_host() -> None:
    w = wire("{replace: {headers: ['Host:backend.internal']}}")
    _, fields, _ = forwarded(w, get("/"))
    assert fields["host"] == ["backend.internal"]


def test_templates_read_the_request_as_it_came() -> None:
    w = wire(
        "{remove: {headers: [X-Source]}, add: {headers: ["
        "'X-Copy:$(headers.x_source)', 'X-Q:$(query_params.user)', "
        "\"X-Fallback:$(headers['x-none'] or query_params.none or 'unknown')\", "
        "\"X-Escaped:$('$(literal)')\", 'X-Flag:$(query_params.debug)']}}"
    )
    _, fields, _ = forwarded(w, get("/?user=ann%20b&debug", "X-Source: original"))
    assert fields["x-copy"] == ["original"]  # read before remove took it away
    assert fields["x-q"] == ["ann b"]
    assert fields["x-fallback"] == ["unknown"]
    assert fields["x-escaped"] == ["$(literal)"]
    assert fields["x-flag"] == ["true"]  # a flag argument, as Lua's tostring(true)


def test_a_rendered_value_cannot_end_the_field_early() -> None:
    w = wire("{add: {headers: ['X-Who:$(query_params.name)']}}")
    _, fields, _ = forwarded(w, get("/?name=a%0D%0AX-Injected:%201"))
    assert fields["x-who"] == ["a%0D%0AX-Injected: 1"]
    assert "x-injected" not in fields


def test_the_querystring_is_rewritten_and_sorted_as_kong_sets_it() -> None:
    w = wire(
        "{remove: {querystring: [drop]}, rename: {querystring: ['old:new']}, "
        "replace: {querystring: ['r:replaced']}, add: {querystring: ['a:added', 'r:no']}, "
        "append: {querystring: ['client_id: abc123', 'm:2']}}"
    )
    line, _, _ = forwarded(w, get("/p?z=last&drop=1&old=x&r=1&m=1"))
    assert line == (
        "GET /p?a=added&client_id=%20abc123&m=1&m=2&new=x&r=replaced&z=last HTTP/1.1"
    )  # Kong keeps the space of "client_id: abc123"


def test_replace_uri_uses_the_routes_regex_captures() -> None:
    w = wire(
        "{replace: {uri: '/anything/$(uri_captures[1])/$(uri_captures.kind)'}}",
        paths="['~/users/(\\d+)/(?<kind>[a-z]+)']",
    )
    line, _, _ = forwarded(w, get("/users/123/orders?x=1"))
    assert line == "GET /anything/123/orders?x=1 HTTP/1.1"


def test_replace_uri_on_a_plain_path_has_no_captures_and_the_service_path_is_not_prepended() -> (
    None
):
    w = wire("{replace: {uri: '/anything/$(uri_captures[1])'}}", service_path="/base")
    line, _, _ = forwarded(w, get("/x"))
    assert line == "GET /anything/ HTTP/1.1"


def test_a_rendered_uri_is_escaped_and_one_without_a_slash_fails_as_in_kong() -> None:
    w = wire("{replace: {uri: '/p/$(query_params.q)'}}")
    line, _, _ = forwarded(w, get("/?q=a%20b"))
    assert line == "GET /p/a%20b?q=a%20b HTTP/1.1"
    other = wire("{replace: {uri: '$(query_params.q)'}}")
    response = other.exchange(get("/?q=relative"))
    assert other.upstream_received() == b""
    assert response.status == 500
    assert json.loads(response.body) == {"message": "An unexpected error occurred"}


def test_http_method_changes_the_method_but_a_head_stays_a_head() -> None:
    w = wire("{http_method: POST}")
    line, _, _ = forwarded(w, get("/x"))
    assert line.startswith("POST /x ")
    w.send(get("/x", method="HEAD"))
    assert w.upstream_received().startswith(b"HEAD /x ")
    w.respond(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    response = w.response()
    assert response.status == 200 and response.body == b""


async def test_a_json_body_is_rewritten() -> None:
    w = wire(
        "{remove: {body: [secret]}, rename: {body: ['old:new']}, "
        "replace: {body: ['r:$(headers.x_r)', 'absent:x']}, add: {body: ['a:1', 'r:no']}, "
        "append: {body: ['list:b', 'one:2']}}"
    )
    body = json.dumps({"secret": "s", "old": 1, "r": "v", "list": ["a"], "one": "1"}).encode()
    w.send(get("/", "Content-Type: application/json", "X-R: rendered", method="POST", body=body))
    await settle()
    _, fields, sent = _forwarded_now(w)
    assert json.loads(sent) == {
        "new": 1, "r": "rendered", "list": ["a", "b"], "one": ["1", "2"], "a": "1",
    }  # fmt: skip
    assert fields["content-length"] == [str(len(sent))]


async def test_add_makes_a_json_body_from_nothing_and_bad_json_is_forwarded_unchanged() -> None:
    w = wire("{add: {body: ['k:v']}}")
    w.send(get("/", "Content-Type: application/json", method="POST"))
    await settle()
    _, _, sent = _forwarded_now(w)
    assert json.loads(sent) == {"k": "v"}
    w.send(get("/", "Content-Type: application/json", method="POST", body=b"{not json"))
    await settle()
    assert _forwarded_now(w)[2] == b"{not json"


async def test_a_form_body_is_rewritten() -> None:
    w = wire("{remove: {body: [a]}, add: {body: ['c:3']}, append: {body: ['b:x y']}}")
    w.send(
        get("/", "Content-Type: application/x-www-form-urlencoded", method="POST", body=b"a=1&b=2")
    )
    await settle()
    assert _forwarded_now(w)[2] == b"b=2&b=x%20y&c=3"


async def test_a_multipart_body_is_rewritten() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="keep"\r\n\r\nk\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="old"\r\n\r\no\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="gone"\r\n\r\ng\r\n--XyZ--\r\n'
    )
    w = wire("{rename: {body: ['old:new']}, remove: {body: [gone]}, add: {body: ['extra:e']}}")
    w.send(get("/", "Content-Type: multipart/form-data; boundary=XyZ", method="POST", body=body))
    await settle()
    sent = _forwarded_now(w)[2]
    assert sent == (
        b'--XyZ\r\nContent-Disposition: form-data; name="keep"\r\n\r\nk\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="new"\r\n\r\no\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="extra"\r\n\r\ne\r\n--XyZ--\r\n'
    )


async def test_a_body_bigger_than_the_limit_goes_upstream_untouched_and_is_counted() -> None:
    w = wire("{add: {body: ['k:v'], querystring: ['q:1']}}")
    body = b'{"big":"' + b"x" * MAX_BODY_SIZE + b'"}'
    w.send(get("/", "Content-Type: application/json", method="POST", body=body))
    await settle()
    line, _, sent = _forwarded_now(w)
    assert sent == body
    assert line.startswith("POST /?q=1 ")  # the rest of the transformation still happens
    assert w.plugin("request-transformer").status() == {"bodies_too_large": 1}  # type: ignore[attr-defined]


def test_no_body_rewrite_means_no_body_read() -> None:
    w = wire("{add: {headers: ['X-A:1']}}")
    w.send(get("/", "Content-Type: application/json", method="POST", body=b'{"a": 1}'))
    _, fields, sent = _forwarded_now(w)  # synchronous: no settle needed
    assert sent == b'{"a": 1}' and fields["x-a"] == ["1"]


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("plain", "plain"),
        ("Basic $(query_params['auth'])", "Basic s3cret"),
        ('$(uri_captures["user-id"] or query_params["user"] or "unknown")', "unknown"),
        ("$(headers.missing)", ""),
        ("a$(shared.note)b", "a-b"),
    ],
)
def test_templates_render_kongs_documented_forms(text: str, rendered: str) -> None:
    values = {("query_params", "auth"): "s3cret", ("shared", "note"): "-"}
    assert parse(text).render(lambda table, key: values.get((table, str(key)))) == rendered


@pytest.mark.parametrize(
    "text",
    [
        "$((function() return 1 end)())",
        "$(headers.a .. 'x')",
        "$(string.upper(headers.a))",
        "$(headers)",
        "$(headers.a:sub(1, 2))",
        "$(unclosed",
    ],
)
def test_arbitrary_lua_is_refused(text: str) -> None:
    with pytest.raises(TemplateError):
        parse(text)


def problems(config: str) -> list[tuple[str, str]]:
    text = f"""
_format_version: "3.0"
plugins:
  - name: request-transformer
    config: {config}
"""
    with pytest.raises(ConfigError) as raised:
        parse_config(text, env={})
    return raised.value.problems


def test_config_errors_are_kongs_and_name_the_key() -> None:
    assert problems(
        "{http_method: get, remove: {headers: ['bad name']}, rename: {headers: ['a:b c']}, "
        "add: {querystring: [lonely], headers: [novalue]}, "
        "append: {body: ['x:$(os.exit())']}}"
    ) == [
        ("plugins[0].config.http_method", "invalid value: get"),
        ("plugins[0].config.remove.headers[0]", "'bad name' is not a valid header"),
        ("plugins[0].config.rename.headers[0]", "'b c' is not a valid header"),
        ("plugins[0].config.add.headers[0]", "invalid value: novalue"),
        ("plugins[0].config.add.querystring[0]", "key 'lonely' has no value"),
        (
            "plugins[0].config.append.body[0]",
            "value '$(os.exit())' is not in supported format, error:$(os.exit()) is not "
            "supported: fastgw runs no Lua; a placeholder may read headers.NAME, "
            "query_params.NAME, uri_captures.NAME or uri_captures[N], shared.NAME, hold a "
            'string literal, and fall back with `or` ($(headers.x or "default"))',
        ),
    ]


def test_fastgw_refuses_what_it_cannot_send() -> None:
    assert problems(
        "{http_method: HEAD, add: {headers: ['Content-Length:5']}, "
        "append: {headers: ['Host:x']}, replace: {uri: relative}}"
    ) == [
        (
            "plugins[0].config.http_method",
            "HEAD is not supported: the client would wait for a body the upstream does not send",
        ),
        ("plugins[0].config.replace.uri", "must start with /"),
        (
            "plugins[0].config.add.headers[0]",
            "'Content-Length' is not supported: the gateway writes that header itself",
        ),
        (
            "plugins[0].config.append.headers[0]",
            "'host' is not supported: a request has one Host (replace it instead)",
        ),
    ]


def test_kongs_documentation_examples_load() -> None:
    for config in (
        "{add: {headers: ['New-Header:Header Value']}}",
        "{append: {querystring: ['client_id: abc123']}, remove: {headers: [Header-Name]}}",
        "{replace: {uri: '/anything/$(uri_captures[1])'}}",
    ):
        plugin = f"  - name: request-transformer\n    config: {config}\n"
        parse_config(f'_format_version: "3.0"\nplugins:\n{plugin}', env={})


async def test_http_method_get_folds_a_form_body_into_the_query_as_kong_does() -> None:
    w = wire("{http_method: GET, add: {querystring: [\"seen:$(query_params.a or 'none')\"]}}")
    form = b"a=1&b=x+y"
    w.send(
        get("/f?b=0", "Content-Type: application/x-www-form-urlencoded", method="POST", body=form)
    )
    await settle()
    line, _, body = _forwarded_now(w)
    # the form's arguments join the query (b given twice: both); templates read the query as
    # it came; the body is not removed (Kong does not)
    assert line == "GET /f?a=1&b=0&b=x%20y&seen=none HTTP/1.1"
    assert body == form
