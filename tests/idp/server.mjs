// A real OpenID Connect provider (oidc-provider 8.x) for fastgw's tests and demos.
//
// Usage: node server.mjs CONFIG.json
//
// CONFIG.json fields (see tests/support/idp.py, which writes it):
//   port (int, required), host ("127.0.0.1"), issuer ("http://HOST:PORT"),
//   alg ("RS256" | "ES256"), access_token_ttl (seconds, 3600),
//   audience / resource ("urn:fastgw:api"), scopes (["openid", "read", "write", "admin"]),
//   clients: [{client_id, client_secret?, token_endpoint_auth_method, jwks?, scope?,
//              token_endpoint_auth_signing_alg?}],
//   opaque_resource ("urn:fastgw:opaque"): a second resource whose access tokens are opaque
//     (ask for them with `resource=<it>` on the token request; check them by introspection),
//   token_claims ({client_id: {claim: value}}): extra claims in that client's access tokens
//     (and in introspection answers for its opaque ones), e.g. preferred_username,
//   public_issuer: the issuer to announce when the IdP is reached by another name (what an
//     IdP behind a container network does); default: the issuer,
//   tls: {cert_file, key_file}: serve HTTPS (the issuer then starts with https://),
//   verbose (false: drop oidc-provider's development-mode notices).
//
// Fresh signing keys (with unique kids) are generated at every start, so a restart rotates them.
//
// Test-control routes (same port, outside oidc-provider's namespace):
//   GET  /_test/stats          -> {token_requests, token_success, token_errors,
//                                  discovery_requests, jwks_requests, introspection_requests,
//                                  revocation_requests, delay_ms, fail_status, kids,
//                                  token_in_flight, token_max_in_flight}
//                                 (in flight: token requests received and not yet answered)
//   POST /_test/reset          -> zero the counters (the in-flight maximum restarts from now)
//   POST /_test/delay?ms=N     -> delay every later token response by N ms (0 = off)
//   POST /_test/fail?status=N  -> answer later token requests with HTTP N + JSON error (0 = off)
//   POST /_test/fail_introspection?status=N -> the same for introspection requests
//
// Prints "READY <scheme>://<host>:<port>" on stdout once listening; exits 0 on SIGTERM/SIGINT.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import process from 'node:process';

const cfgPath = process.argv[2];
if (!cfgPath) {
  process.stderr.write('usage: node server.mjs CONFIG.json\n');
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));

// oidc-provider prints development-mode notices with console.info (stdout) and console.warn;
// keep stdout for the READY line only and drop those notices unless asked for.
if (!cfg.verbose) {
  const drop = (orig) => (...args) => {
    if (typeof args[0] === 'string' && args[0].includes('oidc-provider ')) return;
    orig(...args);
  };
  console.warn = drop(console.warn.bind(console));
  console.info = drop(console.error.bind(console));
} else {
  console.info = console.error.bind(console);
}

// Imported after the console patch so its module-load notices are filtered too.
const { default: Provider } = await import('oidc-provider');

const host = cfg.host || '127.0.0.1';
const port = Number(cfg.port);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  process.stderr.write(`invalid port in config: ${cfg.port}\n`);
  process.exit(2);
}
const scheme = cfg.tls ? 'https' : 'http';
const issuer = cfg.public_issuer || cfg.issuer || `${scheme}://${host}:${port}`;
const alg = cfg.alg || 'RS256';
const ttl = Number(cfg.access_token_ttl ?? 3600);
const resource = cfg.resource || cfg.audience || 'urn:fastgw:api';
const audience = cfg.audience || resource;
const scopes = cfg.scopes || ['openid', 'read', 'write', 'admin'];
const scopeString = scopes.join(' ');
const opaqueResource = cfg.opaque_resource || 'urn:fastgw:opaque';
const tokenClaims = cfg.token_claims || {};

function signingKey(algorithm) {
  const kid = `${algorithm.toLowerCase()}-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
  let pair;
  if (algorithm === 'RS256') {
    pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  } else if (algorithm === 'ES256') {
    pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  } else {
    throw new Error(`unsupported alg ${algorithm} (use RS256 or ES256)`);
  }
  return { ...pair.privateKey.export({ format: 'jwk' }), kid, alg: algorithm, use: 'sig' };
}

const keys = [signingKey(alg)];
const kids = keys.map((k) => k.kid);

const clients = (cfg.clients || []).map((c) => {
  const out = {
    client_id: c.client_id,
    token_endpoint_auth_method: c.token_endpoint_auth_method || 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: c.scope || scopeString,
    id_token_signed_response_alg: alg,
  };
  if (c.client_secret != null) out.client_secret = c.client_secret;
  if (c.jwks) out.jwks = c.jwks;
  if (c.token_endpoint_auth_signing_alg) {
    out.token_endpoint_auth_signing_alg = c.token_endpoint_auth_signing_alg;
  }
  return out;
});

const resourceServer = {
  audience,
  scope: scopeString,
  accessTokenTTL: ttl,
  accessTokenFormat: 'jwt',
  jwt: { sign: { alg } },
};
// opaque tokens live in the provider's memory, so introspection and revocation know them
const opaqueResourceServer = {
  audience: opaqueResource,
  scope: scopeString,
  accessTokenTTL: ttl,
  accessTokenFormat: 'opaque',
};

const provider = new Provider(issuer, {
  clients,
  jwks: { keys },
  scopes,
  claims: { openid: ['sub'] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  ttl: {
    ClientCredentials: ttl,
    AccessToken: ttl,
  },
  enabledJWA: {
    clientAuthSigningAlgValues: ['HS256', 'HS384', 'HS512', 'RS256', 'PS256', 'ES256'],
    idTokenSigningAlgValues: [alg],
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => (
        indicator === opaqueResource ? opaqueResourceServer : resourceServer
      ),
    },
  },
  extraTokenClaims: (ctx, token) => tokenClaims[token.clientId],
});
provider.proxy = false;

// ---- counters and switches ------------------------------------------------------------------

const stats = {
  token_requests: 0,
  token_success: 0,
  token_errors: 0,
  discovery_requests: 0,
  jwks_requests: 0,
  introspection_requests: 0,
  revocation_requests: 0,
};
// token requests being answered now, and the most at once since the last reset
let tokenInFlight = 0;
let tokenMaxInFlight = 0;
let delayMs = 0;
let failStatus = 0;
let failIntrospection = 0;

const pathOf = (name, fallback) => {
  try {
    return new URL(provider.urlFor(name)).pathname;
  } catch {
    return fallback;
  }
};
const TOKEN_PATH = pathOf('token', '/token');
const JWKS_PATH = pathOf('jwks', '/jwks');
const INTROSPECTION_PATH = pathOf('introspection', '/token/introspection');
const REVOCATION_PATH = pathOf('revocation', '/token/revocation');
const DISCOVERY_PATHS = new Set([
  '/.well-known/openid-configuration',
  '/.well-known/oauth-authorization-server',
]);

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

function sendJson(res, status, body, headers = {}) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(payload);
}

function control(req, res, url) {
  const route = url.pathname.slice('/_test/'.length);
  if (route === 'stats' && req.method === 'GET') {
    return sendJson(res, 200, {
      ...stats, delay_ms: delayMs, fail_status: failStatus, kids, issuer,
      fail_introspection: failIntrospection,
      token_in_flight: tokenInFlight, token_max_in_flight: tokenMaxInFlight,
    });
  }
  if (req.method !== 'POST') return sendJson(res, 405, { error: 'method_not_allowed' });
  if (route === 'reset') {
    for (const k of Object.keys(stats)) stats[k] = 0;
    tokenMaxInFlight = tokenInFlight;
    return sendJson(res, 200, stats);
  }
  if (route === 'delay') {
    const ms = Number(url.searchParams.get('ms') ?? 0);
    if (!Number.isFinite(ms) || ms < 0) return sendJson(res, 400, { error: 'bad ms' });
    delayMs = ms;
    return sendJson(res, 200, { delay_ms: delayMs });
  }
  if (route === 'fail' || route === 'fail_introspection') {
    const status = Number(url.searchParams.get('status') ?? 0);
    if (!Number.isInteger(status) || (status !== 0 && (status < 400 || status > 599))) {
      return sendJson(res, 400, { error: 'status must be 0 or 400..599' });
    }
    if (route === 'fail') failStatus = status;
    else failIntrospection = status;
    return sendJson(res, 200, { fail_status: failStatus, fail_introspection: failIntrospection });
  }
  return sendJson(res, 404, { error: 'not_found' });
}

const handle = provider.callback();

const listener = async (req, res) => {
  let url;
  try {
    url = new URL(req.url, 'http://idp.invalid');
  } catch {
    return sendJson(res, 400, { error: 'invalid_request' });
  }
  const path = url.pathname;

  if (path.startsWith('/_test/')) return control(req, res, url);

  if (DISCOVERY_PATHS.has(path)) stats.discovery_requests += 1;
  else if (path === JWKS_PATH) stats.jwks_requests += 1;
  else if (path === REVOCATION_PATH) stats.revocation_requests += 1;
  else if (path === INTROSPECTION_PATH) {
    stats.introspection_requests += 1;
    if (failIntrospection) {
      req.resume();
      return sendJson(res, failIntrospection, {
        error: 'server_error',
        error_description: `injected failure (HTTP ${failIntrospection}) via /_test/fail_introspection`,
      });
    }
  }
  else if (path === TOKEN_PATH) {
    stats.token_requests += 1;
    tokenInFlight += 1;
    tokenMaxInFlight = Math.max(tokenMaxInFlight, tokenInFlight);
    // 'close' follows 'finish', or comes alone when the client went away first
    res.once('close', () => { tokenInFlight -= 1; });
    res.on('finish', () => {
      if (res.statusCode >= 200 && res.statusCode < 300) stats.token_success += 1;
      else stats.token_errors += 1;
    });
    const delay = delayMs;
    const fail = failStatus;
    if (delay > 0) await sleep(delay);
    if (fail) {
      req.resume(); // drain the body
      return sendJson(res, fail, {
        error: fail >= 500 ? 'temporarily_unavailable' : 'invalid_request',
        error_description: `injected failure (HTTP ${fail}) via /_test/fail`,
      }, fail === 503 ? { 'retry-after': '1' } : {});
    }
  }
  return handle(req, res);
};

const server = cfg.tls
  ? https.createServer(
    { cert: readFileSync(cfg.tls.cert_file), key: readFileSync(cfg.tls.key_file) },
    listener,
  )
  : http.createServer(listener);

server.keepAliveTimeout = 30_000;

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.on('error', (err) => {
  process.stderr.write(`idp server error: ${err.stack || err}\n`);
  process.exit(1);
});

server.listen(port, host, () => {
  process.stdout.write(`READY ${scheme}://${host}:${port}\n`);
});
