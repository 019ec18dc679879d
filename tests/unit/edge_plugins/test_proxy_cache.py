"""proxy-cache through a real gateway (the upstream counted by what it receives), its store's
bound and eviction, its key and Kong's directives."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from gateway_wire import GatewayWire, Response, answer, get

import fastgw.plugins as registry
from fastgw.config import ConfigError, parse_config
from fastgw.plugins.proxy_cache import ProxyCache
from fastgw.plugins.proxy_cache.directives import (
    media_type_matches,
    parse_directives,
    parse_media_type,
    resource_ttl,
)
from fastgw.plugins.proxy_cache.key import headers_part, query_part
from fastgw.plugins.proxy_cache.store import Entry, MemoryStore

JSON = {"Content_Type": "application/json"}


@pytest.fixture(autouse=True)
def header_auth(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(registry._MODULES, "header-auth", "header_auth")
    yield


def wire(config: str = "{strategy: memory}", *, auth: bool = False, extra: str = "") -> GatewayWire:
    plugins = "\n  - name: header-auth" if auth else ""
    return GatewayWire(f"""
_format_version: "3.0"
{extra}
consumers: [{{username: alice}}, {{username: bob}}]
services:
  - name: api
    url: http://127.0.0.1:9
    routes:
      - {{name: api, paths: [/api], strip_path: false}}
      - {{name: other, paths: [/other], strip_path: false}}
plugins:
  - name: proxy-cache
    config: {config}{plugins}
""")


class Counted:
    """A wire whose upstream answers every request it receives, and counts them."""

    def __init__(self, w: GatewayWire, **fields: str) -> None:
        self.w = w
        self.fields = fields or JSON
        self.upstream_requests = 0

    def __call__(self, request: bytes, body: bytes = b"{}", **fields: str) -> Response:
        self.w.send(request)
        if self.w.upstream_received():
            self.upstream_requests += 1
            self.w.respond(answer(body, **(fields or self.fields)))
        return self.w.response()

    def store(self) -> MemoryStore:
        plugin = self.w.plugin("proxy-cache")
        assert isinstance(plugin, ProxyCache)
        return plugin.cache.store


def test_a_miss_then_hits_reach_the_upstream_once() -> None:
    call = Counted(wire())
    first = call(get("/api/a"), b'{"n": 1}')
    assert first.get("x-cache-status") == "Miss" and first.get("age") is None
    key = first.get("x-cache-key")
    assert key is not None and re.fullmatch("[0-9a-f]{64}", key)
    for _ in range(3):
        hit = call(get("/api/a"))
        assert hit.status == 200 and hit.body == b'{"n": 1}'
        assert hit.get("x-cache-status") == "Hit" and hit.get("x-cache-key") == key
        assert hit.get("age") == "0"
        assert hit.get("content-type") == "application/json"
    assert call.upstream_requests == 1
    assert call.w.plugin("proxy-cache").status()["hit"] == 3  # type: ignore[attr-defined]


def test_the_key_sorts_query_arguments_and_separates_routes() -> None:
    call = Counted(wire())
    call(get("/api/a?b=2&a=1"))
    assert call(get("/api/a?a=1&b=2")).get("x-cache-status") == "Hit"
    assert call(get("/api/a?a=1&b=3")).get("x-cache-status") == "Miss"
    assert call(get("/other/a?a=1&b=2")).get("x-cache-status") == "Miss"  # another route
    assert call.upstream_requests == 3


def test_vary_query_params_and_vary_headers_make_the_key() -> None:
    call = Counted(wire("{strategy: memory, vary_query_params: [page], vary_headers: [Accept]}"))
    call(get("/api/x?page=1&utm=a", "Accept: text/plain"))
    assert call(get("/api/x?page=1&utm=b", "Accept: text/plain")).get("x-cache-status") == "Hit"
    assert call(get("/api/x?page=1", "Accept: application/json")).get("x-cache-status") == "Miss"
    assert call.upstream_requests == 2


def test_ignore_uri_case() -> None:
    call = Counted(wire("{strategy: memory, ignore_uri_case: true}"))
    call(get("/api/Thing"))
    assert call(get("/api/thing")).get("x-cache-status") == "Hit"


def test_methods_statuses_and_content_types_not_configured_bypass() -> None:
    call = Counted(wire("{strategy: memory, request_method: [GET]}"))
    assert call(get("/api/p", method="POST")).get("x-cache-status") == "Bypass"
    assert call(get("/api/s"), status="500 Internal Server Error").get("x-cache-status") == (
        "Bypass"
    )
    # Kong's exact match: parameters must be the configured ones
    assert (
        call(get("/api/c"), Content_Type="application/json; charset=utf-8").get("x-cache-status")
        == "Bypass"
    )
    assert call(get("/api/c")).get("x-cache-status") == "Miss"  # nothing stored before
    assert call(get("/api/p", method="POST")).get("x-cache-status") == "Bypass"
    assert call.upstream_requests == 5


def test_a_stale_entry_is_refreshed_and_an_expired_one_is_gone() -> None:
    call = Counted(wire("{strategy: memory, cache_ttl: 30, storage_ttl: 600}"))
    call(get("/api/t"))
    (entry,) = call.store().entries.values()
    entry.stored_at -= 31  # older than cache_ttl, still in storage
    refreshed = call(get("/api/t"), b'{"new": true}')
    assert refreshed.get("x-cache-status") == "Refresh"
    assert call(get("/api/t")).body == b'{"new": true}'
    (entry,) = call.store().entries.values()
    entry.expires_at = entry.stored_at - 1  # past its storage TTL
    assert call(get("/api/t")).get("x-cache-status") == "Miss"
    assert call.upstream_requests == 3


def test_an_authenticated_request_reads_only_its_consumers_cache() -> None:
    call = Counted(wire(auth=True))
    assert call(get("/api/me", "X-Key: alice"), b"alice's").get("x-cache-status") == "Miss"
    bob = call(get("/api/me", "X-Key: bob"), b"bob's")
    assert bob.get("x-cache-status") == "Miss" and bob.body == b"bob's"
    assert call(get("/api/me", "X-Key: alice")).body == b"alice's"
    assert call(get("/api/me", "X-Key: bob")).body == b"bob's"
    # a credential without a consumer (openid-connect's) has a cache of its own too
    assert call(get("/api/me", "X-Token: client-1"), b"c1").get("x-cache-status") == "Miss"
    assert call(get("/api/me", "X-Token: client-2"), b"c2").body == b"c2"
    # no X-Cache-Status when authentication answered first (Kong's spec)
    denied = call(get("/api/me"))
    assert denied.status == 401 and denied.get("x-cache-status") is None
    assert call.upstream_requests == 4


def test_an_authorization_no_plugin_authenticated_is_never_cached() -> None:
    call = Counted(wire())
    first = call(get("/api/private", "Authorization: Bearer upstream-checks-this"), b"mine")
    assert first.get("x-cache-status") == "Bypass"
    second = call(get("/api/private", "Authorization: Bearer someone-else"), b"theirs")
    assert second.get("x-cache-status") == "Bypass" and second.body == b"theirs"
    assert call(get("/api/private")).get("x-cache-status") == "Miss"
    assert call.upstream_requests == 3


def test_a_response_that_sets_a_cookie_is_not_stored() -> None:
    call = Counted(wire())
    first = call(get("/api/login"), Content_Type="application/json", Set_Cookie="session=1")
    assert first.get("x-cache-status") == "Bypass"
    assert call(get("/api/login")).get("x-cache-status") == "Miss"


def test_replayed_fields_leave_out_cache_fields_and_rate_limit_counts() -> None:
    call = Counted(wire())
    call(
        get("/api/f"),
        Content_Type="application/json",
        X_RateLimit_Remaining_Minute="4",
        X_RateLimit_Limit_Minute="5",
        Age="100",
    )
    hit = call(get("/api/f"))
    assert hit.get("x-ratelimit-remaining-minute") is None
    assert hit.get("x-ratelimit-limit-minute") == "5"
    assert hit.all("age") == ["0"]


def test_diagnostic_fields_follow_their_toggles_and_kong_debug_shows_them() -> None:
    call = Counted(
        wire(
            "{strategy: memory, response_headers: {age: false, X-Cache-Status: false, "
            "X-Cache-Key: false}}"
        )
    )
    miss = call(get("/api/d"))
    assert miss.get("x-cache-status") is None and miss.get("x-cache-key") is None
    hit = call(get("/api/d"))
    assert hit.get("age") is None and hit.get("x-cache-status") is None
    debug = call(get("/api/d", "Kong-Debug: 1"))
    assert debug.get("x-cache-status") == "Hit" and debug.get("age") == "0"
    assert call.upstream_requests == 1


CACHE_CONTROL = "{strategy: memory, cache_control: true}"


def test_cache_control_response_directives() -> None:
    call = Counted(wire(CACHE_CONTROL))
    assert call(get("/api/none")).get("x-cache-status") == "Bypass"  # no freshness: not stored
    for directive in ("private, max-age=60", "no-store", "no-cache, max-age=60", "max-age=0"):
        fields = {"Content_Type": "application/json", "Cache_Control": directive}
        assert call(get("/api/cc"), **fields).get("x-cache-status") == "Bypass", directive
    fields = {"Content_Type": "application/json", "Cache_Control": "public, s-maxage=60"}
    assert call(get("/api/cc"), **fields).get("x-cache-status") == "Miss"
    assert call(get("/api/cc")).get("x-cache-status") == "Hit"
    (entry,) = call.store().entries.values()
    assert entry.ttl == 60


def test_cache_control_request_directives() -> None:
    call = Counted(wire(CACHE_CONTROL), Content_Type="application/json", Cache_Control="max-age=60")
    assert call(get("/api/r", "Cache-Control: only-if-cached")).status == 504
    assert call.upstream_requests == 0
    call(get("/api/r"))
    assert call(get("/api/r", "Cache-Control: no-cache")).get("x-cache-status") == "Bypass"
    assert call(get("/api/r", "Cache-Control: only-if-cached")).get("x-cache-status") == "Hit"
    (entry,) = call.store().entries.values()
    entry.stored_at -= 20
    assert call(get("/api/r", "Cache-Control: max-age=10")).get("x-cache-status") == "Refresh"
    (entry,) = call.store().entries.values()
    entry.stored_at -= 50
    assert call(get("/api/r", "Cache-Control: min-fresh=20")).get("x-cache-status") == "Refresh"
    (entry,) = call.store().entries.values()
    entry.stored_at -= 70  # stale: served only to a client that accepts it
    assert call(get("/api/r", "Cache-Control: max-stale=30")).get("x-cache-status") == "Hit"
    assert call(get("/api/r")).get("x-cache-status") == "Refresh"


def test_a_response_too_big_for_the_store_streams_through_uncached() -> None:
    call = Counted(
        wire(
            "{strategy: memory, memory: {dictionary_name: tiny}}",
            extra="_fastgw: {memory_stores: {tiny: 4k}}",
        )
    )
    big = b'"' + b"x" * 8000 + b'"'
    response = call(get("/api/big"), big)
    assert response.body == big and response.get("x-cache-status") == "Miss"
    assert call(get("/api/big"), big).get("x-cache-status") == "Miss"
    assert call.store().entries == {} and call.store().pending == 0
    assert call.w.plugin("proxy-cache").status()["too_large"] == 2  # type: ignore[attr-defined]


def test_the_store_evicts_the_least_recently_used_to_stay_in_its_bound() -> None:
    call = Counted(
        wire(
            "{strategy: memory, memory: {dictionary_name: small}}",
            extra="_fastgw: {memory_stores: {small: 8k}}",
        )
    )
    body = b'"' + b"y" * 1500 + b'"'
    for name in "abc":
        call(get(f"/api/{name}"), body)
    store = call.store()
    assert call(get("/api/a")).get("x-cache-status") == "Hit"  # a is now the most recent
    call(get("/api/d"), body)  # needs room: b goes
    assert call(get("/api/b")).get("x-cache-status") == "Miss"
    assert store.used <= store.capacity and store.evictions >= 1
    usage = call.w.plugin("proxy-cache").stores()  # type: ignore[attr-defined]
    assert [(u.name, u.capacity_bytes) for u in usage] == [("small", 8 * 1024)]
    assert usage[0].used_bytes == store.used


def test_instances_naming_one_dictionary_share_one_store_reported_once() -> None:
    w = GatewayWire("""
_format_version: "3.0"
services:
  - name: a
    url: http://127.0.0.1:9
    routes: [{name: a, paths: [/a]}]
    plugins: [{name: proxy-cache, config: {strategy: memory}}]
  - name: b
    url: http://127.0.0.1:10
    routes: [{name: b, paths: [/b]}]
    plugins: [{name: proxy-cache, config: {strategy: memory, cache_ttl: 10}}]
""")
    first, second = (p for p in w.gateway.plugins if isinstance(p, ProxyCache))
    assert first.cache.store is second.cache.store
    assert len(first.stores()) + len(second.stores()) == 1


def test_kongs_missing_shared_dict() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            '_format_version: "3.0"\nplugins:\n  - name: proxy-cache\n'
            "    config: {strategy: memory, memory: {dictionary_name: my_cache}}\n",
            env={},
        )
    assert raised.value.problems == [
        (
            "plugins[0].config.memory.dictionary_name",
            "missing shared dict 'my_cache' (declare its size in _fastgw.memory_stores)",
        )
    ]


def test_config_errors_are_kongs() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            '_format_version: "3.0"\nplugins:\n  - name: proxy-cache\n'
            "    config: {response_code: [], request_method: [DELETE], cache_ttl: 0}\n",
            env={},
        )
    assert raised.value.problems == [
        ("plugins[0].config.response_code", "must not be empty"),
        (
            "plugins[0].config.request_method[0]",
            "must be one of HEAD, GET, POST, PATCH, PUT; got 'DELETE'",
        ),
        ("plugins[0].config.cache_ttl", "must be >= 1"),
        ("plugins[0].config.strategy", "is required"),
    ]


# -- the parts ------------------------------------------------------------------------------------


def test_the_store_bound_counts_stored_and_in_flight_bytes() -> None:
    store = MemoryStore("s", 10_000)
    assert store.reserve(6_000) and not store.reserve(5_000)
    store.release(6_000)
    entry = Entry(200, ((b"a", b"b"),), b"x" * 3000, 0.0, 60.0, 60.0, b"k" * 64)
    assert store.put(b"k1", entry) and store.used == entry.size
    assert store.get(b"k1", 59.0) is entry
    assert store.get(b"k1", 60.0) is None and store.used == 0  # past its storage TTL
    huge = Entry(200, (), b"x" * 20_000, 0.0, 60.0, 0.0, b"k" * 64)
    assert not store.put(b"k2", huge)
    store.put(b"k3", entry)
    store.resize(1000)
    assert store.entries == {} and store.used == 0


def test_query_and_headers_parts_follow_kongs_encoding() -> None:
    assert query_part(b"b=2&a=1&a=0&flag", ()) == b"a=0,1:b=2:flag"
    assert query_part(b"b=2&a=1&c=3", ("c", "b", "missing")) == b"c=3:b=2"
    assert query_part(b"q=a+b%21", ()) == b"q=a b!"
    headers = [(b"accept", b"b"), (b"accept", b"a"), (b"x", b"1")]
    assert headers_part(headers, (b"x", b"accept", b"none")) == b"x=1:accept=a,b"


def test_directives_and_media_types() -> None:
    assert parse_directives([b"max-age=60, No-Cache", b'private="set-cookie"']) == {
        "max-age": 60,
        "no-cache": True,
        "private": "set-cookie",
    }
    assert resource_ttl({"s-maxage": 10, "max-age": 60}, None, 0.0) == 10
    assert resource_ttl({}, b"Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60
    assert resource_ttl({}, b"not a date", 40.0) == 0
    json_type = parse_media_type("application/json")
    assert json_type is not None
    utf8 = parse_media_type("Application/JSON; Charset=utf-8")
    assert utf8 is not None and not media_type_matches(json_type, utf8)
    star = parse_media_type("text/*")
    plain = parse_media_type("text/plain")
    assert star is not None and plain is not None and media_type_matches(star, plain)


async def test_a_reload_keeps_the_store_and_what_it_holds() -> None:
    text = """
_format_version: "3.0"
services:
  - name: api
    url: http://127.0.0.1:9
    routes: [{name: api, paths: [/api]}]
plugins:
  - name: proxy-cache
    config: {strategy: memory, cache_ttl: TTL}
"""
    call = Counted(GatewayWire(text.replace("TTL", "300")))
    call(get("/api/kept"))
    before = call.w.plugin("proxy-cache")
    await call.w.gateway.reload(parse_config(text.replace("TTL", "600"), env={}))
    after = call.w.plugin("proxy-cache")
    assert after is not before and isinstance(after, ProxyCache)
    assert call(get("/api/kept")).get("x-cache-status") == "Hit"
    assert call.upstream_requests == 1


def test_a_hit_gets_the_other_plugins_fields_made_for_it_not_stored_ones() -> None:
    """cors runs before proxy-cache: its fields go on each hit, for that request's Origin."""
    call = Counted(
        GatewayWire("""
_format_version: "3.0"
services:
  - name: api
    url: http://127.0.0.1:9
    routes: [{name: api, paths: [/api]}]
plugins:
  - name: proxy-cache
    config: {strategy: memory}
  - name: cors
    config: {origins: [http://a.test, http://b.test]}
""")
    )
    call(get("/api/c", "Origin: http://a.test"), Content_Type="application/json", Vary="Accept")
    hit = call(get("/api/c", "Origin: http://b.test"))
    assert hit.get("x-cache-status") == "Hit"
    assert hit.all("access-control-allow-origin") == ["http://b.test"]
    assert hit.all("vary") == ["Accept", "Origin"]
    assert call.upstream_requests == 1
