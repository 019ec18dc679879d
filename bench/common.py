"""Shared machinery of the bench runners (compare.py, run.py, curves.py): processes and ports,
server configs (nginx, fastgw), the test IdP, wrk runs and their parsing, results directories.

Stdlib only; `tests.support.idp` is imported lazily (it needs the repository root on sys.path).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.idp import TestIdP

# -- constants ------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_ROOT = REPO_ROOT / "bench" / "results"
IDP_MODULES = REPO_ROOT / "tests" / "idp" / "node_modules" / "oidc-provider"

LOOPBACK = "127.0.0.1"  # every server and every load stays on loopback
PROXY_CPU = 0  # the proxy under test runs alone on this core ...
LOAD_CPU = 1  # ... wrk and the upstream share this one (bench/README.md)

READY_TIMEOUT = 15.0  # seconds for a server to accept connections
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL of a process group
HTTP_TIMEOUT = 10.0  # seconds for one readiness / cache warm-up request
WRK_SLACK = 30  # seconds wrk may take beyond -d (connect, report) before it is killed
WRK_SOCKET_TIMEOUT = "2s"  # wrk's default; a response slower than this counts as an error
LOG_TAIL_LINES = 6  # of a server's output quoted when it fails to start (the full log is kept)

NGINX_KEEPALIVE_REQUESTS = 1_000_000  # no side closes a keep-alive connection during a run
NGINX_UPSTREAM_KEEPALIVE = 64  # idle upstream connections nginx keeps (bench/README.md)
NGINX_WORKER_CONNECTIONS = 4096  # > client + upstream connections of one run

# the Debian/Ubuntu package that provides each tool
APT_PACKAGES = {"nginx": "nginx-light", "wrk": "wrk"}
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # nginx/haproxy are often not on a user PATH

OIDC_CONFIG_BASE = {
    "client_auth": ["client_secret_basic"],
    "auth_methods": ["client_credentials"],
    "client_credentials_param_type": ["header"],
}
BENCH_CLIENT_PREFIX = "bench-client-"  # TestIdP(extra_clients=N) registers bench-client-0..N-1

# Warming the token cache: each new client is one IdP call (~2-5 ms with the test IdP); a few
# concurrent callers keep the single-threaded IdP busy without queueing much in front of it.
WARM_CONCURRENCY = 8


class BenchError(RuntimeError):
    """A target could not be set up or measured; the message says why."""


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One thing wrk is pointed at."""

    name: str
    url: str
    pgid: int  # process group whose CPU time is charged to this target
    headers: tuple[str, ...] = ()  # wrk -H values
    script: Path | None = None  # wrk -s Lua script
    note: str = ""


@dataclass(frozen=True, slots=True)
class WrkRun:
    """What one wrk run reported, plus the CPU time the target spent during it."""

    requests_per_sec: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    cpu_us_per_request: float | None = None

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


@dataclass(frozen=True, slots=True)
class WrkOptions:
    """How wrk is run: the binary, its load shape, and whether it is pinned to LOAD_CPU."""

    wrk: str
    threads: int
    connections: int
    pin: bool


# -- processes ------------------------------------------------------------------------------------


class Processes:
    """Servers started for the run, each in its own process group; `stop_all` ends every group."""

    def __init__(self, log_dir: Path, pin: bool) -> None:
        self.log_dir = log_dir
        self.pin = pin
        self._started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cpu: int | None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        if self.pin and cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        with open(self.log_path(name), "wb") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: nginx workers die with the master
                env=env,
            )
        self._started.append(proc)
        return proc

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        path = self.log_path(name)
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one process group started here (SIGTERM, then SIGKILL after STOP_TIMEOUT)."""
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)
        _signal_group(proc, signal.SIGKILL)  # stragglers of the group (e.g. nginx workers)
        with contextlib.suppress(ValueError):
            self._started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self._started):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in reversed(self._started):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT)
            _signal_group(proc, signal.SIGKILL)  # stragglers of the group (e.g. nginx workers)
        self._started.clear()


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, procs: Processes) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = procs.log_tail(name)
            raise BenchError(
                f"{name} exited with code {proc.returncode} at start-up "
                f"(log: {procs.log_path(name)}):\n{log}"
            )
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"{name} not accepting on port {port} after {READY_TIMEOUT:.0f}s")


def http_get(port: int, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", "/", headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _group_members(pgid: int) -> Iterator[tuple[str, list[str]]]:
    """(pid directory, /proc/PID/stat fields after "pid (comm) ") of each live group member."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # comm may hold spaces
        if int(fields[2]) == pgid:  # fields: state ppid pgrp ... utime(11) stime(12) ...
            yield entry.path, fields


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in a process group (from /proc)."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in _group_members(pgid))
    return ticks / os.sysconf("SC_CLK_TCK")


def group_rss_bytes(pgid: int) -> int:
    """Resident set size of the live processes in a process group (VmRSS from /proc)."""
    total = 0
    for path, _ in _group_members(pgid):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(path, "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024  # reported in kB
                    break
    return total


class RssSampler:
    """Peak RSS of a process group while a block runs, sampled every `interval` seconds."""

    def __init__(self, pgid: int, interval: float) -> None:
        self.pgid = pgid
        self.interval = interval
        self.peak = group_rss_bytes(pgid)
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, group_rss_bytes(self.pgid))

    @contextlib.contextmanager
    def running(self) -> Iterator[RssSampler]:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.peak = max(self.peak, group_rss_bytes(self.pgid))


# -- tools and the machine ------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN_DIRS)
    return shutil.which(name, path=path)


def missing_tools(names: Sequence[str] = tuple(APT_PACKAGES)) -> list[str]:
    return [name for name in names if find_tool(name) is None]


def pinning_available(proxy_cpu: int, load_cpu: int) -> tuple[bool, str]:
    if shutil.which("taskset") is None:
        return False, "taskset not found: processes are not pinned"
    allowed = os.sched_getaffinity(0)
    if proxy_cpu == load_cpu or not {proxy_cpu, load_cpu} <= allowed:
        return False, f"cores {proxy_cpu},{load_cpu} not both available ({sorted(allowed)})"
    return True, f"proxy on core {proxy_cpu}; wrk and upstream on core {load_cpu}"


def tool_version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return rev.stdout.strip() or "?"


def fastgw_build() -> str:
    """What `fastgw --version` says the benchmarked processes run (compiled or pure)."""
    return tool_version([sys.executable, "-m", "fastgw", "--version"])


def load_average() -> str:
    """1/5/15-minute load: other work on a shared box is the usual cause of noisy rounds."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def cpu_model() -> str:
    """The first "model name" of /proc/cpuinfo (the platform's processor name elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def describe_machine() -> dict[str, str]:
    """What a reader needs to weigh the figures: when, where, on what."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fastgw": git_revision(),
        "loadavg_before": load_average(),
    }


def make_results_dir(root: Path, suffix: str = "") -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + suffix
    path = root / stamp
    path.mkdir(parents=True, exist_ok=False)
    return path


@contextlib.contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every started process group is stopped."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- server configs -------------------------------------------------------------------------------


def nginx_main_conf(prefix: Path, server_block: str, *, workers: int = 1, main: str = "") -> str:
    """A foreground nginx (one worker unless told): pid and temp files under `prefix`, errors
    to stderr; `main` adds main-context directives (load_module).

    `multi_accept on`: without it a burst of new connections (1,000 wrk clients, a proxy opening
    hundreds of upstream connections at once) is accepted one per event-loop pass, and requests
    on the waiting connections show up as seconds of p99 that belong to no proxy under test.
    """
    temp_dirs = "\n".join(
        f"    {directive} {prefix / name};"
        for directive, name in (("client_body_temp_path", "body"), ("proxy_temp_path", "proxy"))
    )
    return f"""{main}daemon off;
worker_processes {workers};
pid {prefix / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections {NGINX_WORKER_CONNECTIONS}; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests {NGINX_KEEPALIVE_REQUESTS};
{temp_dirs}
{server_block}
}}
"""


def nginx_upstream_conf(prefix: Path, port: int, extra: str = "") -> str:
    """The tiny upstream: `return 200 "ok"`; `extra` adds server-level directives."""
    server = f"""    server {{
        listen {LOOPBACK}:{port};{extra}
        location / {{ return 200 "ok"; }}
    }}"""
    return nginx_main_conf(prefix, server)


def nginx_proxy_conf(
    prefix: Path,
    port: int,
    upstream_port: int,
    extra: str = "",
    *,
    workers: int = 1,
    main: str = "",
    http: str = "",
    location: str = "",
) -> str:
    """nginx proxy_pass with upstream keep-alive; `http` and `location` add directives there."""
    server = f"""{http}    upstream backend {{
        server {LOOPBACK}:{upstream_port};
        keepalive {NGINX_UPSTREAM_KEEPALIVE};
        keepalive_requests {NGINX_KEEPALIVE_REQUESTS};
    }}
    server {{
        listen {LOOPBACK}:{port};{extra}
        location / {{{location}
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return nginx_main_conf(prefix, server, workers=workers, main=main)


def fastgw_conf(port: int, upstream_port: int, plugins: list[dict] | None = None) -> str:
    """Kong-style declarative config; JSON is valid YAML, so the file can be called kong.yml."""
    service: dict = {
        "name": "upstream",
        "url": f"http://{LOOPBACK}:{upstream_port}",
        "routes": [{"name": "all", "paths": ["/"]}],
    }
    if plugins:
        service["plugins"] = plugins
    config = {
        "_format_version": "3.0",
        "_fastgw": {"listen": f"{LOOPBACK}:{port}"},
        "services": [service],
    }
    return json.dumps(config, indent=2) + "\n"


def oidc_plugin(issuer: str) -> dict:
    """openid-connect, client credentials from the Authorization header, basic auth to the IdP."""
    return {"name": "openid-connect", "config": {"issuer": issuer, **OIDC_CONFIG_BASE}}


def rotation_lua(authorizations: Sequence[str]) -> str:
    """A wrk script sending the requests round-robin over the given Authorization values."""
    values = ",\n".join(f"  {json.dumps(value)}" for value in authorizations)
    return f"""-- generated by the fastgw bench: rotate over {len(authorizations)} clients
local authorizations = {{
{values}
}}
local requests = {{}}
local count = #authorizations
local next_index = 0

-- built in init: wrk has added Host to wrk.headers by then, and wrk.format adds none itself
init = function(args)
  for i, value in ipairs(authorizations) do
    local headers = {{}}
    for name, header in pairs(wrk.headers) do
      headers[name] = header
    end
    headers["Authorization"] = value
    requests[i] = wrk.format(nil, nil, headers)
  end
end

request = function()
  next_index = next_index % count + 1
  return requests[next_index]
end
"""


def paced_lua(period_ms: float) -> str:
    """A wrk script that paces each connection: a random pause of 0.5-1.5x `period_ms` before
    each request, so `connections` connections offer about connections * 1000 / period_ms req/s
    with arrivals spread out rather than in lock-step bursts (wrk's latency excludes the pause)."""
    low, high = max(1, round(period_ms / 2)), max(1, round(period_ms * 3 / 2))
    return f"""-- generated by the fastgw bench: paced requests, mean pause {period_ms:g} ms
local seeded = false

delay = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1000000))
    seeded = true
  end
  return math.random({low}, {high})
end
"""


# -- starting servers -----------------------------------------------------------------------------


@dataclass
class Setup:
    """Where files go and how processes start; shared by every target's start function."""

    procs: Processes
    work_dir: Path  # temp dir: configs, nginx prefixes (pid, error log, temp files)
    results_dir: Path  # generated configs are copied here for the record
    nginx: str
    upstream_port: int = 0

    def write_config(self, name: str, text: str) -> Path:
        path = self.work_dir / name
        path.write_text(text)
        (self.results_dir / "configs").mkdir(exist_ok=True)
        shutil.copy(path, self.results_dir / "configs" / name)
        return path

    def start_server(self, name: str, argv: Sequence[str], port: int, cpu: int | None) -> int:
        """Start, wait until the port accepts; return the process group id."""
        proc = self.procs.start(name, argv, cpu)
        wait_for_port(port, proc, name, self.procs)
        return proc.pid


def start_nginx(
    setup: Setup, name: str, build: Callable[[Path], str], port: int, cpu: int | None
) -> int:
    """Start nginx with the config `build(prefix)`, prefix being a fresh directory of its own."""
    prefix = setup.work_dir / name
    prefix.mkdir()
    conf_path = setup.write_config(f"{name}.nginx.conf", build(prefix))
    argv = [setup.nginx, "-p", str(prefix), "-e", "stderr", "-c", str(conf_path)]
    return setup.start_server(name, argv, port, cpu)


def start_upstream(setup: Setup, extra: str = "") -> Target:
    """The nginx upstream on LOAD_CPU; `extra` adds server directives (e.g. a body size limit)."""
    port = free_port()
    pgid = start_nginx(
        setup, "upstream", lambda p: nginx_upstream_conf(p, port, extra), port, LOAD_CPU
    )
    setup.upstream_port = port
    note = "wrk -> upstream (CPU column: the upstream's)"
    return Target("direct", f"http://{LOOPBACK}:{port}/", pgid, note=note)


def start_nginx_proxy(setup: Setup, extra: str = "", *, workers: int = 1) -> Target:
    port = free_port()
    upstream_port = setup.upstream_port
    pgid = start_nginx(
        setup,
        "nginx",
        lambda p: nginx_proxy_conf(p, port, upstream_port, extra, workers=workers),
        port,
        PROXY_CPU,
    )
    note = "proxy_pass, keepalive 64" + (f", {workers} workers" if workers > 1 else "")
    return Target("nginx", f"http://{LOOPBACK}:{port}/", pgid, note=note)


# The cheapest Kong-like hot path: nginx + lua-nginx-module hashing the Authorization header,
# looking the hash up in a Lua table and setting the Bearer token (what Kong's openid-connect
# does on a cache hit, minus Kong's plugin runner). ngx.sha1_bin is the hash lua-nginx-module
# has built in; Kong itself pays for SHA-256 from lua-resty-string.
NGINX_LUA_MODULES = (
    "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
    "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n"
)
LUA_TOKEN = "Bearer eyJhbGciOiJSUzI1NiJ9." + "x" * 600  # the length of a typical signed JWT


def nginx_lua_available() -> bool:
    return Path("/usr/lib/nginx/modules/ngx_http_lua_module.so").exists()


def start_nginx_lua(
    setup: Setup, authorizations: Sequence[str], *, workers: int = 1
) -> tuple[int, int]:
    """nginx + Lua swapping each of `authorizations` for a cached Bearer token; (port, pgid)."""
    port = free_port()
    upstream_port = setup.upstream_port
    entries = "".join(
        f'        tokens[ngx.sha1_bin("{authorization}")] = "{LUA_TOKEN}"\n'
        for authorization in authorizations
    )
    http = f"""    init_by_lua_block {{
        tokens = {{}}
{entries}    }}
"""
    location = """
            access_by_lua_block {
                local authorization = ngx.var.http_authorization
                local token = authorization and tokens[ngx.sha1_bin(authorization)]
                if not token then return ngx.exit(401) end
                ngx.req.set_header("Authorization", token)
            }"""
    pgid = start_nginx(
        setup,
        "nginx-lua",
        lambda p: nginx_proxy_conf(
            p,
            port,
            upstream_port,
            workers=workers,
            main=NGINX_LUA_MODULES,
            http=http,
            location=location,
        ),
        port,
        PROXY_CPU,
    )
    return port, pgid


def start_fastgw(
    setup: Setup,
    name: str,
    plugins: list[dict] | None = None,
    *,
    admin_port: int | None = None,
    upstream_port: int | None = None,
    workers: int = 1,
) -> tuple[int, int]:
    """Start fastgw (one worker unless told) on PROXY_CPU; return (port, pgid)."""
    port = free_port()
    target_port = setup.upstream_port if upstream_port is None else upstream_port
    conf_path = setup.write_config(f"{name}.kong.yml", fastgw_conf(port, target_port, plugins))
    admin = "off" if admin_port is None else f"{LOOPBACK}:{admin_port}"
    argv = [sys.executable, "-m", "fastgw", "run", "-c", str(conf_path)]
    argv += ["--workers", str(workers), "--admin-listen", admin, "--log-level", "warning"]
    return port, setup.start_server(name, argv, port, PROXY_CPU)


# -- the test IdP ---------------------------------------------------------------------------------


def import_test_support() -> None:
    """Make `tests.support` importable (the bench scripts run with bench/ as sys.path[0])."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def check_idp_installed() -> None:
    if not IDP_MODULES.is_dir():
        raise BenchError(
            f"the test IdP is not installed: run `npm ci --prefix {IDP_MODULES.parents[1]}`"
        )


def start_idp(stack: contextlib.ExitStack, extra_clients: int) -> TestIdP:
    """The test IdP (RS256) with `extra_clients` generated bench clients; stopped by `stack`."""
    check_idp_installed()
    import_test_support()
    from tests.support.idp import TestIdP

    idp = TestIdP(alg="RS256", extra_clients=extra_clients)
    idp.start()
    stack.callback(idp.stop)
    return idp


def extra_credentials(idp: TestIdP) -> list[tuple[str, str]]:
    """(client_id, secret) of the IdP's generated bench clients, in the order it numbered them."""
    return [
        (client.client_id, client.client_secret or "")
        for client in idp.clients.values()
        if client.client_id.startswith(BENCH_CLIENT_PREFIX)
    ]


def basic_authorization(client_id: str, secret: str) -> str:
    import_test_support()
    from tests.support.idp import basic_auth_header

    return basic_auth_header(client_id, secret)


def idp_token_requests(idp: TestIdP) -> int:
    """Token requests counted on the IdP's side since it started (or since reset_stats)."""
    return int(idp.stats()["token_requests"])


def warm_token_cache(port: int, client_id: str, authorization: str) -> None:
    try:
        status, body = http_get(port, {"Authorization": authorization})
    except OSError as error:
        raise BenchError(f"fastgw-oidc warm-up request for {client_id} failed: {error}") from error
    if status != 200:
        raise BenchError(
            f"fastgw-oidc warm-up request for {client_id} returned HTTP {status} (expected 200): "
            f"{body[:300]!r}. Is the openid-connect plugin implemented and configured?"
        )


def warm_many(
    port: int,
    credentials: Sequence[tuple[str, str]],
    *,
    concurrency: int = WARM_CONCURRENCY,
    deadline: float | None = None,
) -> int:
    """Cache the tokens of many clients through the gateway (one request each, a few at a time,
    keep-alive per thread); stops at `deadline` (time.monotonic()). Returns how many were warmed,
    always a prefix of `credentials`."""
    local = threading.local()
    stop = threading.Event()

    def warm(item: tuple[str, str]) -> bool:
        if stop.is_set() or (deadline is not None and time.monotonic() > deadline):
            stop.set()
            return False
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=HTTP_TIMEOUT)
        client_id, secret = item
        conn.request("GET", "/", headers={"Authorization": basic_authorization(client_id, secret)})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(
                f"warm-up request for {client_id} returned HTTP {response.status}: {body[:300]!r}"
            )
        return True

    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(warm, credentials))
    return done.index(False) if False in done else len(done)


# -- wrk ------------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> WrkRun:
    """Numbers from wrk's text report (run with --latency)."""
    rps = _RPS.search(output)
    requests = _REQUESTS.search(output)
    percentiles = {m[1]: float(m[2]) * _UNITS_MS[m[3]] for m in _PERCENTILE.finditer(output)}
    if rps is None or requests is None or set(percentiles) != {"50", "90", "99"}:
        raise BenchError(f"cannot parse wrk output:\n{output}")
    socket_errors = _SOCKET_ERRORS.search(output)
    non_2xx = _NON_2XX.search(output)
    return WrkRun(
        requests_per_sec=float(rps[1]),
        p50_ms=percentiles["50"],
        p90_ms=percentiles["90"],
        p99_ms=percentiles["99"],
        requests=int(requests[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(map(int, socket_errors.groups())) if socket_errors else 0,
    )


def wrk_argv(target: Target, options: WrkOptions, seconds: int) -> list[str]:
    argv = [f"-t{options.threads}", f"-c{options.connections}", f"-d{seconds}s", "--latency"]
    argv += ["--timeout", WRK_SOCKET_TIMEOUT]
    for header in target.headers:
        argv += ["-H", header]
    if target.script is not None:
        argv += ["-s", str(target.script)]
    return [options.wrk, *argv, target.url]


def run_wrk(target: Target, options: WrkOptions, seconds: int) -> WrkRun:
    argv = wrk_argv(target, options, seconds)
    if options.pin:
        argv = ["taskset", "-c", str(LOAD_CPU), *argv]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + WRK_SLACK, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(
            f"{target.name}: wrk did not finish within {seconds + WRK_SLACK}s"
        ) from error
    if done.returncode != 0:
        raise BenchError(
            f"{target.name}: wrk exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return parse_wrk(done.stdout)


def measure_wrk(target: Target, options: WrkOptions, seconds: int, warmup: int) -> WrkRun:
    """A discarded warm-up run, then the measured run with the target's CPU time per request."""
    if warmup > 0:
        run_wrk(target, options, warmup)
    cpu_before = group_cpu_seconds(target.pgid)
    run = run_wrk(target, options, seconds)
    cpu = group_cpu_seconds(target.pgid) - cpu_before
    cpu_us = cpu * 1e6 / run.requests if run.requests else None
    return dataclasses.replace(run, cpu_us_per_request=cpu_us)


# -- report helpers -------------------------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A Markdown table; `align` has one letter per column: l(eft) or r(ight)."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """The same table for a terminal: padded columns."""
    widths = [max(len(cells[i]) for cells in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if a == "r" else cell.ljust(width)
            for cell, width, a in zip(cells, widths, align, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def mib(size: float) -> str:
    return f"{size / 2**20:.1f}"
