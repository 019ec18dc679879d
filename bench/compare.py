"""Capacity comparison with wrk, in one run: upstream direct, nginx, fastgw (and fastgw + OIDC).

Owns starting the servers under test (pinned to CPUs), the interleaved wrk rounds, and the report:
medians per target and ratios against nginx (REFERENCE.md §3). Stdlib only; installs nothing.

    .venv/bin/python bench/compare.py [--rounds 5 --duration 10 --warmup 3] [--oidc [--clients N]]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# -- constants ------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_ROOT = REPO_ROOT / "bench" / "results"
IDP_MODULES = REPO_ROOT / "tests" / "idp" / "node_modules" / "oidc-provider"

LOOPBACK = "127.0.0.1"  # every server and every load stays on loopback
PROXY_CPU = 0  # the proxy under test runs alone on this core ...
LOAD_CPU = 1  # ... wrk and the upstream share this one (REFERENCE.md §3)

DEFAULT_ROUNDS = 5
DEFAULT_CONNECTIONS = 50
DEFAULT_DURATION = 10  # seconds per measured wrk run
DEFAULT_WARMUP = 3  # seconds of wrk before each measured run, results discarded
DEFAULT_THREADS = 1
DEFAULT_CLIENTS = 1

READY_TIMEOUT = 15.0  # seconds for a server to accept connections
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL of a process group
HTTP_TIMEOUT = 10.0  # seconds for one readiness / cache warm-up request
WRK_SLACK = 30  # seconds wrk may take beyond -d (connect, report) before it is killed
WRK_SOCKET_TIMEOUT = "2s"  # wrk's default; a response slower than this counts as an error
LOG_TAIL_LINES = 6  # of a server's output quoted when it fails to start (the full log is kept)

NGINX_KEEPALIVE_REQUESTS = 1_000_000  # no side closes a keep-alive connection during a run
NGINX_UPSTREAM_KEEPALIVE = 64  # idle upstream connections nginx keeps (REFERENCE.md §3)
NGINX_WORKER_CONNECTIONS = 4096  # > client + upstream connections of one run

# the Debian/Ubuntu package that provides each tool
APT_PACKAGES = {"nginx": "nginx-light", "wrk": "wrk"}
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # nginx/haproxy are often not on a user PATH

OIDC_CONFIG_BASE = {
    "client_auth": ["client_secret_basic"],
    "auth_methods": ["client_credentials"],
    "client_credentials_param_type": ["header"],
}

EXIT_OK, EXIT_FLAGGED, EXIT_MISSING_TOOLS = 0, 1, 2


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


@dataclass(slots=True)
class Summary:
    """Medians over the rounds of one target."""

    name: str
    requests_per_sec: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # summed over the measured runs
    cpu_us_per_request: float | None
    ratio_vs_nginx: float | None
    note: str = ""
    rounds: list[WrkRun] = field(default_factory=list)


# -- processes ------------------------------------------------------------------------------------


class Processes:
    """Servers started for the run, each in its own process group; `stop_all` ends every group."""

    def __init__(self, log_dir: Path, pin: bool) -> None:
        self.log_dir = log_dir
        self.pin = pin
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: Sequence[str], cpu: int | None) -> subprocess.Popen[bytes]:
        if self.pin and cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        with open(self.log_path(name), "wb") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: nginx workers die with the master
            )
        self._started.append(proc)
        return proc

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        path = self.log_path(name)
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])

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


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in a process group (from /proc)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
        if int(fields[2]) == pgid:  # fields: state ppid pgrp ... utime(11) stime(12)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# -- tools ----------------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(SBIN_DIRS)
    return shutil.which(name, path=path)


def missing_tools() -> list[str]:
    return [name for name in APT_PACKAGES if find_tool(name) is None]


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


# -- server configs -------------------------------------------------------------------------------


def nginx_main_conf(prefix: Path, server_block: str) -> str:
    """A foreground one-worker nginx: pid and temp files under `prefix`, errors to stderr."""
    temp_dirs = "\n".join(
        f"    {directive} {prefix / name};"
        for directive, name in (("client_body_temp_path", "body"), ("proxy_temp_path", "proxy"))
    )
    return f"""daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections {NGINX_WORKER_CONNECTIONS}; }}
http {{
    access_log off;
    keepalive_requests {NGINX_KEEPALIVE_REQUESTS};
{temp_dirs}
{server_block}
}}
"""


def nginx_upstream_conf(prefix: Path, port: int) -> str:
    server = f"""    server {{
        listen {LOOPBACK}:{port};
        location / {{ return 200 "ok"; }}
    }}"""
    return nginx_main_conf(prefix, server)


def nginx_proxy_conf(prefix: Path, port: int, upstream_port: int) -> str:
    server = f"""    upstream backend {{
        server {LOOPBACK}:{upstream_port};
        keepalive {NGINX_UPSTREAM_KEEPALIVE};
        keepalive_requests {NGINX_KEEPALIVE_REQUESTS};
    }}
    server {{
        listen {LOOPBACK}:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return nginx_main_conf(prefix, server)


def haproxy_conf(port: int, upstream_port: int) -> str:
    return f"""global
    nbthread 1
    maxconn {NGINX_WORKER_CONNECTIONS}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend bench
    bind {LOOPBACK}:{port}
    default_backend upstream
backend upstream
    server up {LOOPBACK}:{upstream_port}
"""


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


def rotation_lua(authorizations: Sequence[str]) -> str:
    """A wrk script sending the requests round-robin over the given Authorization values."""
    values = ",\n".join(f"  {json.dumps(value)}" for value in authorizations)
    return f"""-- generated by bench/compare.py: rotate over {len(authorizations)} clients
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


# -- starting targets -----------------------------------------------------------------------------


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

    def start_server(self, name: str, argv: Sequence[str], port: int, cpu: int) -> int:
        """Start, wait until the port accepts; return the process group id."""
        proc = self.procs.start(name, argv, cpu)
        wait_for_port(port, proc, name, self.procs)
        return proc.pid


def start_nginx(setup: Setup, name: str, build: Callable[[Path], str], port: int, cpu: int) -> int:
    """Start nginx with the config `build(prefix)`, prefix being a fresh directory of its own."""
    prefix = setup.work_dir / name
    prefix.mkdir()
    conf_path = setup.write_config(f"{name}.nginx.conf", build(prefix))
    argv = [setup.nginx, "-p", str(prefix), "-e", "stderr", "-c", str(conf_path)]
    return setup.start_server(name, argv, port, cpu)


def start_upstream(setup: Setup) -> Target:
    port = free_port()
    pgid = start_nginx(setup, "upstream", lambda p: nginx_upstream_conf(p, port), port, LOAD_CPU)
    setup.upstream_port = port
    note = "wrk -> upstream (CPU column: the upstream's)"
    return Target("direct", f"http://{LOOPBACK}:{port}/", pgid, note=note)


def start_nginx_proxy(setup: Setup) -> Target:
    port = free_port()
    upstream_port = setup.upstream_port
    pgid = start_nginx(
        setup, "nginx", lambda p: nginx_proxy_conf(p, port, upstream_port), port, PROXY_CPU
    )
    return Target("nginx", f"http://{LOOPBACK}:{port}/", pgid, note="proxy_pass, keepalive 64")


def start_haproxy(setup: Setup, haproxy: str) -> Target:
    port = free_port()
    conf_path = setup.write_config("haproxy.cfg", haproxy_conf(port, setup.upstream_port))
    pgid = setup.start_server("haproxy", [haproxy, "-db", "-f", str(conf_path)], port, PROXY_CPU)
    return Target("haproxy", f"http://{LOOPBACK}:{port}/", pgid, note="http-reuse always")


def start_fastgw(setup: Setup, name: str, plugins: list[dict] | None = None) -> tuple[int, int]:
    """Start one single-worker fastgw; return (port, pgid)."""
    port = free_port()
    conf_path = setup.write_config(
        f"{name}.kong.yml", fastgw_conf(port, setup.upstream_port, plugins)
    )
    argv = [sys.executable, "-m", "fastgw", "run", "-c", str(conf_path)]
    argv += ["--workers", "1", "--admin-listen", "off", "--log-level", "warning"]
    return port, setup.start_server(name, argv, port, PROXY_CPU)


def start_fastgw_plain(setup: Setup) -> Target:
    port, pgid = start_fastgw(setup, "fastgw")
    return Target("fastgw", f"http://{LOOPBACK}:{port}/", pgid, note="no plugins")


def start_fastgw_oidc(setup: Setup, stack: contextlib.ExitStack, clients: int) -> Target:
    """fastgw + openid-connect against the test IdP; every client's token cached before wrk."""
    if not IDP_MODULES.is_dir():
        raise BenchError(
            f"the test IdP is not installed: run `npm ci --prefix {IDP_MODULES.parents[1]}`"
        )
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.support.idp import BASIC_CLIENT, TestIdP, basic_auth_header

    idp = TestIdP(alg="RS256", extra_clients=clients if clients > 1 else 0)
    idp.start()
    stack.callback(idp.stop)
    if clients > 1:
        credentials = [(f"bench-client-{i}", f"bench-secret-{i}") for i in range(clients)]
    else:
        credentials = [BASIC_CLIENT]
    plugin = {"name": "openid-connect", "config": {"issuer": idp.issuer, **OIDC_CONFIG_BASE}}
    try:
        port, pgid = start_fastgw(setup, "fastgw-oidc", [plugin])
    except BenchError as error:
        raise BenchError(f"{error}\nIs the openid-connect plugin implemented yet?") from error
    authorizations = [basic_auth_header(cid, secret) for cid, secret in credentials]
    for (client_id, _), authorization in zip(credentials, authorizations, strict=True):
        warm_token_cache(port, client_id, authorization)
    url = f"http://{LOOPBACK}:{port}/"
    if clients == 1:
        note = "token cached, 1 client"
        return Target(
            "fastgw-oidc", url, pgid, headers=(f"Authorization: {authorizations[0]}",), note=note
        )
    script = setup.results_dir / "oidc-clients.lua"
    script.write_text(rotation_lua(authorizations))
    return Target(
        "fastgw-oidc", url, pgid, script=script, note=f"token cached, {clients} clients rotated"
    )


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


def check_target(target: Target) -> None:
    """One request to a plain target must return 200 before wrk hammers it."""
    port = int(target.url.rsplit(":", 1)[1].strip("/"))
    try:
        status, body = http_get(port)
    except OSError as error:
        raise BenchError(f"{target.name}: readiness request failed: {error}") from error
    if status != 200:
        raise BenchError(f"{target.name}: readiness request returned HTTP {status}: {body[:300]!r}")


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


def wrk_argv(target: Target, args: argparse.Namespace, seconds: int) -> list[str]:
    argv = [f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency"]
    argv += ["--timeout", WRK_SOCKET_TIMEOUT]
    for header in target.headers:
        argv += ["-H", header]
    if target.script is not None:
        argv += ["-s", str(target.script)]
    return [args.wrk, *argv, target.url]


def run_wrk(target: Target, args: argparse.Namespace, seconds: int) -> WrkRun:
    argv = wrk_argv(target, args, seconds)
    if args.pin:
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


def measure(target: Target, args: argparse.Namespace) -> WrkRun:
    """A discarded warm-up run, then the measured run with the target's CPU time per request."""
    if args.warmup > 0:
        run_wrk(target, args, args.warmup)
    cpu_before = group_cpu_seconds(target.pgid)
    run = run_wrk(target, args, args.duration)
    cpu = group_cpu_seconds(target.pgid) - cpu_before
    cpu_us = cpu * 1e6 / run.requests if run.requests else None
    return WrkRun(**{**asdict(run), "cpu_us_per_request": cpu_us})


def run_rounds(targets: Sequence[Target], args: argparse.Namespace) -> dict[str, list[WrkRun]]:
    """Rounds interleave the targets so drift of the machine hits every target alike."""
    runs: dict[str, list[WrkRun]] = {target.name: [] for target in targets}
    for round_number in range(1, args.rounds + 1):
        for target in targets:
            run = measure(target, args)
            runs[target.name].append(run)
            flag = f"  ERRORS: {run.errors}" if run.errors else ""
            print(
                f"  round {round_number}/{args.rounds} {target.name:<12} "
                f"{run.requests_per_sec:>10,.0f} req/s  p50 {run.p50_ms:.2f} ms  "
                f"p99 {run.p99_ms:.2f} ms{flag}",
                flush=True,
            )
    return runs


# -- report ---------------------------------------------------------------------------------------


def summarize(targets: Sequence[Target], runs: dict[str, list[WrkRun]]) -> list[Summary]:
    summaries = []
    for target in targets:
        target_runs = runs[target.name]
        cpu = [r.cpu_us_per_request for r in target_runs if r.cpu_us_per_request is not None]
        summaries.append(
            Summary(
                name=target.name,
                requests_per_sec=statistics.median(r.requests_per_sec for r in target_runs),
                p50_ms=statistics.median(r.p50_ms for r in target_runs),
                p90_ms=statistics.median(r.p90_ms for r in target_runs),
                p99_ms=statistics.median(r.p99_ms for r in target_runs),
                errors=sum(r.errors for r in target_runs),
                cpu_us_per_request=statistics.median(cpu) if cpu else None,
                ratio_vs_nginx=None,
                note=target.note,
                rounds=target_runs,
            )
        )
    by_name = {s.name: s for s in summaries}
    if "nginx" in by_name:
        for summary in summaries:
            summary.ratio_vs_nginx = summary.requests_per_sec / by_name["nginx"].requests_per_sec
    return summaries


def ratio_lines(summaries: Sequence[Summary]) -> list[str]:
    """Headline ratios of medians, with the spread of the same ratio taken round by round."""
    by_name = {s.name: s for s in summaries}
    pairs = [("fastgw", "nginx"), ("haproxy", "nginx"), ("fastgw-oidc", "fastgw")]
    pairs.append(("fastgw-oidc", "nginx"))
    lines = []
    for top, bottom in pairs:
        if top not in by_name or bottom not in by_name:
            continue
        a, b = by_name[top], by_name[bottom]
        per_round = [
            x.requests_per_sec / y.requests_per_sec for x, y in zip(a.rounds, b.rounds, strict=True)
        ]
        lines.append(
            f"{top}/{bottom} = {a.requests_per_sec / b.requests_per_sec:.2f} "
            f"(per round: median {statistics.median(per_round):.2f}, "
            f"range {min(per_round):.2f}-{max(per_round):.2f})"
        )
    return lines


def render_table(summaries: Sequence[Summary]) -> str:
    header = (
        "| target | req/s (median) | p50 | p90 | p99 | errors | CPU µs/req | vs nginx | notes |"
    )
    rows = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in summaries:
        errors = f"**{s.errors}** (!)" if s.errors else "0"
        cpu = f"{s.cpu_us_per_request:.0f}" if s.cpu_us_per_request is not None else "-"
        ratio = f"{s.ratio_vs_nginx:.2f}" if s.ratio_vs_nginx is not None else "-"
        rows.append(
            f"| {s.name} | {s.requests_per_sec:,.0f} | {s.p50_ms:.2f} ms | {s.p90_ms:.2f} ms "
            f"| {s.p99_ms:.2f} ms | {errors} | {cpu} | {ratio} | {s.note} |"
        )
    return "\n".join(rows)


def render_markdown(
    summaries: Sequence[Summary], environment: dict, notes: Sequence[str], failures: dict[str, str]
) -> str:
    parts = [f"# bench/compare.py — {environment['started']}", ""]
    parts += [f"- {key}: `{value}`" for key, value in environment.items() if key != "started"]
    parts += ["", render_table(summaries), ""]
    parts += [f"- {line}" for line in ratio_lines(summaries)]
    parts += [f"- note: {note}" for note in notes]
    parts += [f"- **{name} FAILED**: {reason}" for name, reason in failures.items()]
    if any(s.errors for s in summaries):
        parts.append("- **runs with errors (non-2xx or socket errors): figures are not valid**")
    return "\n".join(parts) + "\n"


def write_results(
    results_dir: Path,
    summaries: Sequence[Summary],
    environment: dict,
    notes: Sequence[str],
    failures: dict[str, str],
) -> str:
    markdown = render_markdown(summaries, environment, notes, failures)
    (results_dir / "results.md").write_text(markdown)
    document = {
        "environment": environment,
        "summaries": [asdict(s) for s in summaries],
        "ratios": ratio_lines(summaries),
        "notes": list(notes),
        "failures": failures,
    }
    (results_dir / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    return markdown


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="interleaved rounds")
    parser.add_argument("--duration", type=int, default=DEFAULT_DURATION, help="seconds per run")
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP,
        help="seconds of discarded wrk before each run",
    )
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS, help="wrk -c")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="wrk -t")
    parser.add_argument(
        "--oidc", action="store_true", help="add fastgw-oidc: openid-connect, token-cached path"
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=DEFAULT_CLIENTS,
        help="distinct OIDC clients rotated by a wrk Lua script (implies --oidc when > 1)",
    )
    parser.add_argument("--no-haproxy", action="store_true", help="skip haproxy even if installed")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_ROOT, help="a timestamped directory goes here"
    )
    args = parser.parse_args(argv)
    if min(args.rounds, args.duration, args.connections, args.threads, args.clients) < 1:
        parser.error("--rounds, --duration, --connections, --threads, --clients must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.clients > 1:
        args.oidc = True
    return args


def start_targets(
    setup: Setup, stack: contextlib.ExitStack, args: argparse.Namespace, notes: list[str]
) -> tuple[list[Target], dict[str, str]]:
    """Start every server; an optional target that fails is recorded, not fatal."""
    targets = [start_upstream(setup), start_nginx_proxy(setup)]
    haproxy = find_tool("haproxy")
    if haproxy and not args.no_haproxy:
        targets.append(start_haproxy(setup, haproxy))
    elif not haproxy:
        notes.append("haproxy not installed: skipped (apt-get install haproxy to include it)")
    targets.append(start_fastgw_plain(setup))
    for target in targets:
        check_target(target)
    failures: dict[str, str] = {}
    if args.oidc:
        try:
            targets.append(start_fastgw_oidc(setup, stack, args.clients))
        except (BenchError, RuntimeError) as error:
            failures["fastgw-oidc"] = str(error)
            print(f"fastgw-oidc FAILED, measuring the other targets: {error}", file=sys.stderr)
    return targets, failures


def describe_environment(args: argparse.Namespace, nginx: str, pin_note: str) -> dict:
    return {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "fastgw": git_revision(),
        "nginx": tool_version([nginx, "-v"]),
        "wrk": tool_version([args.wrk, "-v"]),
        "cpus": os.cpu_count(),
        "pinning": pin_note,
        "wrk_args": f"-t{args.threads} -c{args.connections} -d{args.duration}s --latency",
        "warmup_seconds": args.warmup,
        "rounds": args.rounds,
        "loadavg_before": load_average(),
    }


def load_average() -> str:
    """1/5/15-minute load: other work on a shared box is the usual cause of noisy rounds."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def make_results_dir(root: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_tools()
    if missing:
        packages = " ".join(APT_PACKAGES[name] for name in missing)
        print(f"missing: {', '.join(missing)}. Install with:\n  apt-get install {packages}")
        return EXIT_MISSING_TOOLS
    nginx = find_tool("nginx") or "nginx"
    args.wrk = find_tool("wrk") or "wrk"
    args.pin, pin_note = (
        (False, "disabled (--no-pin)") if args.no_pin else pinning_available(PROXY_CPU, LOAD_CPU)
    )
    results_dir = make_results_dir(args.results_dir)
    environment = describe_environment(args, nginx, pin_note)
    notes: list[str] = [] if args.pin else [f"not pinned: {pin_note}"]
    print(f"results: {results_dir}\npinning: {pin_note}", flush=True)

    with exit_on_sigterm(), contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastgw-bench-")))
        log_dir = results_dir / "logs"
        log_dir.mkdir()
        procs = Processes(log_dir, pin=args.pin)
        stack.callback(procs.stop_all)
        setup = Setup(procs=procs, work_dir=work_dir, results_dir=results_dir, nginx=nginx)
        try:
            targets, failures = start_targets(setup, stack, args, notes)
        except BenchError as error:
            print(f"setup failed: {error}", file=sys.stderr)
            return EXIT_FLAGGED
        seconds = args.rounds * len(targets) * (args.duration + args.warmup)
        print(
            f"targets: {', '.join(t.name for t in targets)}; about {seconds}s of load", flush=True
        )
        runs = run_rounds(targets, args)

    environment["loadavg_after"] = load_average()
    summaries = summarize(targets, runs)
    markdown = write_results(results_dir, summaries, environment, notes, failures)
    print()
    print(markdown)
    flagged = bool(failures) or any(s.errors for s in summaries)
    return EXIT_FLAGGED if flagged else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
