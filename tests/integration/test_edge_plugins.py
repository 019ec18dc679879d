"""cors, request-transformer and proxy-cache with real parts: curl as the browser and the
client, the real echo upstream counting what reaches it, the gateway on real sockets. Configs
in the shapes of Kong's documentation examples for these plugins."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass

import pytest

from tests.integration.conftest import SOCKET_TIMEOUT, EchoUpstream

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is missing"),
]


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        return next((value for field, value in self.headers if field == name), None)

    def all(self, name: str) -> list[str]:
        return [value for field, value in self.headers if field == name]


def curl(port: int, target: str, *args: str) -> Answer:
    """One request with curl; its response head and body."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "-D", "-", f"http://127.0.0.1:{port}{target}", *args],
        capture_output=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return Answer(int(lines[0].split()[1]), headers, body)


def received(echo: EchoUpstream, path: str) -> int:
    """How many requests for `path` the echo upstream received."""
    url = f"http://127.0.0.1:{echo.port}/_received"
    with urllib.request.urlopen(url, timeout=SOCKET_TIMEOUT) as answer:
        return int(json.load(answer)["paths"].get(path, 0))


def config(echo: EchoUpstream, route: str, plugin: str, extra: str = "") -> str:
    """Kong's docs examples' shape: example-service, its route, the plugin globally."""
    return f"""
_format_version: "3.0"
_fastgw: {{admin_listen: null}}
{extra}
services:
  - name: example-service
    url: http://127.0.0.1:{echo.port}
routes:
  - name: example-route
    paths: [{route}]
    strip_path: false
    service: {{name: example-service}}
    protocols: [http, https]
plugins:
{plugin}
"""


# -- cors -------------------------------------------------------------------------------------


CORS_EXAMPLE = """
  - name: cors
    config:
      origins: [http://mockbin.com]
      methods: [GET, POST]
      headers: [Content-Type, X-Requested-With]
      max_age: 600
"""


def test_a_browser_style_preflight_never_reaches_the_upstream(make_gateway, echo) -> None:
    gateway = make_gateway(config(echo, "/cors-preflight", CORS_EXAMPLE))
    preflight = curl(
        gateway.port, "/cors-preflight/items", "-X", "OPTIONS",
        "-H", "Origin: http://mockbin.com",
        "-H", "Access-Control-Request-Method: POST",
        "-H", "Access-Control-Request-Headers: content-type,x-requested-with",
    )  # fmt: skip
    assert preflight.status == 200 and preflight.body == b""
    assert preflight.get("access-control-allow-origin") == "http://mockbin.com"
    assert preflight.get("access-control-allow-methods") == "GET,POST"
    assert preflight.get("access-control-allow-headers") == "Content-Type,X-Requested-With"
    assert preflight.get("access-control-max-age") == "600"
    assert preflight.all("vary") == ["Origin"]
    assert received(echo, "/cors-preflight/items") == 0

    actual = curl(gateway.port, "/cors-preflight/items", "-H", "Origin: http://mockbin.com")
    assert actual.status == 200
    assert json.loads(actual.body)["path"] == "/cors-preflight/items"
    assert actual.get("access-control-allow-origin") == "http://mockbin.com"
    assert actual.all("vary") == ["Origin"]
    assert received(echo, "/cors-preflight/items") == 1


def test_a_regex_origin_and_credentials_over_real_sockets(make_gateway, echo) -> None:
    plugin = """
  - name: cors
    config:
      origins: ['https://.*\\.example\\.test', 'http://localhost:3000']
      credentials: true
      exposed_headers: [X-Total]
"""
    gateway = make_gateway(config(echo, "/cors-regex", plugin))
    allowed = curl(gateway.port, "/cors-regex/a", "-H", "Origin: https://app.example.test")
    assert allowed.get("access-control-allow-origin") == "https://app.example.test"
    assert allowed.get("access-control-allow-credentials") == "true"
    assert allowed.get("access-control-expose-headers") == "X-Total"
    refused = curl(gateway.port, "/cors-regex/a", "-H", "Origin: https://example.test.evil")
    assert refused.get("access-control-allow-origin") is None
    assert refused.all("vary") == ["Origin"]


# -- request-transformer ----------------------------------------------------------------------


def test_the_rewrite_path_example_uses_the_regex_routes_capture(make_gateway, echo) -> None:
    plugin = """
  - name: request-transformer
    route: users-route
    config:
      replace:
        uri: /rt-anything/$(uri_captures[1])
"""
    text = config(echo, "/rt-plain", plugin).replace(
        "plugins:",
        "  - name: users-route\n    paths: ['~/rt-users/(\\d+)']\n"
        "    service: {name: example-service}\nplugins:",
    )
    gateway = make_gateway(text)
    answer = curl(gateway.port, "/rt-users/123")
    assert json.loads(answer.body)["path"] == "/rt-anything/123"
    assert received(echo, "/rt-anything/123") == 1


def test_headers_query_and_a_json_body_as_the_examples_rewrite_them(make_gateway, echo) -> None:
    plugin = """
  - name: request-transformer
    config:
      add:
        headers: ["New-Header:Header Value"]
        body: ["source:$(headers.x_source)"]
      append:
        querystring: ["client_id: abc123"]
      remove:
        headers: [Header-Name]
        body: [password]
"""
    gateway = make_gateway(config(echo, "/rt-echo", plugin))
    answer = curl(
        gateway.port, "/rt-echo?b=2", "-H", "Header-Name: secret", "-H", "X-Source: curl",
        "-H", "Content-Type: application/json", "--data", '{"user": "ann", "password": "x"}',
    )  # fmt: skip
    seen = json.loads(answer.body)
    headers = dict(seen["headers"])
    assert seen["path"] == "/rt-echo?b=2&client_id=%20abc123"
    assert headers["new-header"] == "Header Value"
    assert "header-name" not in headers
    assert json.loads(seen["body"]) == {"user": "ann", "source": "curl"}
    assert headers["content-length"] == str(len(seen["body"]))


# -- proxy-cache ------------------------------------------------------------------------------


CACHE_EXAMPLE = """
  - name: proxy-cache
    config:
      response_code: [200]
      request_method: [GET]
      content_type: [text/plain, application/json]
      cache_ttl: 300
      strategy: memory
"""


def test_hits_misses_and_bypasses_with_real_upstream_counts(make_gateway, echo) -> None:
    gateway = make_gateway(config(echo, "/pc-example", CACHE_EXAMPLE))
    first = curl(gateway.port, "/pc-example/a")
    assert first.get("x-cache-status") == "Miss"
    for _ in range(3):
        hit = curl(gateway.port, "/pc-example/a")
        assert hit.get("x-cache-status") == "Hit" and hit.body == first.body
        assert hit.get("x-cache-key") == first.get("x-cache-key")
    assert received(echo, "/pc-example/a") == 1
    posted = curl(gateway.port, "/pc-example/a", "--data", "x=1")
    assert posted.get("x-cache-status") == "Bypass"
    assert received(echo, "/pc-example/a") == 2
    other = curl(gateway.port, "/pc-example/a?page=2")
    assert other.get("x-cache-status") == "Miss"
    assert received(echo, "/pc-example/a") == 3


@pytest.mark.parametrize(
    ("storage", "after"),
    [("", "Miss"), (", storage_ttl: 60", "Refresh")],
    ids=["gone-from-storage", "kept-in-storage"],
)
def test_an_entry_expires_after_cache_ttl(make_gateway, echo, storage: str, after: str) -> None:
    """Without storage_ttl an entry leaves the store when it goes stale (Kong's shared dict
    TTL): a miss; kept longer, a stale entry is refreshed."""
    path = f"/pc-ttl-{after.lower()}/x"
    plugin = f"  - name: proxy-cache\n    config: {{strategy: memory, cache_ttl: 1{storage}}}\n"
    gateway = make_gateway(config(echo, path.rsplit("/", 1)[0], plugin))
    assert curl(gateway.port, path).get("x-cache-status") == "Miss"
    deadline = time.monotonic() + 10
    statuses = []
    while True:
        status = curl(gateway.port, path).get("x-cache-status")
        statuses.append(status)
        if status != "Hit":
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.1)
    assert status == after, statuses
    assert received(echo, path) == 2  # the first miss and this one; every hit stayed here
    assert curl(gateway.port, path).get("x-cache-status") == "Hit"


def test_the_get_started_guides_cache_on_its_upstream_entity(make_gateway, echo) -> None:
    """The guide's proxy-cache (application/json, 30 s) on a service naming an upstream."""
    plugin = """
  - name: proxy-cache
    config:
      request_method: [GET]
      response_code: [200]
      content_type: [application/json]
      cache_ttl: 30
      strategy: memory
"""
    text = config(echo, "/pc-mock", plugin).replace(
        f"    url: http://127.0.0.1:{echo.port}", "    host: example_upstream"
    )
    text = text.replace(
        "services:",
        f"upstreams:\n  - name: example_upstream\n    targets:\n"
        f"      - target: 127.0.0.1:{echo.port}\n        weight: 100\nservices:",
    )
    gateway = make_gateway(text)
    assert curl(gateway.port, "/pc-mock/anything").get("x-cache-status") == "Miss"
    assert curl(gateway.port, "/pc-mock/anything").get("x-cache-status") == "Hit"
    assert received(echo, "/pc-mock/anything") == 1


def test_a_response_too_big_for_its_store_streams_through_uncached(make_gateway, echo) -> None:
    plugin = """
  - name: proxy-cache
    config:
      strategy: memory
      content_type: [application/octet-stream]
      memory: {dictionary_name: small_cache}
"""
    extra = "_fastgw: {admin_listen: null, memory_stores: {small_cache: 64k}}"
    text = config(echo, "/bytes", plugin, extra).replace("_fastgw: {admin_listen: null}\n", "", 1)
    gateway = make_gateway(text)
    size = 1024 * 1024
    for _ in range(2):
        answer = curl(gateway.port, f"/bytes?size={size}")
        assert answer.get("x-cache-status") == "Miss"
        assert hashlib.sha256(answer.body).digest() == hashlib.sha256(b"x" * size).digest()
    small = curl(gateway.port, "/bytes?size=1000")
    assert small.get("x-cache-status") == "Miss"
    assert curl(gateway.port, "/bytes?size=1000").get("x-cache-status") == "Hit"
    (plugin_instance,) = [p for p in gateway.gateway.plugins if p.name == "proxy-cache"]
    usage = gateway.call(plugin_instance.stores)
    assert usage[0].name == "small_cache" and usage[0].capacity_bytes == 64 * 1024
    assert 1000 < usage[0].used_bytes <= 64 * 1024
