"""jwt's access step (Kong's kong/plugins/jwt/handler.lua and jwt_parser.lua): the token from
the query, a cookie or a header, its secret by the key claim (`iss`), the signature checked with
the project's JWS code (fastgw/plugins/jws.py), `exp` / `nbf` and `maximum_expiration`.

Every failure is Kong's 401 with its message (or its claim errors) and WWW-Authenticate; the
token itself is never logged nor quoted. Keys are parsed once, when the config loads.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from typing import Any, Final

import orjson

from fastgw.config.credentials import JwtSecret
from fastgw.http.responses import JSON_CONTENT_TYPE
from fastgw.plugins import jws
from fastgw.plugins.api import Authenticated, Credential, Plugin, RequestContext
from fastgw.plugins.auth_config import Answer, header_forms
from fastgw.plugins.credential_args import cookie_value, form_args, may_name
from fastgw.plugins.identity import authenticate, has_credential, identity

PRIORITY: Final = 1450  # Kong's
KIND: Final = "jwt_secrets"
_OPTIONS: Final = b"OPTIONS"
_COOKIE: Final = b"cookie"
_WHITESPACE: Final = b" \t\r\n\x0b\x0c"
_NOT_A_STRING: Final = object()  # a bare `?jwt` in the query (Kong: the value true)
_MESSAGE: Final = "message"


class Failure(Exception):
    """A request jwt refuses: Kong's body (a message, or the claim errors) and whether its
    WWW-Authenticate carries `error="invalid_token"`."""

    def __init__(self, body: dict[str, Any], invalid_token: bool = True) -> None:
        super().__init__(body)
        self.body = body
        self.invalid_token = invalid_token


def _refused(message: str, invalid_token: bool = True) -> Failure:
    return Failure({_MESSAGE: message}, invalid_token)


def bearer_token(value: bytes) -> bytes | None:
    """Kong's `\\s*[Bb]earer\\s+(.+)` (unanchored): what follows the first `Bearer` that
    whitespace follows."""
    start = 0
    while True:
        index = value.find(b"earer", start)
        if index < 0:
            return None
        start = index + 1
        if index == 0 or value[index - 1 : index] not in (b"B", b"b"):
            continue
        rest = value[index + 5 :]
        token = rest.lstrip(_WHITESPACE)
        spaces = len(rest) - len(token)
        if spaces == 0:
            continue
        if token:
            return token
        if spaces >= 2:  # `\s+` gives back all but one space to `(.+)`
            return rest[1:]


_B64URL: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def b64url_decode(text: str) -> bytes | None:
    """Kong's base64url decoding (padding added); None when it is not base64url (the standard
    alphabet's "+" and "/" included, as ngx.decode_base64url refuses them)."""
    if not _B64URL.issuperset(text):
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class Decoded:
    """A token's parts as Kong's jwt_parser decodes them."""

    __slots__ = ("claims", "header", "signature", "signing_input")

    def __init__(
        self, header: dict[str, Any], claims: dict[str, Any], signing_input: bytes, signature: bytes
    ) -> None:
        self.header = header
        self.claims = claims
        self.signing_input = signing_input
        self.signature = signature


def decode(token: str) -> Decoded:
    """Split on the first two dots, each part base64url-decoded, header and claims JSON.
    Raises Failure with Kong's `Bad token; ...` message."""
    parts = token.split(".", 2)
    if len(parts) < 3:
        raise _refused("Bad token; invalid JSON")
    header_raw, claims_raw = b64url_decode(parts[0]), b64url_decode(parts[1])
    try:
        if header_raw is None or claims_raw is None:
            raise ValueError
        header = orjson.loads(header_raw)
        claims = orjson.loads(claims_raw)
    except (orjson.JSONDecodeError, ValueError):
        raise _refused("Bad token; invalid JSON") from None
    if not isinstance(header, dict):
        raise _refused("Bad token; invalid JSON")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in jws.ALGORITHMS or alg == "none":
        raise _refused("Bad token; invalid alg")
    if not isinstance(claims, dict):
        raise _refused("Bad token; invalid claims")
    signature = b64url_decode(parts[2])
    if signature is None:
        raise _refused("Bad token; invalid signature")
    return Decoded(header, claims, f"{parts[0]}.{parts[1]}".encode(), signature)


class Secret:
    """A jwt secret ready to verify with: the key object (HMAC bytes or a public key), None
    when it cannot be had (secret_is_base64 and a secret that is not base64url)."""

    __slots__ = ("algorithm", "key", "who")

    def __init__(self, secret: JwtSecret, secret_is_base64: bool) -> None:
        self.algorithm = secret.algorithm
        self.who = identity(
            secret.consumer, Credential(KIND, secret.id, secret.key, secret.consumer.id)
        )
        self.key: Any = None
        if secret.algorithm.startswith("HS"):
            if secret.secret is not None:
                self.key = (
                    b64url_decode(secret.secret) if secret_is_base64 else secret.secret.encode()
                )
        elif secret.rsa_public_key is not None:
            # checked when the config loaded (fastgw/config/pem.py public_key_problem)
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            self.key = load_pem_public_key(secret.rsa_public_key.encode())


def registered_claim_errors(
    claims: dict[str, Any], names: Sequence[str], now: int
) -> dict[str, Any]:
    """Kong's checks of `exp` and `nbf` (in the configured order, no leeway)."""
    errors: dict[str, Any] = {}
    for name in names:
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors[name] = "must be a number"
        elif name == "exp" and value <= now:
            errors[name] = "token expired"
        elif name == "nbf" and value > now:
            errors[name] = "token not valid yet"
    return errors


class Jwt(Plugin):
    """Kong's jwt for one configured occurrence."""

    name = "jwt"
    priority = PRIORITY

    def __init__(
        self,
        secrets_: Sequence[JwtSecret],
        *,
        uri_param_names: Sequence[str],
        cookie_names: Sequence[str],
        header_names: Sequence[str],
        key_claim_name: str,
        secret_is_base64: bool,
        claims_to_verify: Sequence[str],
        maximum_expiration: float,
        run_on_preflight: bool,
        realm: str | None,
        anonymous: Authenticated | None,
        anonymous_missing: Answer | None = None,
    ) -> None:
        self._secrets = {secret.key: Secret(secret, secret_is_base64) for secret in secrets_}
        self._params = tuple(uri_param_names)
        self._cookies = tuple(name.encode() for name in cookie_names)
        self._headers = tuple(header_forms(name) for name in header_names)
        self._claim = key_claim_name
        self._claims_to_verify = tuple(claims_to_verify)
        self._maximum_expiration = maximum_expiration
        self._skip_preflight = not run_on_preflight
        self._anonymous = anonymous
        # Kong's logical OR needs `anonymous` set, whether or not it names a consumer; one that
        # names none turns every failure into Kong's 500
        self._or = anonymous is not None or anonymous_missing is not None
        self._anonymous_missing = anonymous_missing
        base = f'Bearer realm="{realm}"' if realm else "Bearer"
        with_error = f'{base}, error="invalid_token"' if realm else 'Bearer error="invalid_token"'
        self._challenge = ((b"www-authenticate", base.encode()),)
        self._challenge_error = ((b"www-authenticate", with_error.encode()),)

    def access(self, ctx: RequestContext) -> None:
        if self._skip_preflight and ctx.method == _OPTIONS:
            return
        if self._or and has_credential(ctx):
            return  # Kong's logical OR: an earlier plugin authenticated it
        try:
            who = self._authenticate(ctx)
        except Failure as failure:
            if self._anonymous is not None:
                authenticate(ctx, self._anonymous)
                return
            if self._anonymous_missing is not None:
                status, body, answer_headers = self._anonymous_missing
                ctx.respond(status, body, answer_headers)
                return
            challenge = self._challenge_error if failure.invalid_token else self._challenge
            headers = ((b"content-type", JSON_CONTENT_TYPE), *challenge)
            ctx.respond(401, orjson.dumps(failure.body), headers)
            return
        authenticate(ctx, who)

    def _authenticate(self, ctx: RequestContext) -> Authenticated:
        tokens = self._tokens(ctx)
        if not tokens:
            raise _refused("Unauthorized", invalid_token=False)
        if len(tokens) > 1:
            raise _refused("Multiple tokens provided")
        (token,) = tokens
        if not isinstance(token, str):
            raise _refused("Unrecognizable token")
        decoded = decode(token)
        claim = self._claim
        key = decoded.claims.get(claim)
        if key is None:
            key = decoded.header.get(claim)
        if key is None:
            raise _refused(f"No mandatory '{claim}' in claims")
        if key == "":
            raise _refused(f"Invalid '{claim}' in claims")
        secret = self._secrets.get(key) if isinstance(key, str) else None
        if secret is None:
            raise _refused(f"No credentials found for given '{claim}'")
        alg = decoded.header["alg"]
        if alg != secret.algorithm:
            raise _refused("Invalid algorithm")
        if secret.key is None:
            raise _refused("Invalid key/secret")
        if not jws.check_signature(alg, decoded.signing_input, secret.key, decoded.signature):
            raise _refused("Invalid signature")
        now = int(time.time())
        errors = registered_claim_errors(decoded.claims, self._claims_to_verify, now)
        if errors:
            raise Failure(errors)
        if self._maximum_expiration > 0:
            exp = decoded.claims.get("exp")
            if not isinstance(exp, (int, float)) or exp - now > self._maximum_expiration:
                raise Failure({"exp": "exceeds maximum allowed expiration"})
        return secret.who

    def _tokens(self, ctx: RequestContext) -> list[object]:
        """The distinct non-empty tokens of the request (query, cookies, headers: Kong's set)."""
        found: list[object] = []

        def add(token: object) -> None:
            if token != "" and token not in found:
                found.append(token)

        query = ctx.query
        if self._params and query and any(may_name(query, p.encode()) for p in self._params):
            args = form_args(query)
            for name in self._params:
                value = args.get(name)
                for item in value if isinstance(value, list) else (value,):
                    if item is True:
                        add(_NOT_A_STRING)
                    elif isinstance(item, str):
                        add(item)
        if self._cookies:
            cookies = ctx.get_header(_COOKIE)
            for cookie in self._cookies if cookies else ():
                found_cookie = cookie_value(cookies or b"", cookie)
                if found_cookie:
                    add(found_cookie.decode("latin-1"))
        for forms in self._headers:
            for form in forms:
                header = ctx.get_header(form)
                if header is not None:
                    token = bearer_token(header)
                    if token:
                        add(token.decode("latin-1"))
                    break
        return found
