"""Capacity comparison with wrk, in one run: upstream direct, nginx, fastgw (and fastgw + OIDC).

Owns the interleaved wrk rounds over the servers under test and the report: medians per target
and ratios against nginx (bench/README.md, "How the figures are taken"); starting servers, wrk
and parsing live in common.py.
Stdlib only; installs nothing.

    .venv/bin/python bench/compare.py [--rounds 5 --duration 10 --warmup 3] [--oidc [--clients N]]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import shlex
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import (
    APT_PACKAGES,
    LOAD_CPU,
    LOOPBACK,
    NGINX_WORKER_CONNECTIONS,
    PROXY_CPU,
    RESULTS_ROOT,
    BenchError,
    Processes,
    Setup,
    Target,
    WrkOptions,
    WrkRun,
    basic_authorization,
    check_idp_installed,
    exit_on_sigterm,
    extra_credentials,
    fastgw_build,
    find_tool,
    free_port,
    git_revision,
    http_get,
    load_average,
    make_results_dir,
    measure_wrk,
    missing_tools,
    nginx_lua_available,
    nginx_proxy_conf,
    oidc_plugin,
    pinning_available,
    rotation_lua,
    start_fastgw,
    start_idp,
    start_nginx,
    start_nginx_lua,
    start_nginx_proxy,
    start_upstream,
    tool_version,
    warm_token_cache,
)

# -- constants ------------------------------------------------------------------------------------

DEFAULT_ROUNDS = 5
DEFAULT_CONNECTIONS = 50
DEFAULT_DURATION = 10  # seconds per measured wrk run
DEFAULT_WARMUP = 3  # seconds of wrk before each measured run, results discarded
DEFAULT_THREADS = 1
DEFAULT_CLIENTS = 1

EXIT_OK, EXIT_FLAGGED, EXIT_MISSING_TOOLS = 0, 1, 2


# -- results --------------------------------------------------------------------------------------


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


# -- starting targets -----------------------------------------------------------------------------


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


def start_haproxy(setup: Setup, haproxy: str) -> Target:
    port = free_port()
    conf_path = setup.write_config("haproxy.cfg", haproxy_conf(port, setup.upstream_port))
    pgid = setup.start_server("haproxy", [haproxy, "-db", "-f", str(conf_path)], port, PROXY_CPU)
    return Target("haproxy", f"http://{LOOPBACK}:{port}/", pgid, note="http-reuse always")


def start_floor_proxy(setup: Setup) -> Target:
    """The calibration proxy (bench/floor_proxy.py): what Python itself costs per request."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("floor_proxy.py")), str(port)]
    argv.append(str(setup.upstream_port))
    pgid = setup.start_server("floor", argv, port, PROXY_CPU)
    note = "calibration: minimal uvloop+httptools proxy, no checks"
    return Target("python-floor", f"http://{LOOPBACK}:{port}/", pgid, note=note)


def start_fastgw_plain(setup: Setup, workers: int) -> Target:
    port, pgid = start_fastgw(setup, "fastgw", workers=workers)
    note = "no plugins" + (f", {workers} workers" if workers > 1 else "")
    return Target("fastgw", f"http://{LOOPBACK}:{port}/", pgid, note=note)


def start_kong_lua(setup: Setup, oidc: Target, authorizations: list[str], workers: int) -> Target:
    """The Kong-like anchor: nginx + Lua swapping the same requests' Basic for a cached token."""
    port, pgid = start_nginx_lua(setup, authorizations, workers=workers)
    status, body = http_get(port, {"Authorization": authorizations[0]})
    if status != 200:
        raise BenchError(f"nginx-lua: readiness request returned HTTP {status}: {body[:300]!r}")
    note = "nginx + lua: sha1 of Authorization, Lua table hit, Bearer set (Kong's cheapest hit)"
    return dataclasses.replace(
        oidc, name="nginx-lua", url=f"http://{LOOPBACK}:{port}/", pgid=pgid, note=note
    )


# The fields of Kong's log record (what fastgw's file-log writes) that nginx can write itself,
# as one JSON line per request: escape=json, buffered as a busy nginx's access log is. nginx
# cannot table every header or redact one, so the headers the bench sends are named and the
# Authorization value is the constant fastgw writes; route and service are constants.
NGINX_RECORD = (
    '{"request":{"id":"$request_id","uri":"$request_uri","url":"$scheme://$http_host'
    '$request_uri","querystring":"$args","method":"$request_method","headers":{"host":'
    '"$http_host","user-agent":"$http_user_agent","accept":"$http_accept","authorization":'
    '"REDACTED"},"size":$request_length},"upstream_uri":"$uri$is_args$args",'
    '"upstream_status":"$upstream_status","response":{"status":$status,"headers":{'
    '"content-type":"$sent_http_content_type","content-length":"$sent_http_content_length",'
    '"server":"$upstream_http_server","date":"$upstream_http_date"},"size":$bytes_sent},'
    '"latencies":{"proxy":"$upstream_response_time","request":$request_time,"connect":'
    '"$upstream_connect_time"},"client_ip":"$remote_addr","started_at":$msec,"source":'
    '"upstream","workspace_name":"default","route":{"name":"all","paths":["/"]},"service":'
    '{"name":"upstream","protocol":"http","host":"127.0.0.1"}}'
)


def start_nginx_json_log(setup: Setup, like: Target, workers: int) -> Target:
    """nginx proxy_pass writing a JSON access log of Kong's record fields (NGINX_RECORD),
    given `like`'s requests (the Authorization header fastgw-oidc-ops swaps)."""
    port = free_port()
    log_path = setup.results_dir / "nginx-access.log"
    log_format = f"    log_format kong escape=json '{NGINX_RECORD}';\n"
    access_log = f"\n            access_log {log_path} kong buffer=64k flush=1s;"
    upstream_port = setup.upstream_port
    pgid = start_nginx(
        setup,
        "nginx-log",
        lambda prefix: nginx_proxy_conf(
            prefix,
            port,
            upstream_port,
            workers=workers,
            http=log_format,
            location=access_log,
        ),
        port,
        PROXY_CPU,
    )
    note = "proxy_pass + JSON access log of Kong's record fields (escape=json, buffer=64k)"
    return dataclasses.replace(
        like, name="nginx-log", url=f"http://{LOOPBACK}:{port}/", pgid=pgid, note=note
    )


def ops_plugins(setup: Setup) -> list[dict]:
    """Kong's prometheus (every series) and file-log (a real file, one line per request)."""
    every_series = {"status_code_metrics": True, "latency_metrics": True, "bandwidth_metrics": True}
    access_log = setup.results_dir / "access.log"
    return [
        {"name": "prometheus", "config": every_series},
        {"name": "file-log", "config": {"path": str(access_log)}},
    ]


def start_fastgw_oidc(
    setup: Setup,
    stack: contextlib.ExitStack,
    clients: int,
    workers: int = 1,
    name: str = "fastgw-oidc",
    extra_plugins: list[dict] | None = None,
    idp: object = None,
) -> tuple[Target, object, list[str]]:
    """fastgw + openid-connect against the test IdP; every client's token cached before wrk."""
    check_idp_installed()
    if idp is None:
        idp = start_idp(stack, extra_clients=clients if clients > 1 else 0)
    if clients > 1:
        credentials = extra_credentials(idp)
    else:
        from tests.support.idp import BASIC_CLIENT  # importable once start_idp has run

        credentials = [BASIC_CLIENT]
    try:
        plugins = [oidc_plugin(idp.issuer), *(extra_plugins or [])]  # type: ignore[attr-defined]
        port, pgid = start_fastgw(setup, name, plugins, workers=workers)
    except BenchError as error:
        raise BenchError(f"{error}\nIs the openid-connect plugin implemented yet?") from error
    authorizations = [basic_authorization(cid, secret) for cid, secret in credentials]
    for (client_id, _), authorization in zip(credentials, authorizations, strict=True):
        for _ in range(workers):  # each worker process has its own L1
            warm_token_cache(port, client_id, authorization)
    url = f"http://{LOOPBACK}:{port}/"
    if clients == 1:
        note = "token cached, 1 client" + (", prometheus + file-log" if extra_plugins else "")
        target = Target(
            name, url, pgid, headers=(f"Authorization: {authorizations[0]}",), note=note
        )
        return target, idp, authorizations
    script = setup.results_dir / "oidc-clients.lua"
    script.write_text(rotation_lua(authorizations))
    note = f"token cached, {clients} clients rotated"
    return Target(name, url, pgid, script=script, note=note), idp, authorizations


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


def wrk_options(args: argparse.Namespace) -> WrkOptions:
    return WrkOptions(
        wrk=args.wrk, threads=args.threads, connections=args.connections, pin=args.pin
    )


def measure(target: Target, args: argparse.Namespace) -> WrkRun:
    """A discarded warm-up run, then the measured run with the target's CPU time per request."""
    return measure_wrk(target, wrk_options(args), args.duration, args.warmup)


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
    pairs += [("fastgw-oidc", "fastgw+auth"), ("fastgw-oidc", "nginx"), ("fastgw", "python-floor")]
    pairs += [("fastgw-oidc", "nginx-lua"), ("nginx-lua", "nginx")]
    pairs += [("fastgw-oidc-ops", "fastgw-oidc"), ("fastgw-oidc-ops", "nginx-log")]
    pairs += [("nginx-log", "nginx")]
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
        "--ops",
        action="store_true",
        help="add fastgw-oidc-ops: token-cached, with prometheus + file-log (implies --oidc), "
        "and nginx-log: nginx writing the same record's fields as a JSON access log",
    )
    parser.add_argument(
        "--floor", action="store_true", help="add python-floor: bench/floor_proxy.py calibration"
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=DEFAULT_CLIENTS,
        help="distinct OIDC clients rotated by a wrk Lua script (implies --oidc when > 1)",
    )
    parser.add_argument("--no-haproxy", action="store_true", help="skip haproxy even if installed")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of nginx and fastgw (with more than 1, use --no-pin)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_ROOT, help="a timestamped directory goes here"
    )
    args = parser.parse_args(argv)
    if min(args.rounds, args.duration, args.connections, args.threads, args.clients) < 1:
        parser.error("--rounds, --duration, --connections, --threads, --clients must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.clients > 1 or args.ops:
        args.oidc = True
    return args


def start_targets(
    setup: Setup, stack: contextlib.ExitStack, args: argparse.Namespace, notes: list[str]
) -> tuple[list[Target], dict[str, str]]:
    """Start every server; an optional target that fails is recorded, not fatal."""
    targets = [start_upstream(setup), start_nginx_proxy(setup, workers=args.workers)]
    haproxy = find_tool("haproxy")
    if haproxy and not args.no_haproxy:
        targets.append(start_haproxy(setup, haproxy))
    elif not haproxy:
        notes.append("haproxy not installed: skipped (apt-get install haproxy to include it)")
    if args.floor:
        targets.append(start_floor_proxy(setup))
    plain = start_fastgw_plain(setup, args.workers)
    targets.append(plain)
    for target in targets:
        check_target(target)
    failures: dict[str, str] = {}
    if args.oidc:
        try:
            oidc, idp, authorizations = start_fastgw_oidc(setup, stack, args.clients, args.workers)
            targets.append(oidc)
            if nginx_lua_available():
                targets.append(start_kong_lua(setup, oidc, authorizations, args.workers))
            else:
                notes.append(
                    "nginx-lua skipped: apt-get install libnginx-mod-http-lua to include it"
                )
            # The plugin's own cost: the plain path given the very same requests (the Basic
            # header is then forwarded as is), so only the token swap differs.
            same_requests = "no plugins, fastgw-oidc's requests (Basic header forwarded)"
            targets.append(
                dataclasses.replace(
                    plain,
                    name="fastgw+auth",
                    headers=oidc.headers,
                    script=oidc.script,
                    note=same_requests,
                )
            )
            if args.ops:
                ops, _, _ = start_fastgw_oidc(
                    setup,
                    stack,
                    args.clients,
                    args.workers,
                    name="fastgw-oidc-ops",
                    extra_plugins=ops_plugins(setup),
                    idp=idp,
                )
                targets.append(ops)
                targets.append(start_nginx_json_log(setup, ops, args.workers))
        except (BenchError, RuntimeError) as error:
            failures["fastgw-oidc"] = str(error)
            print(f"fastgw-oidc FAILED, measuring the other targets: {error}", file=sys.stderr)
    return targets, failures


def describe_environment(args: argparse.Namespace, nginx: str, pin_note: str) -> dict:
    return {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "fastgw": git_revision(),
        "fastgw_build": fastgw_build(),
        "workers": args.workers,
        "nginx": tool_version([nginx, "-v"]),
        "wrk": tool_version([args.wrk, "-v"]),
        "cpus": os.cpu_count(),
        "pinning": pin_note,
        "wrk_args": f"-t{args.threads} -c{args.connections} -d{args.duration}s --latency",
        "warmup_seconds": args.warmup,
        "rounds": args.rounds,
        "loadavg_before": load_average(),
    }


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
