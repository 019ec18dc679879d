"""The `openid-connect` config: Kong's parameter names and defaults, validated into `OidcConfig`.

Every problem is reported with its key path; arrays that Kong aligns by position are checked here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from fastgw.config.consumers import CONSUMER_BY, Consumer
from fastgw.config.schema import (
    Boolean,
    Integer,
    Number,
    Reader,
    Strings,
    Text,
    apply_shorthands,
    raise_if,
    read_declared,
)
from fastgw.plugins.jws import ASYMMETRIC_ALGS, HMAC_ALGS, RSA_ALGS

from .kinds import (
    CLIENT_AUTH_METHODS,
    HEADER_NAME,
    AuthMethod,
    Choices,
    HeaderName,
    TokenHeader,
    Url,
    Urls,
    auth_method_problem,
)
from .kong_keys import CLOUD_AUTHENTICATION_DEFAULT, DEFAULT_ONLY, IGNORED, is_default
from .shorthands import REDIS_SHORTHANDS, SHORTHANDS

DISCOVERY_SUFFIX = "/.well-known/openid-configuration"

# Kong's defaults unless a comment says why we differ.
DEFAULT_REDISCOVERY_LIFETIME = 30  # seconds
DEFAULT_SCOPES = ("openid",)
# Where client credentials may come from, and by default do (Kong's)
PARAM_TYPES = ("header", "query", "body")
# Kong's name of a token request's extra audience (Auth0 needs it for client credentials)
AUDIENCE_POST_ARG = "audience"
DEFAULT_CACHE_TTL = 3600  # seconds, when the IdP gives no expiry
# Kong has no negative cache: every wrong secret reaches the IdP. A few seconds bounds a client
# hammering with a bad secret to one IdP call per interval, while a fixed secret works again soon.
DEFAULT_CACHE_TTL_NEG = 5
# Off, as in Kong: serving a token past its cache TTL must be asked for (capped by its `exp`).
DEFAULT_CACHE_TTL_RESURRECT = 0
DEFAULT_TIMEOUT_MS = 10_000
# Kong forwards body and query credentials unless told not to. A gateway that trades the
# caller's secret for a token has no reason to pass the secret on: forwarding must be asked for.
DEFAULT_HIDE_CREDENTIALS = True
DEFAULT_UPSTREAM_TOKEN_HEADER = "authorization:bearer"
CLUSTER_CACHE_STRATEGIES = ("off", "redis")
# Kong waits 2 s for Redis; here Redis sits on the miss path in front of an IdP call that can
# answer instead, so a Redis slower than half a second is treated as down.
DEFAULT_REDIS_TIMEOUT_MS = 500
SENTINEL_ROLES = ("master", "slave", "any")
# 128 bits of key material at the least, as typed characters
MIN_CLUSTER_CACHE_SECRET_LENGTH = 16

SUPPORTED_AUTH_METHODS = ("client_credentials", "bearer", "introspection")
# Kong's default `auth_methods` (every method), as decK writes it for a plugin that never set it
KONG_AUTH_METHODS = (
    "password",
    "client_credentials",
    "authorization_code",
    "bearer",
    "introspection",
    "userinfo",
    "kong_oauth2",
    "refresh_token",
    "session",
)
BEARER_PARAM_TYPES = ("header", "query", "body", "cookie")
DEFAULT_BEARER_PARAM_TYPES = ("header", "query", "body")  # Kong's
DEFAULT_INTROSPECTION_HINT = "access_token"  # Kong's (RFC 7662 token_type_hint)
DEFAULT_INTROSPECTION_TOKEN_PARAM = "token"  # Kong's, RFC 7662's
DEFAULT_CONSUMER_BY = ("username", "custom_id")  # Kong's
DEFAULT_CREDENTIAL_CLAIM = ("sub",)  # Kong's
# Form, JSON and multipart bodies holding credentials are tiny; a bigger body is answered 413
# rather than read whole (reading stays bounded in memory). fastgw's own key.
DEFAULT_CREDENTIALS_MAX_BODY_SIZE = 64 * 1024
# Methods where the IdP never sees the caller's secret, so the gateway must check it itself
GATEWAY_CHECKED_AUTH = frozenset({"private_key_jwt", "none"})
# in the order error messages list them
CLIENT_HMAC_ALGS = tuple(sorted(HMAC_ALGS))
CLIENT_ASYMMETRIC_ALGS = tuple(sorted(ASYMMETRIC_ALGS))

# Set by the gateway on the token request; overriding them would change the grant or its auth.
RESERVED_POST_ARGS = frozenset(
    {"grant_type", "scope", "client_id", "client_secret", "client_assertion"}
    | {"client_assertion_type"}
)
# Set by the gateway on an introspection request
RESERVED_INTROSPECTION_ARGS = frozenset(
    {"token", "token_type_hint", "client_id", "client_secret", "client_assertion"}
    | {"client_assertion_type"}
)
# Framing headers belong to the HTTP client.
RESERVED_TOKEN_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection"}
)
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ConfiguredClient:
    """One of the plugin's own clients (arrays aligned by position in Kong's config)."""

    client_id: str
    client_auth: str
    client_alg: str | None
    # the gateway-side secret: checked against the caller's for GATEWAY_CHECKED_AUTH methods
    client_secret: str | None = field(default=None, repr=False)
    client_jwk: PyJWK | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Kong's `cluster_cache_redis` record (its names; defaults differ where a comment says)."""

    host: Annotated[str, Text("127.0.0.1")]
    port: Annotated[int, Integer(6379, minimum=1, maximum=65535)]
    username: Annotated[str | None, Text()]
    password: Annotated[str | None, Text()] = field(repr=False)
    database: Annotated[int, Integer(0, minimum=0)]
    ssl: Annotated[bool, Boolean(False)]
    # Kong defaults to false; a token cache is worth verifying, as ssl_verify towards the IdP
    ssl_verify: Annotated[bool, Boolean(True)]
    server_name: Annotated[str | None, Text()]
    connect_timeout: Annotated[int, Integer(DEFAULT_REDIS_TIMEOUT_MS, minimum=1)]
    send_timeout: Annotated[int, Integer(DEFAULT_REDIS_TIMEOUT_MS, minimum=1)]
    read_timeout: Annotated[int, Integer(DEFAULT_REDIS_TIMEOUT_MS, minimum=1)]
    keepalive_pool_size: Annotated[int, Integer(256, minimum=1)]
    sentinel_master: Annotated[str | None, Text()]
    sentinel_role: Annotated[str, Text("master", one_of=SENTINEL_ROLES)]
    sentinel_username: Annotated[str | None, Text()]
    sentinel_password: Annotated[str | None, Text()] = field(repr=False)
    cluster_max_redirections: Annotated[int, Integer(5, minimum=0)]
    sentinel_nodes: tuple[tuple[str, int], ...] = ()  # (host, port)
    cluster_nodes: tuple[tuple[str, int], ...] = ()  # (ip, port)

    @property
    def topology(self) -> str:
        if self.cluster_nodes:
            return "cluster"
        return "sentinel" if self.sentinel_nodes else "single"


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """The parsed plugin config. Declared fields are read from the key of the same name; the
    others are derived in `parse` from several keys."""

    issuer: str
    discovery_url: str
    rediscovery_lifetime: Annotated[float, Number(DEFAULT_REDISCOVERY_LIFETIME, minimum=0)]
    token_endpoint: Annotated[str | None, Url()]
    clients: tuple[ConfiguredClient, ...]
    # for callers that are not one of `clients`: client_auth[0] / client_alg[0]
    default_client_auth: str
    default_client_alg: str | None
    client_credentials_param_type: Annotated[
        frozenset[str], Choices(PARAM_TYPES, one_of=PARAM_TYPES)
    ]
    scopes: Annotated[tuple[str, ...], Strings(DEFAULT_SCOPES)]
    token_post_args: tuple[tuple[str, str], ...]
    token_headers: tuple[tuple[str, str], ...]
    token_cache_key_include_scope: Annotated[bool, Boolean(False)]
    verify_signature: Annotated[bool, Boolean(True)]
    verify_claims: Annotated[bool, Boolean(True)]
    enable_hs_signatures: Annotated[bool, Boolean(False)]
    leeway: Annotated[float, Number(0, minimum=0)]
    issuers_allowed: Annotated[tuple[str, ...], Strings()]
    audience_required: Annotated[tuple[str, ...], Strings()]
    audience_claim: Annotated[tuple[str, ...], Strings(("aud",))]
    scopes_required: Annotated[tuple[str, ...], Strings()]
    scopes_claim: Annotated[tuple[str, ...], Strings(("scope",))]
    cache_tokens: Annotated[bool, Boolean(True)]
    cache_ttl: Annotated[float, Number(DEFAULT_CACHE_TTL, minimum=0)]
    cache_ttl_min: Annotated[float | None, Number(minimum=0)]
    cache_ttl_max: Annotated[float | None, Number(minimum=0)]
    cache_ttl_neg: Annotated[float, Number(DEFAULT_CACHE_TTL_NEG, minimum=0)]
    cache_ttl_resurrect: Annotated[float, Number(DEFAULT_CACHE_TTL_RESURRECT, minimum=0)]
    cluster_cache_strategy: Annotated[str, Text("off", one_of=CLUSTER_CACHE_STRATEGIES)]
    cluster_cache_redis: RedisConfig | None  # None unless the strategy is redis
    upstream_access_token_header: Annotated[str, TokenHeader(DEFAULT_UPSTREAM_TOKEN_HEADER)]
    # (claim path, header name): upstream_headers_claims/_names and Kong 3.14's upstream_headers
    upstream_headers: tuple[tuple[tuple[str, ...], str], ...]
    hide_credentials: Annotated[bool, Boolean(DEFAULT_HIDE_CREDENTIALS)]
    unauthorized_error_message: Annotated[str, Text("Unauthorized")]
    forbidden_error_message: Annotated[str, Text("Forbidden")]
    display_errors: Annotated[bool, Boolean(False)]
    expose_error_code: Annotated[bool, Boolean(True)]
    timeout: Annotated[float, Number(DEFAULT_TIMEOUT_MS, minimum=1)]  # milliseconds, as Kong
    ssl_verify: Annotated[bool, Boolean(True)]
    keepalive: Annotated[bool, Boolean(True)]
    # -- bearer and introspection (a caller's own token)
    auth_methods: frozenset[str]  # the supported ones enabled (Kong's default: all of them)
    bearer_token_param_type: Annotated[
        frozenset[str], Choices(DEFAULT_BEARER_PARAM_TYPES, one_of=BEARER_PARAM_TYPES)
    ]
    bearer_token_cookie_name: Annotated[str | None, Text()]
    bearer_token_header_name: Annotated[str | None, HeaderName()]
    introspection_endpoint: Annotated[str | None, Url()]
    introspection_endpoint_auth_method: Annotated[str | None, AuthMethod()]
    introspection_hint: Annotated[str, Text(DEFAULT_INTROSPECTION_HINT)]
    introspection_token_param_name: Annotated[str, Text(DEFAULT_INTROSPECTION_TOKEN_PARAM)]
    introspection_headers: tuple[tuple[str, str], ...]
    introspection_post_args: tuple[tuple[str, str], ...]
    introspection_check_active: Annotated[bool, Boolean(True)]
    introspect_jwt_tokens: Annotated[bool, Boolean(False)]
    cache_introspection: Annotated[bool, Boolean(True)]
    # -- discovery and keys
    jwks_endpoint: Annotated[str | None, Url()]
    extra_jwks_uris: Annotated[tuple[str, ...], Urls()]
    discovery_headers: tuple[tuple[str, str], ...]
    # -- authorization beyond scopes and audience
    claims_forbidden: Annotated[tuple[str, ...], Strings()]
    groups_claim: Annotated[tuple[str, ...], Strings(("groups",))]
    groups_required: Annotated[tuple[str, ...], Strings()]
    roles_claim: Annotated[tuple[str, ...], Strings(("roles",))]
    roles_required: Annotated[tuple[str, ...], Strings()]
    audience: Annotated[tuple[str, ...], Strings()]  # sent as `audience` on token requests
    # -- consumers
    anonymous: Annotated[str | None, Text()]  # a consumer's id or username
    consumer_claims: tuple[tuple[str, ...], ...]  # claim paths, the first present one is used
    consumer_by: Annotated[tuple[str, ...], Strings(DEFAULT_CONSUMER_BY, one_of=CONSUMER_BY)]
    consumer_optional: Annotated[bool, Boolean(False)]
    by_username_ignore_case: Annotated[bool, Boolean(False)]
    credential_claim: Annotated[tuple[str, ...], Strings(DEFAULT_CREDENTIAL_CLAIM)]
    # Kong's: the claim path of the groups acl reads (and X-Authenticated-Groups); () for none
    authenticated_groups_claim: Annotated[tuple[str, ...], Strings()]
    run_on_preflight: Annotated[bool, Boolean(True)]
    credentials_max_body_size: Annotated[
        int, Integer(DEFAULT_CREDENTIALS_MAX_BODY_SIZE, minimum=1)
    ]  # fastgw's own key
    cache_tokens_salt: str = field(repr=False)
    # fastgw's own key (Kong has none): encrypts and authenticates what goes to Redis
    cluster_cache_secret: str | None = field(repr=False)
    # `anonymous` resolved against the config's consumers (set by the spec's link step)
    anonymous_consumer: Consumer | None = None

    @property
    def client_credentials_enabled(self) -> bool:
        return "client_credentials" in self.auth_methods

    @property
    def bearer_enabled(self) -> bool:
        return "bearer" in self.auth_methods

    @property
    def introspection_enabled(self) -> bool:
        return "introspection" in self.auth_methods

    @property
    def maps_consumers(self) -> bool:
        return bool(self.consumer_claims)

    @property
    def timeout_seconds(self) -> float:
        return self.timeout / 1000.0

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)

    def client(self, client_id: str) -> ConfiguredClient | None:
        for configured in self.clients:
            if configured.client_id == client_id:
                return configured
        return None


def parse(reader: Reader) -> OidcConfig:
    """Read the plugin's `config` mapping; problems are recorded on `reader` (then `finish`).

    The declared fields are read by the engine (Kong's deprecated keys first moved to their
    replacements: shorthands.py); what is left is derived from several keys, or checked across
    keys."""
    apply_shorthands(reader, SHORTHANDS)
    values = read_declared(reader, OidcConfig)
    issuer, discovery_url = _issuer(reader)
    clients, default_auth, default_alg = _clients(reader)
    auth_methods = _auth_methods(reader, clients)
    post_args, token_headers = _token_request(reader, values["audience"])
    ttl_min, ttl_max = values["cache_ttl_min"], values["cache_ttl_max"]
    if ttl_min is not None and ttl_max is not None and ttl_min > ttl_max:
        reader.error("cache_ttl_min", "must be <= cache_ttl_max")
    upstream_headers = _upstream_headers(reader)
    redis, secret = _cluster_cache(reader, values["cluster_cache_strategy"])
    salt = reader.string("cache_tokens_salt")
    if salt is None:
        # a random salt per process would give every process its own keys in the shared cache
        salt = fleet_salt(secret) if secret is not None else secrets.token_urlsafe(16)
    if reader.has("cache_l2"):
        reader.error("cache_l2", "was replaced by cluster_cache_strategy: redis")
    _check_bearer(reader, values)
    _check_introspection_client(reader, values, clients, default_auth)
    introspection_headers, introspection_args = _introspection_request(reader)
    discovery_headers = _pairs(reader, "discovery_headers_names", "discovery_headers_values")
    _check_header_pairs(
        reader, "discovery_headers_names", "discovery_headers_values", discovery_headers
    )
    consumer_claims = _consumer_claims(reader)
    _kong_keys(reader)
    reader.finish()
    return OidcConfig(
        issuer=issuer,
        discovery_url=discovery_url,
        clients=clients,
        default_client_auth=default_auth,
        default_client_alg=default_alg,
        token_post_args=post_args,
        token_headers=token_headers,
        cluster_cache_redis=redis,
        upstream_headers=upstream_headers,
        auth_methods=auth_methods,
        introspection_headers=introspection_headers,
        introspection_post_args=introspection_args,
        discovery_headers=discovery_headers,
        consumer_claims=consumer_claims,
        cache_tokens_salt=salt,
        cluster_cache_secret=secret,
        **values,
    )


def from_mapping(raw: Mapping[str, Any], path: str = "") -> OidcConfig:
    """Validate a config mapping in Kong's shape; raises `ConfigError` listing every problem."""
    problems: list[tuple[str, str]] = []
    config = parse(Reader(raw, path, problems))
    raise_if(problems)
    return config


# -- pieces ---------------------------------------------------------------------------------------


def _item_error(reader: Reader, key: str, index: int, reason: str) -> None:
    reader.problems.append((f"{reader.key_path(key)}[{index}]", reason))


def _issuer(reader: Reader) -> tuple[str, str]:
    """(`issuer`, the discovery document's URL): derived from the one key."""
    issuer = Url(required=True).read(reader, "issuer") or "http://invalid.invalid"
    if issuer.endswith(DISCOVERY_SUFFIX):
        # Kong accepts the discovery document's URL as `issuer`
        return issuer[: -len(DISCOVERY_SUFFIX)], issuer
    return issuer, issuer.rstrip("/") + DISCOVERY_SUFFIX


def _auth_methods(reader: Reader, clients: tuple[ConfiguredClient, ...]) -> frozenset[str]:
    """The supported methods enabled. Absent, or Kong's default list (every method, as decK
    dumps it), means every supported one; naming an unsupported one is an error."""
    methods = reader.strings("auth_methods", scalar_ok=True)
    if not reader.has("auth_methods") or set(methods) == set(KONG_AUTH_METHODS):
        enabled = set(SUPPORTED_AUTH_METHODS)
        if not clients and reader.raw.get("introspection_endpoint_auth_method") != "none":
            enabled.discard("introspection")  # no client of its own to introspect with
        return frozenset(enabled)
    supported = ", ".join(SUPPORTED_AUTH_METHODS)
    for index, method in enumerate(methods):
        if method in SUPPORTED_AUTH_METHODS:
            continue
        if method in KONG_AUTH_METHODS:
            reason = f'"{method}" is not supported yet (supported: {supported})'
        else:
            reason = f'unknown auth method "{method}" (supported: {supported})'
        _item_error(reader, "auth_methods", index, reason)
    if not methods:
        reader.error("auth_methods", "must not be empty")
    return frozenset(method for method in methods if method in SUPPORTED_AUTH_METHODS)


def _check_bearer(reader: Reader, values: dict[str, Any]) -> None:
    if "cookie" in values["bearer_token_param_type"] and values["bearer_token_cookie_name"] is None:
        reader.error(
            "bearer_token_cookie_name", "is required when bearer_token_param_type has cookie"
        )


def _token_request(
    reader: Reader, audience: tuple[str, ...]
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """The token request's extra form fields (`audience` last) and headers."""
    post_args = _pairs(reader, "token_post_args_names", "token_post_args_values")
    for index, (name, _) in enumerate(post_args):
        if name in RESERVED_POST_ARGS:
            _item_error(reader, "token_post_args_names", index, "is set by the gateway")
    if audience:
        post_args += ((AUDIENCE_POST_ARG, " ".join(audience)),)
    token_headers = _pairs(reader, "token_headers_names", "token_headers_values")
    _check_header_pairs(reader, "token_headers_names", "token_headers_values", token_headers)
    for index, (name, _) in enumerate(token_headers):
        if name.lower() in RESERVED_TOKEN_HEADERS:
            _item_error(reader, "token_headers_names", index, "is set by the gateway")
    return post_args, token_headers


def _introspection_request(
    reader: Reader,
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """The introspection request's extra headers and form fields."""
    headers = _pairs(reader, "introspection_headers_names", "introspection_headers_values")
    _check_header_pairs(
        reader, "introspection_headers_names", "introspection_headers_values", headers
    )
    args = _pairs(reader, "introspection_post_args_names", "introspection_post_args_values")
    for index, (name, _) in enumerate(args):
        if name in RESERVED_INTROSPECTION_ARGS:
            _item_error(reader, "introspection_post_args_names", index, "is set by the gateway")
    return headers, args


def _check_introspection_client(
    reader: Reader,
    values: dict[str, Any],
    clients: tuple[ConfiguredClient, ...],
    default_auth: str,
) -> None:
    """The plugin's own client must be able to authenticate at the introspection endpoint
    (Kong: with its client_auth unless introspection_endpoint_auth_method says otherwise)."""
    method = values["introspection_endpoint_auth_method"]
    if method is None and reader.has("introspection_endpoint_auth_method"):
        return  # refused already
    listed = reader.raw.get("auth_methods")
    explicit = listed == "introspection" or (
        isinstance(listed, list)
        and "introspection" in listed
        and set(listed) != set(KONG_AUTH_METHODS)  # Kong's default turns it on only if usable
    )
    effective = method or (clients[0].client_auth if clients else default_auth)
    if explicit and effective != "none":
        if not clients:
            reader.error(
                "client_id",
                "is required for introspection (the plugin's own client asks the IdP), "
                "unless introspection_endpoint_auth_method is none",
            )
        elif effective in ("client_secret_basic", "client_secret_post", "client_secret_jwt") and (
            clients[0].client_secret is None
        ):
            reader.error("client_secret", f"is required for introspection with {effective}")


def _consumer_claims(reader: Reader) -> tuple[tuple[str, ...], ...]:
    """Kong 3.14's `consumer_claims` (claim paths, first present wins) or, before it,
    `consumer_claim` (one claim path)."""
    single = reader.strings("consumer_claim", scalar_ok=True)
    paths: list[tuple[str, ...]] = []
    base = reader.key_path("consumer_claims")
    for index, item in enumerate(reader.sequence("consumer_claims")):
        if isinstance(item, str) and item:
            item = [item]
        if (
            not isinstance(item, list)
            or not item
            or not all(isinstance(name, str) and name for name in item)
        ):
            reader.problems.append((f"{base}[{index}]", "must be an array of claim names"))
            continue
        paths.append(tuple(item))
    if single and paths:
        reader.error("consumer_claim", "cannot be set together with consumer_claims")
        return tuple(paths)
    return tuple(paths) if paths else ((single,) if single else ())


def _kong_keys(reader: Reader) -> None:
    """Kong's keys this plugin does not act on (kong_keys.py): ignored, or accepted at
    Kong's default only."""
    for key in IGNORED:
        reader.ignore(key)
    for key, default in DEFAULT_ONLY.items():
        reader.ignore(key)
        if not is_default(reader.raw.get(key), default):
            reader.error(key, "not supported yet")


def _upstream_headers(reader: Reader) -> tuple[tuple[tuple[str, ...], str], ...]:
    pairs = _pairs(reader, "upstream_headers_claims", "upstream_headers_names")
    for index, (_, name) in enumerate(pairs):
        if not HEADER_NAME.match(name):
            _item_error(reader, "upstream_headers_names", index, "is not a header name")
    result: list[tuple[tuple[str, ...], str]] = [((claim,), name) for claim, name in pairs]
    base = reader.key_path("upstream_headers")
    for index, item in enumerate(reader.sequence("upstream_headers")):
        record = Reader(item, f"{base}[{index}]", reader.problems)
        name = record.string("header", required=True)
        path = record.strings("path", required=True)
        record.finish()
        if name is not None and not HEADER_NAME.match(name):
            record.error("header", "is not a header name")
        elif name is not None and path:
            result.append((path, name))
    return tuple(result)


def _aligned(reader: Reader, key: str, values: tuple[Any, ...] | list[Any], count: int) -> bool:
    if values and len(values) != count:
        reader.error(key, "must have the same length as client_id")
        return False
    return True


def _one_or_aligned(reader: Reader, key: str, values: tuple[str, ...], count: int) -> bool:
    if len(values) > 1 and len(values) != count:
        reader.error(key, "must have one entry or the same length as client_id")
        return False
    return True


def _clients(reader: Reader) -> tuple[tuple[ConfiguredClient, ...], str, str | None]:
    ids = reader.strings("client_id", scalar_ok=True)
    secrets_ = reader.strings("client_secret", scalar_ok=True)
    auths = reader.strings("client_auth", scalar_ok=True)
    for index, method in enumerate(auths):
        if method not in CLIENT_AUTH_METHODS:
            _item_error(reader, "client_auth", index, auth_method_problem(method))
    auths = tuple(method for method in auths if method in CLIENT_AUTH_METHODS)
    # Kong's token_endpoint_auth_method: how every client authenticates at the token endpoint
    override = reader.string("token_endpoint_auth_method")
    if override is not None:
        if override in CLIENT_AUTH_METHODS:
            auths = (override,)
        else:
            problem = auth_method_problem(override, name_supported=False)
            reader.error("token_endpoint_auth_method", problem)
    algs = reader.strings(
        "client_alg", one_of=CLIENT_HMAC_ALGS + CLIENT_ASYMMETRIC_ALGS, scalar_ok=True
    )
    jwks = _client_jwks(reader)
    count = len(ids)
    secrets_ok = _aligned(reader, "client_secret", secrets_, count)
    jwks_ok = _aligned(reader, "client_jwk", jwks, count)
    auths_ok = _one_or_aligned(reader, "client_auth", auths, count)
    algs_ok = _one_or_aligned(reader, "client_alg", algs, count)
    if len(set(ids)) != len(ids):
        reader.error("client_id", "must not repeat an id")
    default_auth = auths[0] if auths else "client_secret_basic"
    default_alg = algs[0] if algs else None
    clients = []
    for index, client_id in enumerate(ids):
        auth = auths[index] if auths_ok and len(auths) == count else default_auth
        alg = algs[index] if algs_ok and len(algs) == count else default_alg
        secret = secrets_[index] if secrets_ok and secrets_ else None
        jwk = jwks[index] if jwks_ok and jwks else None
        _check_client(reader, index, auth, alg, secret, jwk)
        clients.append(ConfiguredClient(client_id, auth, alg, secret, jwk))
    return tuple(clients), default_auth, default_alg


def _check_client(
    reader: Reader, index: int, auth: str, alg: str | None, secret: str | None, jwk: PyJWK | None
) -> None:
    def problem(key: str, reason: str) -> None:
        _item_error(reader, key, index, reason)

    if auth in GATEWAY_CHECKED_AUTH and secret is None:
        # the IdP never sees the caller's secret with these methods, so the gateway checks it
        problem("client_secret", f"is required for {auth} (the gateway checks callers against it)")
    if auth == "private_key_jwt":
        if jwk is None:
            problem("client_jwk", "is required for private_key_jwt")
        elif alg is not None and alg not in _algs_for_jwk(jwk):
            problem("client_alg", f"{alg} does not fit the key in client_jwk[{index}]")
    if auth == "client_secret_jwt" and alg is not None and alg not in HMAC_ALGS:
        problem("client_alg", f"must be one of {', '.join(CLIENT_HMAC_ALGS)} for client_secret_jwt")


def _algs_for_jwk(jwk: PyJWK) -> tuple[str, ...]:
    key = jwk.key
    if isinstance(key, RSAPrivateKey):
        return tuple(RSA_ALGS)
    if isinstance(key, EllipticCurvePrivateKey):
        return (jwk.algorithm_name,)
    return ("EdDSA",)


def _client_jwks(reader: Reader) -> list[PyJWK | None]:
    result: list[PyJWK | None] = []
    for index, item in enumerate(reader.sequence("client_jwk")):
        path = f"{reader.key_path('client_jwk')}[{index}]"
        if item is None:
            result.append(None)
            continue
        if isinstance(item, str):
            try:
                item = orjson.loads(item)
            except orjson.JSONDecodeError:
                item = None
        if not isinstance(item, dict):
            reader.problems.append((path, "must be a JWK object"))
            result.append(None)
            continue
        try:
            jwk = PyJWK(item)
        except (PyJWTError, ValueError, TypeError):
            # PyJWT's messages quote the whole JWK, private parts included: say less
            reader.problems.append((path, "is not a usable JWK"))
            result.append(None)
            continue
        private = (RSAPrivateKey, EllipticCurvePrivateKey, Ed25519PrivateKey, Ed448PrivateKey)
        if not isinstance(jwk.key, private):
            reader.problems.append((path, "must be a private key (RSA, EC or OKP)"))
            result.append(None)
            continue
        result.append(jwk)
    return result


def _pairs(reader: Reader, names_key: str, values_key: str) -> tuple[tuple[str, str], ...]:
    names = reader.strings(names_key, scalar_ok=True)
    values = reader.strings(values_key, scalar_ok=True)
    if len(names) != len(values):
        reader.error(values_key, f"must have the same length as {names_key}")
        return ()
    return tuple(zip(names, values, strict=True))


def _check_header_pairs(
    reader: Reader, names_key: str, values_key: str, pairs: tuple[tuple[str, str], ...]
) -> None:
    for index, (name, value) in enumerate(pairs):
        if not HEADER_NAME.match(name):
            _item_error(reader, names_key, index, "is not a header name")
        if _HEADER_VALUE_FORBIDDEN.search(value):
            _item_error(reader, values_key, index, "must not contain control characters")


def fleet_salt(secret: str) -> str:
    """`cache_tokens_salt` when not configured but a cluster cache is: the same in every process
    sharing the secret (so they share keys), unguessable without it."""
    digest = hmac.new(secret.encode(), b"fastgw cache_tokens_salt", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def _cluster_cache(reader: Reader, strategy: str) -> tuple[RedisConfig | None, str | None]:
    """`cluster_cache_redis` (validated whenever given) and `cluster_cache_secret`."""
    redis = _redis(reader.mapping("cluster_cache_redis"))  # the defaults when absent
    secret = reader.string("cluster_cache_secret")
    if strategy != "redis":
        return None, None
    if secret is None:
        reader.error(
            "cluster_cache_secret",
            "is required when cluster_cache_strategy is redis (it encrypts the shared cache)",
        )
    elif len(secret) < MIN_CLUSTER_CACHE_SECRET_LENGTH:
        reader.error(
            "cluster_cache_secret", f"must be at least {MIN_CLUSTER_CACHE_SECRET_LENGTH} characters"
        )
    return redis, secret


def _redis(reader: Reader) -> RedisConfig:
    apply_shorthands(reader, REDIS_SHORTHANDS)
    values = read_declared(reader, RedisConfig)
    sentinel_nodes = _nodes(reader, "sentinel_nodes", "host")
    cluster_nodes = _nodes(reader, "cluster_nodes", "ip")
    if values["sentinel_role"] != "master":
        # locks and writes need the master; a replica answers them with READONLY
        reader.error("sentinel_role", "only master is supported (the token cache writes)")
    if bool(values["sentinel_master"]) != bool(sentinel_nodes):
        reader.error("sentinel_master", "and sentinel_nodes must be given together")
    if cluster_nodes and sentinel_nodes:
        reader.error("cluster_nodes", "cannot be combined with sentinel_nodes")
    if values["server_name"] is not None:
        reader.error("server_name", "is not supported yet (the TLS name is the host's)")
    if not is_default(reader.raw.get("cloud_authentication"), CLOUD_AUTHENTICATION_DEFAULT):
        reader.error("cloud_authentication", "is not supported")
    if reader.raw.get("connection_is_proxied") is True:
        reader.error("connection_is_proxied", "is not supported")
    # Kong fields with no meaning here: nginx's connection backlog
    reader.ignore("keepalive_backlog", "connection_is_proxied", "cloud_authentication")
    reader.finish()
    return RedisConfig(**values, sentinel_nodes=sentinel_nodes, cluster_nodes=cluster_nodes)


def _nodes(reader: Reader, key: str, host_key: str) -> tuple[tuple[str, int], ...]:
    """Kong's node arrays: [{host|ip, port}], each defaulting like the record's host and port."""
    nodes = []
    for index, item in enumerate(reader.sequence(key)):
        node = Reader(item, f"{reader.key_path(key)}[{index}]", reader.problems)
        host = node.string(host_key, "127.0.0.1")
        port = node.integer("port", 6379, minimum=1, maximum=65535)
        node.finish()
        nodes.append((host, port))
    return tuple(nodes)
