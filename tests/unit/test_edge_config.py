"""Config of upstreams, targets, certificates and listeners: Kong's keys, defaults and errors."""

from __future__ import annotations

import pytest

from fastgw.config import parse_config, parse_listeners
from fastgw.errors import ConfigError


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config('_format_version: "3.0"\n' + text, env={})
    return caught.value.problems


def test_upstream_with_targets_and_kongs_defaults() -> None:
    config = parse_config(
        '_format_version: "3.0"\n'
        "upstreams:\n"
        "  - name: backend\n"
        "    targets: [{target: 10.0.0.1:8080}, {target: 10.0.0.2, weight: 0}]\n"
        "services: [{host: backend, routes: [{paths: [/]}]}]\n",
        env={},
    )
    (upstream,) = config.upstreams
    assert upstream.algorithm == "round-robin" and upstream.slots == 10_000
    assert [(t.host, t.port, t.weight) for t in upstream.targets] == [
        ("10.0.0.1", 8080, 100),
        ("10.0.0.2", 8000, 0),  # Kong's default target port
    ]
    assert upstream.passive is None and upstream.active is None  # every threshold 0: off


def test_hash_on_selects_consistent_hashing_and_needs_its_header() -> None:
    config = parse_config('_format_version: "3.0"\nupstreams: [{name: u, hash_on: ip}]\n', env={})
    assert config.upstreams[0].algorithm == "consistent-hashing"
    assert problems("upstreams: [{name: u, hash_on: header}]\n") == [
        ("upstreams[0].hash_on_header", "is required when hash_on is header")
    ]
    assert problems("upstreams: [{name: u, hash_on: cookie, hash_on_cookie: c}]\n") == [
        ("upstreams[0].hash_on", "cookie is not supported yet")
    ]


def test_healthcheck_keys_are_kongs_and_checked() -> None:
    found = problems(
        "upstreams:\n"
        "  - name: u\n"
        "    healthchecks:\n"
        "      active: {healthy: {interval: -1}, unhealthy: {tcp_failures: 300}, bogus: 1}\n"
        "      passive: {unhealthy: {http_statuses: [42]}}\n"
    )
    assert ("upstreams[0].healthchecks.active.healthy.interval", "must be >= 0") in found
    assert ("upstreams[0].healthchecks.active.unhealthy.tcp_failures", "must be <= 255") in found
    assert ("upstreams[0].healthchecks.active.bogus", "unknown field") in found
    assert (
        "upstreams[0].healthchecks.passive.unhealthy.http_statuses",
        "must be an array of integers between 100 and 999",
    ) in found


def test_targets_and_names_are_validated() -> None:
    found = problems(
        "upstreams:\n"
        "  - name: u\n"
        "    targets: [{target: 'a:1'}, {target: 'a:1'}, {target: 'a:99999'},\n"
        "              {target: x, weight: -1}]\n"
        "  - name: u\n"
    )
    assert ("upstreams[0].targets[1].target", "a:1 is listed twice") in found
    assert any(path == "upstreams[0].targets[2].target" for path, _ in found)
    assert ("upstreams[0].targets[3].weight", "must be >= 0") in found
    assert ("upstreams[1].name", "is already used by upstreams[0]") in found


def test_listen_takes_kongs_proxy_listen_syntax() -> None:
    listeners = parse_listeners("127.0.0.1:8000, 0.0.0.0:8443 ssl", "--listen")
    assert [(item.host, item.port, item.ssl) for item in listeners] == [
        ("127.0.0.1", 8000, False),
        ("0.0.0.0", 8443, True),
    ]
    with pytest.raises(ConfigError) as caught:
        parse_listeners("0.0.0.0:8443 http2", "--listen")
    assert "unsupported flag 'http2'" in caught.value.problems[0][1]
    assert problems("_fastgw: {listen: ['127.0.0.1:8443 ssl']}\n") == [
        ("_fastgw.ssl_cert", "is required by a listener with the ssl flag")
    ]


def test_route_protocols_and_redirect_codes() -> None:
    found = problems(
        "services: [{host: a, routes: [{paths: [/], protocols: [http], snis: [a.test],"
        " https_redirect_status_code: 303}]}]\n"
    )
    assert found == [
        ("services[0].routes[0].snis", "can only be set when 'protocols' has 'https' or 'wss'"),
        (
            "services[0].routes[0].https_redirect_status_code",
            "must be one of 426, 301, 302, 307, 308; got 303",
        ),
    ]
    config = parse_config(
        '_format_version: "3.0"\n'
        "services: [{host: a, routes: [{paths: [/], protocols: [https]}, {paths: [/w],"
        " protocols: [ws, wss]}]}]\n",
        env={},
    )
    secure, websocket = config.services[0].routes
    assert secure.requires_tls and not websocket.requires_tls


def test_certificate_entities_are_checked(tmp_path) -> None:
    from tests.support.tls import make_pki

    pki = make_pki(tmp_path)
    cert, _ = pki.other.texts()
    _, stray_key = pki.stray.texts()
    import json

    document = json.dumps(
        {
            "_format_version": "3.0",
            "certificates": [
                {"cert": cert, "key": stray_key, "snis": [{"name": "a.test"}]},
                {"cert": "nope", "key": stray_key},
            ],
        }
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(document, env={})
    assert caught.value.problems == [
        ("certificates[0].cert", "certificate does not match key"),
        ("certificates[1].cert", "invalid certificate: not a PEM X.509 certificate"),
    ]
