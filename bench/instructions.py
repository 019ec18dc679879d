"""Instructions per proxied request, counted by callgrind: a speed figure that noise cannot move.

Wall-clock req/s on a shared 2-core box drifts by ±30% between runs; callgrind counts executed
instructions, the same for the same code whatever else the machine does. This drives one client
connection and one pooled upstream connection with in-memory transports (no sockets, no kernel:
only fastgw's own per-request work plus httptools), runs it for two request counts and reports
the difference per request, so start-up cancels out.

    python bench/instructions.py            # plain path
    python bench/instructions.py --oidc     # openid-connect, token-cached path (L1 hit)
    python bench/instructions.py --targets 2  # a Kong upstream balanced over 2 targets
    python bench/instructions.py --oidc --ops   # ... with prometheus (every series) + file-log
    python bench/instructions.py --oidc --ops file-log   # ... with one of them (or prometheus)
    python bench/instructions.py --oidc --rate-limiting  # ... with rate-limiting (local policy)
    python bench/instructions.py --clients 100000  # token-cached, each request another client
    python bench/instructions.py --cache    # a proxy-cache hit (answered without the upstream)
    python bench/instructions.py --key-auth # key-auth (a kept-alive client's known key)
    python bench/instructions.py --run N    # (internal) the measured loop itself
Needs valgrind (apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL, LARGE = 1000, 3000  # request counts of the two runs; their difference is what counts

CONFIG = """
_format_version: "3.0"
_fastgw: {upstream_max_requests: 0, admin_listen: null}
services:
  - url: http://127.0.0.1:9
    routes: [{paths: ["/"]}]
"""
OIDC_PLUGIN = """
plugins:
  - name: openid-connect
    config: {issuer: "http://127.0.0.1:9/", auth_methods: [client_credentials]}
"""
OPS_PLUGINS = {
    "prometheus": """
  - name: prometheus
    config: {status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true}
""",
    "file-log": """
  - name: file-log
    config: {path: /dev/null}
""",
}
OPS_DEFAULT = "prometheus,file-log"
# limits no run reaches (the windows turn while it runs: every counter starts again then)
RATE_LIMITING_PLUGIN = """
  - name: rate-limiting
    config: {second: 1000000000, hour: 1000000000000, policy: local}
"""
CACHE_PLUGIN = """
plugins:
  - name: proxy-cache
    config: {strategy: memory}
"""
KEY_AUTH = """
consumers:
  - username: bench-user
    keyauth_credentials: [{key: bench-key-0123456789abcdef}]
plugins:
  - name: key-auth
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
BASIC = b"Basic YmVuY2gtY2xpZW50OmJlbmNoLXNlY3JldA=="  # bench-client:bench-secret
OIDC_REQUEST = REQUEST.replace(b"Accept:", b"Authorization: " + BASIC + b"\r\nAccept:")
KEY_REQUEST = REQUEST.replace(b"Accept:", b"apikey: bench-key-0123456789abcdef\r\nAccept:")
TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "x" * 600  # the length of a typical signed JWT
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 16:02:04 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)


class MemoryTransport:
    """Just enough of an asyncio transport: the last write is kept, flow control is a no-op."""

    def __init__(self) -> None:
        self.last_written = b""

    def write(self, data: bytes) -> None:
        self.last_written = data

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool:
        return False


def cache_token(gateway: object) -> None:
    """Put a token for BASIC in the openid-connect plugin's L1, as a first request would."""
    from fastgw.plugins.openid_connect.cache import Entry, Lifetime, Token

    (plugin,) = [p for p in gateway.plugins if p.name == "openid-connect"]  # type: ignore[attr-defined]
    far = 4e9  # 2096: never refreshed while measuring
    entry = Entry(
        Token(TOKEN, far, {}), b"Bearer " + TOKEN.encode(), (), Lifetime(far, far, far, far)
    )
    cache = plugin.authenticator.cache  # the L1 and its public calls
    cache.store((cache.header_key(BASIC),), entry, 0.0)


def balanced_config(targets: int) -> str:
    """A service naming a Kong upstream of `targets` round-robin targets (1: no balancer)."""
    lines = "".join(f"      - target: 127.0.0.{n + 1}:9\n" for n in range(targets))
    return f"""
_format_version: "3.0"
_fastgw: {{upstream_max_requests: 0, admin_listen: null}}
upstreams:
  - name: backend
    targets:
{lines}services:
  - host: backend
    routes: [{{paths: ["/"]}}]
"""


async def cached_requests(count: int) -> None:
    """`count` proxy-cache hits, after one miss that stored the upstream's answer."""
    from fastgw.config import parse_config
    from fastgw.gateway import Gateway
    from fastgw.http.upstream import UpstreamConnection

    gateway = Gateway(parse_config(CONFIG + CACHE_PLUGIN), admin_listen="off")
    (pool,) = gateway.pools
    upstream = UpstreamConnection(pool)
    upstream.connection_made(MemoryTransport())  # type: ignore[arg-type]
    pool.idle.append(upstream)
    client = gateway.proxy.protocol_factory()
    client_transport = MemoryTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    client.data_received(REQUEST)
    upstream.data_received(RESPONSE)  # the miss: stored
    if b"x-cache-status: Miss" not in client_transport.last_written:
        raise SystemExit("the first request was no miss: the harness no longer matches the code")
    for _ in range(count):
        client.data_received(REQUEST)
    written = client_transport.last_written
    if b"x-cache-status: Hit" not in written or not written.endswith(b"ok"):
        raise SystemExit("the requests were no hits: the harness no longer matches the code")


async def proxy_requests(
    count: int,
    oidc: bool = False,
    ops: str = "",
    targets: int = 0,
    key_auth: bool = False,
    limited: bool = False,
) -> None:
    from fastgw.config import parse_config
    from fastgw.gateway import Gateway
    from fastgw.http.upstream import UpstreamConnection

    if targets:
        text = balanced_config(targets)
    elif key_auth:
        text = CONFIG + KEY_AUTH
    else:
        text = CONFIG
        if oidc or ops or limited:
            text += "plugins:" + (OIDC_PLUGIN.split("plugins:", 1)[1] if oidc else "\n")
            text += "".join(OPS_PLUGINS[name] for name in ops.split(",") if name)
            text += RATE_LIMITING_PLUGIN if limited else ""
    gateway = Gateway(parse_config(text), admin_listen="off")
    for plugin in gateway.plugins:
        if plugin.name in ("file-log", "rate-limiting"):
            await plugin.start()  # file-log opens /dev/null, rate-limiting starts its clock
    request = KEY_REQUEST if key_auth else REQUEST
    if oidc:
        cache_token(gateway)
        request = OIDC_REQUEST
    upstreams = []
    for pool in gateway.pools or gateway.runtime.edge.pools:
        upstream = UpstreamConnection(pool)
        upstream.connection_made(MemoryTransport())  # type: ignore[arg-type]
        pool.idle.append(upstream)
        upstreams.append(upstream)
    client = gateway.proxy.protocol_factory()
    client_transport = MemoryTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    if len(upstreams) == 1:
        (upstream,) = upstreams
        for index in range(count):
            client.data_received(request)
            upstream.data_received(RESPONSE)
            if ops and index % 256 == 255:
                await asyncio.sleep(0)  # let file-log's batches flush, as the loop would
    else:
        first, second = upstreams[:2]
        for _ in range(count):
            client.data_received(request)
            # the one the balancer picked (the harness's own cost, the same for any balancer)
            (first if first.sink is not None else second).data_received(RESPONSE)
    if limited and b"x-ratelimit-remaining-second" not in client_transport.last_written:
        raise SystemExit("no rate-limiting fields: the harness no longer matches the code")
    if not client_transport.last_written.endswith(b"ok"):
        raise SystemExit("the proxied response is wrong: the harness no longer matches the code")
    sent = upstream.transport.last_written  # type: ignore[union-attr]
    if oidc and (sent.find(b"authorization: Bearer ") < 0 or sent.find(BASIC) >= 0):
        raise SystemExit("the token was not swapped in: the harness no longer matches the code")
    if key_auth and sent.find(b"x-consumer-username: bench-user") < 0:
        raise SystemExit("key-auth did not authenticate: the harness no longer matches the code")


def client_headers(clients: int) -> list[bytes]:
    """`clients` distinct Basic headers as long as BASIC (client ids bench-000000, ...)."""
    import base64

    width = len("client")  # "bench-client" and "bench-000001" are as long
    return [
        b"Basic " + base64.b64encode(b"bench-%0*d:bench-secret" % (width, number))
        for number in range(clients)
    ]


async def many_client_requests(count: int, clients: int) -> None:
    """The token-cached path with `clients` cached clients over one connection, request i
    carrying client i % clients: the per-connection digest memo misses on every request."""
    from fastgw.config import parse_config
    from fastgw.gateway import Gateway
    from fastgw.http.upstream import UpstreamConnection
    from fastgw.plugins.openid_connect.cache import Entry, Lifetime, Token

    gateway = Gateway(parse_config(CONFIG + OIDC_PLUGIN), admin_listen="off")
    (plugin,) = [p for p in gateway.plugins if p.name == "openid-connect"]
    far = 4e9  # 2096: never refreshed while measuring
    entry = Entry(
        Token(TOKEN, far, {}), b"Bearer " + TOKEN.encode(), (), Lifetime(far, far, far, far)
    )
    cache = plugin.authenticator.cache  # type: ignore[attr-defined]
    headers = client_headers(clients)
    for header in headers:
        cache.store((cache.header_key(header),), entry, 0.0)
    requests = [OIDC_REQUEST.replace(BASIC, header) for header in headers]
    (pool,) = gateway.pools
    upstream = UpstreamConnection(pool)
    upstream.connection_made(MemoryTransport())  # type: ignore[arg-type]
    pool.idle.append(upstream)
    client = gateway.proxy.protocol_factory()
    client_transport = MemoryTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]
    # the order made up front: the loop costs what --oidc's does
    for request in [requests[index % clients] for index in range(count)]:
        client.data_received(request)
        upstream.data_received(RESPONSE)
    sent = upstream.transport.last_written  # type: ignore[attr-defined]
    if not client_transport.last_written.endswith(b"ok") or b"Basic" in sent:
        raise SystemExit("the token was not swapped in: the harness no longer matches the code")


def instructions(
    count: int,
    oidc: bool,
    ops: str = "",
    targets: int = 0,
    cache: bool = False,
    key_auth: bool = False,
    limited: bool = False,
    clients: int = 0,
) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             __file__, "--run", str(count), *(["--oidc"] if oidc else []),
             *(["--ops", ops] if ops else []), *(["--key-auth"] if key_auth else []),
             *(["--rate-limiting"] if limited else []),
             *(["--targets", str(targets)] if targets else []),
             *(["--cache"] if cache else []),
             *(["--clients", str(clients)] if clients else [])],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in callgrind's output:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--oidc", action="store_true", help="the token-cached openid-connect path")
    parser.add_argument(
        "--targets", type=int, default=0, choices=(0, 1, 2), help="a Kong upstream of N targets"
    )
    parser.add_argument(
        "--ops",
        nargs="?",
        const=OPS_DEFAULT,
        default="",
        choices=(OPS_DEFAULT, *OPS_PLUGINS),
        help="with prometheus and file-log on (or the one named)",
    )
    parser.add_argument("--key-auth", action="store_true", help="a route with key-auth")
    parser.add_argument(
        "--rate-limiting", action="store_true", help="with rate-limiting (policy: local) on"
    )
    parser.add_argument("--cache", action="store_true", help="proxy-cache hits")
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help="N cached clients over one connection, each request another's (digest memo misses)",
    )
    args = parser.parse_args()
    limited = args.rate_limiting
    if args.run is not None:
        sys.path.insert(0, str(REPO_ROOT))
        import uvloop

        if args.cache:
            uvloop.run(cached_requests(args.run))
        elif args.clients:
            uvloop.run(many_client_requests(args.run, args.clients))
        else:
            uvloop.run(
                proxy_requests(args.run, args.oidc, args.ops, args.targets, args.key_auth, limited)
            )
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is missing: apt-get install valgrind", file=sys.stderr)
        return 2
    mode = (args.oidc, args.ops, args.targets, args.cache, args.key_auth, limited, args.clients)
    instructions(SMALL, *mode)  # warm the bytecode caches on disk
    per_request = (instructions(LARGE, *mode) - instructions(SMALL, *mode)) / (LARGE - SMALL)
    path = "openid-connect token-cached path" if args.oidc else "plain path"
    if args.ops:
        path += f", {args.ops.replace(',', ' + ')} on"
    if limited:
        path += ", rate-limiting (local) on"
    if args.targets:
        path = f"a Kong upstream of {args.targets} target(s)"
    if args.key_auth:
        path = "key-auth, a known key"
    if args.cache:
        path = "a proxy-cache hit, no upstream"
    if args.clients:
        path = f"openid-connect token-cached path, {args.clients:,} clients in turn"
    print(f"{per_request:,.0f} instructions per proxied request ({path}, in-memory transports)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
