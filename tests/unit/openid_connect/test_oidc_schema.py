"""The openid-connect config: Kong's names and defaults, errors with key paths."""

from __future__ import annotations

from typing import Any

import pytest
from oidc_fakes import ISSUER, rsa_key

from fastgw.config.schema import Reader, raise_if
from fastgw.errors import ConfigError
from fastgw.plugins.openid_connect import SPEC
from fastgw.plugins.openid_connect.schema import OidcConfig, from_mapping


def problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    SPEC.parse_config(Reader(raw, "plugins[0].config", found))
    return found


def test_defaults() -> None:
    config = from_mapping({"issuer": ISSUER})
    assert isinstance(config, OidcConfig)
    assert config.discovery_url == f"{ISSUER}/.well-known/openid-configuration"
    assert config.rediscovery_lifetime == 30
    assert config.scopes == ("openid",)
    assert config.client_credentials_param_type == {"header", "query", "body"}
    assert config.default_client_auth == "client_secret_basic"
    assert (config.verify_signature, config.verify_claims) == (True, True)
    assert config.enable_hs_signatures is False
    assert config.leeway == 0
    assert config.audience_claim == ("aud",)
    assert config.scopes_claim == ("scope",)
    assert (config.cache_tokens, config.cache_ttl) == (True, 3600)
    assert (config.cache_ttl_min, config.cache_ttl_max) == (None, None)
    assert (config.cache_ttl_neg, config.cache_ttl_resurrect) == (5, 0)
    assert config.cluster_cache_strategy == "off" and config.cluster_cache_redis is None
    assert config.upstream_access_token_header == "authorization:bearer"
    assert config.hide_credentials is True  # ours: secrets are not forwarded unless asked
    assert config.unauthorized_error_message == "Unauthorized"
    assert config.forbidden_error_message == "Forbidden"
    assert (config.display_errors, config.expose_error_code) == (False, True)
    assert config.timeout == 10_000 and config.timeout_seconds == 10.0
    assert (config.ssl_verify, config.keepalive) == (True, True)


def test_salt_is_random_per_load_unless_given() -> None:
    first, second = from_mapping({"issuer": ISSUER}), from_mapping({"issuer": ISSUER})
    assert first.cache_tokens_salt != second.cache_tokens_salt
    assert from_mapping({"issuer": ISSUER, "cache_tokens_salt": "s"}).cache_tokens_salt == "s"
    assert first.cache_tokens_salt not in repr(first)


def test_issuer_may_be_the_discovery_url() -> None:
    config = from_mapping({"issuer": f"{ISSUER}/.well-known/openid-configuration"})
    assert config.issuer == ISSUER
    assert config.discovery_url == f"{ISSUER}/.well-known/openid-configuration"


def test_quick_start_config() -> None:
    config = from_mapping(
        {
            "issuer": ISSUER,
            "client_id": ["a"],
            "client_secret": ["b"],
            "client_auth": ["client_secret_post"],
            "auth_methods": ["client_credentials"],
            "client_credentials_param_type": ["header"],
        }
    )
    assert config.client("a").client_auth == "client_secret_post"
    assert config.client_credentials_param_type == {"header"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, ("plugins[0].config.issuer", "is required")),
        ({"issuer": "ftp://x"}, ("plugins[0].config.issuer", "must be an http(s) URL")),
        (
            {"issuer": ISSUER, "cache_ttl": -1},
            ("plugins[0].config.cache_ttl", "must be >= 0"),
        ),
        (
            {"issuer": ISSUER, "auth_methods": ["client_credentials", "password"]},
            (
                "plugins[0].config.auth_methods[1]",
                '"password" is not supported yet (supported: client_credentials, bearer, '
                "introspection)",
            ),
        ),
        (
            {"issuer": ISSUER, "auth_methods": ["introspection"]},
            ("plugins[0].config.client_id", "is required for introspection"),
        ),
        (
            {"issuer": ISSUER, "bearer_token_param_type": ["cookie"]},
            ("plugins[0].config.bearer_token_cookie_name", "is required when"),
        ),
        (
            {"issuer": ISSUER, "http_proxy": "http://proxy:3128"},
            ("plugins[0].config.http_proxy", "not supported yet"),
        ),
        (
            {"issuer": ISSUER, "consumer_claim": ["sub"], "consumer_claims": [["sub"]]},
            ("plugins[0].config.consumer_claim", "cannot be set together with consumer_claims"),
        ),
        (
            {"issuer": ISSUER, "client_id": ["a", "b"], "client_secret": ["x"]},
            ("plugins[0].config.client_secret", "must have the same length as client_id"),
        ),
        (
            {
                "issuer": ISSUER,
                "client_id": ["a", "b", "c"],
                "client_auth": ["none", "client_secret_post"],
            },
            (
                "plugins[0].config.client_auth",
                "must have one entry or the same length as client_id",
            ),
        ),
        (
            {"issuer": ISSUER, "client_id": ["a"], "client_auth": ["tls_client_auth"]},
            ("plugins[0].config.client_auth[0]", '"tls_client_auth" is not supported yet'),
        ),
        (
            {"issuer": ISSUER, "client_id": ["a"], "client_auth": ["private_key_jwt"]},
            ("plugins[0].config.client_jwk[0]", "is required for private_key_jwt"),
        ),
        (
            {"issuer": ISSUER, "client_id": ["a"], "client_auth": ["private_key_jwt"]},
            ("plugins[0].config.client_secret[0]", "is required for private_key_jwt"),
        ),
        (
            {"issuer": ISSUER, "token_post_args_names": ["audience"]},
            (
                "plugins[0].config.token_post_args_values",
                "must have the same length as token_post_args_names",
            ),
        ),
        (
            {
                "issuer": ISSUER,
                "token_post_args_names": ["grant_type"],
                "token_post_args_values": ["password"],
            },
            ("plugins[0].config.token_post_args_names[0]", "is set by the gateway"),
        ),
        (
            {
                "issuer": ISSUER,
                "token_headers_names": ["X-A"],
                "token_headers_values": ["a\r\nb"],
            },
            ("plugins[0].config.token_headers_values[0]", "must not contain control characters"),
        ),
        (
            {"issuer": ISSUER, "cache_ttl_min": 10, "cache_ttl_max": 5},
            ("plugins[0].config.cache_ttl_min", "must be <= cache_ttl_max"),
        ),
        (
            {"issuer": ISSUER, "cache_l2": {"type": "memory"}},
            ("plugins[0].config.cache_l2", "was replaced by cluster_cache_strategy"),
        ),
        (
            {"issuer": ISSUER, "upstream_access_token_header": "bad header"},
            ("plugins[0].config.upstream_access_token_header", "must look like"),
        ),
        (
            {"issuer": ISSUER, "client_credentials_param_type": ["cookie"]},
            ("plugins[0].config.client_credentials_param_type[0]", "must be one of"),
        ),
        ({"issuer": ISSUER, "no_such_key": 1}, ("plugins[0].config.no_such_key", "unknown")),
        (
            {"issuer": ISSUER, "timeout": 0},
            ("plugins[0].config.timeout", "must be >= 1"),
        ),
    ],
)
def test_errors_name_the_key(raw: dict[str, Any], expected: tuple[str, str]) -> None:
    path, reason = expected
    found = problems(raw)
    assert any(p == path and reason in r for p, r in found), found


def test_client_jwk_must_be_private_and_is_not_echoed() -> None:
    key = rsa_key("schema")
    public = key.public_jwk()
    raw = {
        "issuer": ISSUER,
        "client_id": ["a"],
        "client_secret": ["gateway-side"],
        "client_auth": ["private_key_jwt"],
        "client_jwk": [public],
    }
    found = problems(raw)
    assert ("plugins[0].config.client_jwk[0]", "must be a private key (RSA, EC or OKP)") in found
    broken = dict(key.private_jwk(), n="!!")
    found = problems({**raw, "client_jwk": [broken]})
    assert ("plugins[0].config.client_jwk[0]", "is not a usable JWK") in found
    assert all(broken["d"] not in reason for _, reason in found)


def test_private_key_jwt_client() -> None:
    key = rsa_key("schema")
    config = from_mapping(
        {
            "issuer": ISSUER,
            "client_id": ["a", "b"],
            "client_secret": ["gateway-side", "unused"],
            "client_auth": ["private_key_jwt", "client_secret_jwt"],
            "client_alg": ["PS256", "HS384"],
            "client_jwk": [key.private_jwk(), None],
        }
    )
    client = config.client("a")
    assert client.client_auth == "private_key_jwt" and client.client_alg == "PS256"
    assert client.client_jwk is not None
    assert config.client("b").client_alg == "HS384"
    assert config.client("nobody") is None


def test_from_mapping_raises_with_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"issuer": "nope", "leeway": -1})
    paths = {path for path, _ in caught.value.problems}
    assert paths == {"issuer", "leeway"}


def test_spec_reader_path_reaches_errors() -> None:
    found: list[tuple[str, str]] = []
    SPEC.parse_config(Reader({"issuer": ISSUER, "cache_ttl": -5}, "plugins[0].config", found))
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.config\.cache_ttl: must be >= 0"):
        raise_if(found)


# -- Kong's keys for tokens callers bring, consumers and the token request ------------------------


def test_auth_methods_default_and_kongs_full_list_enable_what_is_supported() -> None:
    own = {"client_id": ["gw"], "client_secret": ["s"]}
    assert from_mapping({"issuer": ISSUER, **own}).auth_methods == {
        "client_credentials",
        "bearer",
        "introspection",
    }
    kong_default = [
        "authorization_code",
        "bearer",
        "client_credentials",
        "introspection",
        "kong_oauth2",
        "password",
        "refresh_token",
        "session",
        "userinfo",
    ]
    listed = from_mapping({"issuer": ISSUER, "auth_methods": kong_default})
    assert listed.auth_methods == {"client_credentials", "bearer"}  # no own client to introspect
    assert from_mapping({"issuer": ISSUER, "auth_methods": "bearer"}).auth_methods == {"bearer"}


def test_consumer_claim_before_and_after_kong_3_14() -> None:
    old = from_mapping({"issuer": ISSUER, "consumer_claim": ["user", "name"]})
    new = from_mapping({"issuer": ISSUER, "consumer_claims": [["user", "name"], "email"]})
    assert old.consumer_claims == (("user", "name"),)
    assert new.consumer_claims == (("user", "name"), ("email",))
    assert old.consumer_by == ("username", "custom_id")


def test_token_request_shape_from_kong_keys() -> None:
    config = from_mapping(
        {
            "issuer": ISSUER,
            "client_id": ["a"],
            "client_auth": ["client_secret_basic"],
            "token_endpoint_auth_method": "client_secret_post",
            "audience": ["https://api.example.com"],
            "upstream_headers": [{"header": "X-User", "path": ["user", "name"]}],
            "upstream_headers_claims": ["sub"],
            "upstream_headers_names": ["X-Sub"],
        }
    )
    assert config.client("a").client_auth == "client_secret_post"  # the override wins
    assert ("audience", "https://api.example.com") in config.token_post_args
    assert config.upstream_headers == ((("sub",), "X-Sub"), (("user", "name"), "X-User"))


def test_anonymous_must_name_a_configured_consumer() -> None:
    from fastgw.config import parse_config

    document = """
_format_version: "3.0"
consumers: [{username: guest}]
services:
- url: http://127.0.0.1:9
  routes: [{paths: [/]}]
  plugins:
  - {name: openid-connect, config: {issuer: %s, anonymous: %s}}
"""
    config = parse_config(document % (ISSUER, "guest"), env={})
    linked = config.services[0].plugins[0].config
    assert linked.anonymous_consumer is not None and linked.anonymous_consumer.username == "guest"
    with pytest.raises(ConfigError) as caught:
        parse_config(document % (ISSUER, "nobody"), env={})
    assert caught.value.problems == [
        ("services[0].plugins[0].config.anonymous", 'no consumer has the id or username "nobody"')
    ]


# -- Kong's deprecated keys (shorthand_fields) ----------------------------------------------------

SECRET = "a-cluster-cache-secret-of-length"


def read_with_warnings(raw: dict[str, Any]) -> tuple[OidcConfig, list[tuple[str, str]]]:
    found: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    config = SPEC.parse_config(Reader(raw, "c", found, warnings))
    raise_if(found)
    return config, warnings


def test_kongs_deprecated_session_keys_are_accepted_with_a_warning() -> None:
    _, warnings = read_with_warnings(
        {
            "issuer": ISSUER,
            "session_cookie_samesite": "off",
            "session_compressor": "none",
            "session_cookie_renew": 600,
            "session_memcache_port": 11211,
        }
    )
    assert warnings == [
        ("c.session_cookie_samesite", "is deprecated, please use session_cookie_same_site instead"),
        ("c.session_memcache_port", "is deprecated, please use session_memcached_port instead"),
        ("c.session_cookie_renew", "option does not exist anymore"),
        ("c.session_compressor", "option does not exist anymore"),
    ]
    # a shorthand's value is still checked, at the key the user wrote
    assert problems({"issuer": ISSUER, "session_cookie_maxsize": "big"}) == [
        ("plugins[0].config.session_cookie_maxsize", "must be an integer")
    ]


def test_cluster_cache_redis_shorthands_move_to_their_replacements() -> None:
    redis = {"cluster_addresses": ["10.0.0.1:7000", "10.0.0.2:7001"], "timeout": 1500}
    config, warnings = read_with_warnings(
        {
            "issuer": ISSUER,
            "cluster_cache_strategy": "redis",
            "cluster_cache_secret": SECRET,
            "cluster_cache_redis": redis,
        }
    )
    assert config.cluster_cache_redis is not None
    assert config.cluster_cache_redis.cluster_nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    redis_config = config.cluster_cache_redis
    assert (redis_config.connect_timeout, redis_config.read_timeout) == (1500, 1500)
    assert [path for path, _ in warnings] == [
        "c.cluster_cache_redis.timeout",
        "c.cluster_cache_redis.cluster_addresses",
    ]
    assert problems(
        {"issuer": ISSUER, "cluster_cache_redis": {"sentinel_addresses": ["[::1]:26379"]}}
    ) == [
        (
            "plugins[0].config.cluster_cache_redis.sentinel_addresses[0]",
            "Invalid Redis host address: [::1]:26379",
        )
    ]
    mismatch = {"timeout": 100, "connect_timeout": 200}
    assert problems({"issuer": ISSUER, "cluster_cache_redis": mismatch}) == [
        (
            "plugins[0].config.cluster_cache_redis.timeout",
            "both deprecated and new field are used but their values mismatch: timeout vs "
            "connect_timeout, send_timeout, read_timeout",
        )
    ]
