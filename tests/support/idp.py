"""Run the real OpenID Connect provider in ``tests/idp`` (oidc-provider, Node) for tests.

Synchronous and stdlib-only (``cryptography`` is imported lazily, only to make the key pair of
the default ``private_key_jwt`` client and to sign its assertions)::

    with TestIdP(alg="ES256") as idp:
        tok = idp.token("post-client", "post-secret", scope="read")["access_token"]
        idp.set_delay(200)
        idp.restart()  # same port and issuer, new signing keys (new kid)

The Node server is configured through one JSON file (see ``TestIdP.config()``) and exposes
``/_test/stats``, ``/_test/reset``, ``/_test/delay?ms=N`` and ``/_test/fail?status=N``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IDP_DIR = Path(__file__).resolve().parents[1] / "idp"
SERVER_JS = IDP_DIR / "server.mjs"

DEFAULT_SCOPES = ("openid", "read", "write", "admin")

# Default client credentials (also usable directly by tests).
BASIC_CLIENT = ("basic-client", "basic-secret")
POST_CLIENT = ("post-client", "post-secret")
JWT_CLIENT = ("jwt-client", "jwt-client-shared-secret-0123456789abcdef")
PKJWT_CLIENT_ID = "pkjwt-client"
# RFC 6749 §2.3.1: id and secret must be form-urlencoded before the Basic base64 step.
ODD_CLIENT = ("odd:client", "s3cr%t:with/colon+plus")
# The resource whose access tokens are opaque (introspection checks them)
OPAQUE_RESOURCE = "urn:fastgw:opaque"


class IdpError(RuntimeError):
    """A non-2xx answer from the IdP; ``status`` and the decoded JSON ``body`` are kept."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"IdP answered HTTP {status}: {body!r}")
        self.status = status
        self.body = body


@dataclass
class IdpClient:
    client_id: str
    client_secret: str | None
    auth_method: str
    private_jwk: dict | None = None  # private JWK (with kid/alg) of private_key_jwt clients

    def public_jwk(self) -> dict | None:
        if self.private_jwk is None:
            return None
        private_members = {"d", "p", "q", "dp", "dq", "qi"}
        return {k: v for k, v in self.private_jwk.items() if k not in private_members}

    def registration(self) -> dict:
        reg: dict[str, Any] = {
            "client_id": self.client_id,
            "token_endpoint_auth_method": self.auth_method,
        }
        if self.client_secret is not None:
            reg["client_secret"] = self.client_secret
        pub = self.public_jwk()
        if pub is not None:
            reg["jwks"] = {"keys": [pub]}
        return reg


# --------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed() -> None:
    """``npm ci`` the IdP's dependencies unless ``tests/idp/node_modules/oidc-provider`` exists."""
    if shutil.which("node") is None:
        raise RuntimeError(
            "node is not installed (needed for the test IdP in tests/idp; Node >= 18 is required)"
        )
    if (IDP_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is not installed; cannot install the test IdP's dependencies "
            f"(run `npm ci --prefix {IDP_DIR}` once npm is available)"
        )
    proc = subprocess.run(
        [npm, "ci", "--prefix", str(IDP_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"`npm ci --prefix {IDP_DIR}` failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(n: int, length: int | None = None) -> str:
    if length is None:
        length = max(1, (n.bit_length() + 7) // 8)
    return _b64url(n.to_bytes(length, "big"))


def _b64url_decode_uint(s: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")


def generate_ec_jwk(kid: str | None = None) -> dict:
    """A fresh EC P-256 private JWK (``alg`` ES256) made with ``cryptography``."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.private_numbers()
    pub = nums.public_numbers
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url_uint(pub.x, 32),
        "y": _b64url_uint(pub.y, 32),
        "d": _b64url_uint(nums.private_value, 32),
        "kid": kid or f"client-{uuid.uuid4().hex[:12]}",
        "alg": "ES256",
        "use": "sig",
    }


def _jws(header: dict, claims: dict, sign) -> str:
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    return signing_input + "." + _b64url(sign(signing_input.encode("ascii")))


def client_assertion(client: IdpClient, audience: str, lifetime: int = 60) -> str:
    """A client authentication JWT (RFC 7523) for client_secret_jwt / private_key_jwt clients."""
    now = int(time.time())
    claims = {
        "iss": client.client_id,
        "sub": client.client_id,
        "aud": audience,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + lifetime,
    }
    if client.auth_method == "client_secret_jwt":
        if not client.client_secret:
            raise ValueError(f"{client.client_id}: client_secret_jwt needs a secret")
        secret = client.client_secret.encode()
        return _jws(
            {"alg": "HS256", "typ": "JWT"},
            claims,
            lambda msg: hmac.new(secret, msg, hashlib.sha256).digest(),
        )
    if client.auth_method == "private_key_jwt":
        jwk = client.private_jwk
        if not jwk or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise ValueError(f"{client.client_id}: private_key_jwt helper supports EC P-256 keys")
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        pub = ec.EllipticCurvePublicNumbers(
            _b64url_decode_uint(jwk["x"]), _b64url_decode_uint(jwk["y"]), ec.SECP256R1()
        )
        key = ec.EllipticCurvePrivateNumbers(_b64url_decode_uint(jwk["d"]), pub).private_key()

        def sign(msg: bytes) -> bytes:
            r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return _jws({"alg": "ES256", "typ": "JWT", "kid": jwk["kid"]}, claims, sign)
    raise ValueError(f"{client.client_id}: {client.auth_method} does not use an assertion")


def basic_auth_header(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1 Basic credentials: form-urlencode id and secret, then base64."""
    raw = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(raw.encode()).decode("ascii")


def default_clients() -> list[IdpClient]:
    return [
        IdpClient(*BASIC_CLIENT, "client_secret_basic"),
        IdpClient(*POST_CLIENT, "client_secret_post"),
        IdpClient(*JWT_CLIENT, "client_secret_jwt"),
        IdpClient(
            PKJWT_CLIENT_ID, None, "private_key_jwt", private_jwk=generate_ec_jwk("pkjwt-key-1")
        ),
        IdpClient(*ODD_CLIENT, "client_secret_basic"),
    ]


# --------------------------------------------------------------------------------------------
# the IdP process


class TestIdP:
    """One oidc-provider process on 127.0.0.1: ``start()``/``stop()``, or a context manager."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        alg: str = "RS256",
        access_token_ttl: int = 3600,
        clients: list[IdpClient] | None = None,
        port: int | None = None,
        extra_clients: int = 0,
        audience: str = "urn:fastgw:api",
        scopes: list[str] | tuple[str, ...] = DEFAULT_SCOPES,
        verbose: bool = False,
        opaque_resource: str = OPAQUE_RESOURCE,
        token_claims: dict[str, dict[str, Any]] | None = None,
        public_issuer: str | None = None,
        tls: tuple[Path, Path, str] | None = None,
    ):
        """`tls`: (certificate file, key file, CA PEM) to serve HTTPS; `public_issuer`: the
        issuer to announce when it is not the address the IdP listens on."""
        if alg not in ("RS256", "ES256"):
            raise ValueError(f"alg must be RS256 or ES256, not {alg!r}")
        self.alg = alg
        self.opaque_resource = opaque_resource
        self.token_claims = dict(token_claims or {})
        self.public_issuer = public_issuer
        self.tls = tls
        self.access_token_ttl = int(access_token_ttl)
        self.audience = audience
        self.scopes = list(scopes)
        self.verbose = verbose
        self._port_fixed = port is not None
        self.port = port if port is not None else free_port()
        client_list = list(clients) if clients is not None else default_clients()
        for i in range(extra_clients):
            client_list.append(
                IdpClient(f"bench-client-{i}", f"bench-secret-{i}", "client_secret_basic")
            )
        self.clients: dict[str, IdpClient] = {}
        for c in client_list:
            if c.client_id in self.clients:
                raise ValueError(f"duplicate client_id {c.client_id!r}")
            self.clients[c.client_id] = c
        self._proc: subprocess.Popen | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._log_path: Path | None = None
        self._started_once = False

    # ---- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the IdP listens."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        """What the IdP calls itself (in discovery and in `iss`)."""
        return self.public_issuer or self.url

    @property
    def discovery_url(self) -> str:
        return self.url + "/.well-known/openid-configuration"

    @property
    def token_endpoint(self) -> str:
        return self.url + "/token"

    @property
    def jwks_uri(self) -> str:
        return self.url + "/jwks"

    @property
    def introspection_endpoint(self) -> str:
        return self.url + "/token/introspection"

    @property
    def revocation_endpoint(self) -> str:
        return self.url + "/token/revocation"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def config(self) -> dict:
        """The JSON document handed to ``server.mjs``."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "issuer": self.url,
            "alg": self.alg,
            "access_token_ttl": self.access_token_ttl,
            "audience": self.audience,
            "resource": self.audience,
            "scopes": self.scopes,
            "clients": [c.registration() for c in self.clients.values()],
            "verbose": self.verbose,
            "opaque_resource": self.opaque_resource,
            "token_claims": self.token_claims,
            **({"public_issuer": self.public_issuer} if self.public_issuer else {}),
            **(
                {"tls": {"cert_file": str(self.tls[0]), "key_file": str(self.tls[1])}}
                if self.tls is not None
                else {}
            ),
        }

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 15) -> None:
        if self.running:
            raise RuntimeError("IdP already running")
        ensure_installed()
        attempts = 1 if (self._port_fixed or self._started_once) else 3
        for attempt in range(attempts):
            try:
                self._spawn(timeout)
                self._started_once = True
                return
            except _PortInUse:
                if attempt == attempts - 1:
                    raise RuntimeError(f"port {self.port} in use; cannot start the IdP") from None
                self.port = free_port()

    def _spawn(self, timeout: float) -> None:
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fastgw-idp-")
        tmp = Path(self._tmpdir.name)
        cfg_path = tmp / "idp.json"
        cfg_path.write_text(json.dumps(self.config()))
        self._log_path = tmp / "idp.log"
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                ["node", str(SERVER_JS), str(cfg_path)],
                cwd=str(IDP_DIR),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if k != "NODE_ENV"},
            )
        deadline = time.monotonic() + timeout
        ready = f"READY {self.url}".encode()
        while True:
            output = self._log_path.read_bytes()
            if ready in output:
                return
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup()
                text = output.decode(errors="replace")
                if "EADDRINUSE" in text:
                    raise _PortInUse()
                raise RuntimeError(f"test IdP exited with code {code} during start-up:\n{text}")
            if time.monotonic() > deadline:
                self._terminate()
                text = self._log_path.read_bytes().decode(errors="replace")
                self._cleanup()
                raise RuntimeError(f"test IdP not ready after {timeout}s; output:\n{text}")
            time.sleep(0.02)

    def output(self) -> str:
        """stdout+stderr of the running (or last failed) node process."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_bytes().decode(errors="replace")

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def _cleanup(self) -> None:
        self._proc = None
        if self._tmpdir is not None:
            with contextlib.suppress(OSError):
                self._tmpdir.cleanup()
            self._tmpdir = None
            self._log_path = None

    def stop(self) -> None:
        self._terminate()
        self._cleanup()

    def restart(self) -> None:
        """Stop and start again on the same port/issuer; the IdP generates new signing keys."""
        self.stop()
        self.start()

    def __enter__(self) -> TestIdP:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- HTTP -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, dict[str, str], Any]:
        """One HTTP request to the IdP; returns (status, headers, JSON body or text)."""
        data = None
        hdrs = dict(headers or {})
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        url = path if path.startswith("http") else self.url + path
        req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cadata=self.tls[2])
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                status, resp_headers, raw = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            status, resp_headers, raw = e.code, dict(e.headers), e.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        return status, {k.lower(): v for k, v in resp_headers.items()}, body

    def _control(self, method: str, path: str) -> dict:
        status, _, body = self.request(method, path)
        if status != 200:
            raise IdpError(status, body)
        return body

    def stats(self) -> dict:
        return self._control("GET", "/_test/stats")

    def reset_stats(self) -> None:
        self._control("POST", "/_test/reset")

    def set_delay(self, ms: int) -> None:
        self._control("POST", f"/_test/delay?ms={int(ms)}")

    def set_fail(self, status: int) -> None:
        self._control("POST", f"/_test/fail?status={int(status)}")

    def set_introspection_fail(self, status: int) -> None:
        self._control("POST", f"/_test/fail_introspection?status={int(status)}")

    def opaque_token(self, client_id: str, scope: str | None = None) -> str:
        """An opaque access token of the opaque resource for a known client."""
        return self.token_response_body(client_id, scope, extra={"resource": self.opaque_resource})[
            "access_token"
        ]

    def token_response_body(
        self, client_id: str, scope: str | None = None, *, extra: dict[str, str] | None = None
    ) -> dict:
        status, _, body = self.token_response(client_id, scope=scope, extra=extra)
        if status != 200:
            raise IdpError(status, body)
        return body

    def revoke(self, token: str, client_id: str) -> None:
        """Revoke `token` as its own client (RFC 7009); oidc-provider answers 200 either way."""
        known = self.clients[client_id]
        form = {"token": token, "client_id": client_id, "client_secret": known.client_secret or ""}
        status, _, body = self.request("POST", "/token/revocation", form=form)
        if status != 200:
            raise IdpError(status, body)

    def introspect(self, token: str, client_id: str) -> dict:
        known = self.clients[client_id]
        form = {"token": token, "client_id": client_id, "client_secret": known.client_secret or ""}
        status, _, body = self.request("POST", "/token/introspection", form=form)
        if status != 200:
            raise IdpError(status, body)
        return body

    def discovery(self) -> dict:
        return self._control("GET", "/.well-known/openid-configuration")

    def jwks(self) -> dict:
        return self._control("GET", "/jwks")

    def token_response(
        self,
        client_id: str,
        client_secret: str | None = None,
        scope: str | None = None,
        *,
        auth_method: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """A raw client_credentials request; returns (status, headers, body)."""
        known = self.clients.get(client_id)
        if auth_method is None:
            auth_method = known.auth_method if known else "client_secret_post"
        if client_secret is None and known is not None:
            client_secret = known.client_secret
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        headers: dict[str, str] = {}
        if auth_method == "client_secret_basic":
            headers["Authorization"] = basic_auth_header(client_id, client_secret or "")
        elif auth_method == "client_secret_post":
            form["client_id"] = client_id
            form["client_secret"] = client_secret or ""
        elif auth_method in ("client_secret_jwt", "private_key_jwt"):
            if known is None:
                known = IdpClient(client_id, client_secret, auth_method)
            elif client_secret != known.client_secret:
                known = IdpClient(client_id, client_secret, auth_method, known.private_jwk)
            form["client_id"] = client_id
            form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            form["client_assertion"] = client_assertion(known, self.token_endpoint)
        else:
            raise ValueError(f"unsupported auth method {auth_method!r}")
        form.update(extra or {})
        return self.request("POST", "/token", form=form, headers=headers)

    def token(
        self,
        client_id: str,
        client_secret: str | None = None,
        scope: str | None = None,
        *,
        auth_method: str | None = None,
    ) -> dict:
        """client_credentials token response (dict); raises IdpError on a non-200 answer.

        The client's registered auth method is used when the client is known, otherwise
        client_secret_post.
        """
        status, _, body = self.token_response(
            client_id, client_secret, scope, auth_method=auth_method
        )
        if status != 200:
            raise IdpError(status, body)
        return body


class _PortInUse(Exception):
    pass
