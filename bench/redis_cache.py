"""The shared token cache measured, in one run: the hit path with and without Redis, one and two
workers (nginx with one and two as the reference), miss latency from Redis vs from the IdP, and
IdP token calls of three instances x N new clients with and without Redis.

Owns the scenarios and their report; servers, wrk and its parsing come from common.py and the
interleaved wrk rounds from compare.py. Needs nginx, wrk, redis-server.

    .venv/bin/python bench/redis_cache.py [--rounds 3 --duration 8 --warmup 2] [--clients 1000]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import (
    LOOPBACK,
    PROXY_CPU,
    RESULTS_ROOT,
    BenchError,
    Processes,
    Setup,
    Target,
    basic_authorization,
    exit_on_sigterm,
    extra_credentials,
    fastgw_conf,
    find_tool,
    free_port,
    http_get,
    idp_token_requests,
    import_test_support,
    make_results_dir,
    nginx_proxy_conf,
    oidc_plugin,
    start_idp,
    start_nginx,
    start_nginx_proxy,
    start_upstream,
    warm_token_cache,
)
from compare import render_table, run_rounds, summarize

CACHE_SECRET = "bench-cluster-cache-secret-0001"
FLEET = 3  # instances in the token-call scenario
# Sequential first requests timed per path (L2 hit, IdP): enough for a stable median and p90.
LATENCY_SAMPLES = 200
# Concurrent first requests in the token-call scenario (threads, one request each at a time).
FLEET_CONCURRENCY = 64


def redis_plugin(issuer: str, redis_port: int) -> dict:
    plugin = oidc_plugin(issuer)
    plugin["config"].update(
        cluster_cache_strategy="redis",
        cluster_cache_secret=CACHE_SECRET,
        cluster_cache_redis={"port": redis_port},
    )
    return plugin


def start_gateway(
    setup: Setup, name: str, plugin: dict, *, workers: int = 1, pin: bool = True
) -> tuple[int, int]:
    """fastgw with one openid-connect route; (port, pgid). Pinned to PROXY_CPU when one worker."""
    port = free_port()
    conf = setup.write_config(f"{name}.kong.yml", fastgw_conf(port, setup.upstream_port, [plugin]))
    argv = [sys.executable, "-m", "fastgw", "run", "-c", str(conf), "--workers", str(workers)]
    argv += ["--admin-listen", "off", "--log-level", "warning"]
    cpu = PROXY_CPU if pin and workers == 1 else None
    return port, setup.start_server(name, argv, port, cpu)


def start_nginx_two_workers(setup: Setup) -> Target:
    port = free_port()

    def build(prefix: Path) -> str:
        conf = nginx_proxy_conf(prefix, port, setup.upstream_port)
        if "worker_processes 1;" not in conf:
            raise BenchError("nginx_main_conf no longer says worker_processes 1")
        return conf.replace("worker_processes 1;", "worker_processes 2;")

    pgid = start_nginx(setup, "nginx-2w", build, port, None)
    return Target("nginx-2w", f"http://{LOOPBACK}:{port}/", pgid, note="2 workers, unpinned")


def cached_target(name: str, port: int, pgid: int, authorization: str, note: str) -> Target:
    warm_token_cache(port, name, authorization)
    return Target(
        name,
        f"http://{LOOPBACK}:{port}/",
        pgid,
        headers=(f"Authorization: {authorization}",),
        note=note,
    )


# -- scenarios ------------------------------------------------------------------------------------


def capacity(setup: Setup, idp, redis_port: int, authorization: str, args) -> str:
    targets = [start_upstream(setup)]
    targets.append(start_nginx_proxy(setup))
    targets.append(start_nginx_two_workers(setup))
    port, pgid = start_gateway(setup, "oidc", oidc_plugin(idp.issuer))
    targets.append(cached_target("oidc", port, pgid, authorization, "1 worker, no Redis"))
    port, pgid = start_gateway(setup, "oidc-redis", redis_plugin(idp.issuer, redis_port))
    targets.append(cached_target("oidc-redis", port, pgid, authorization, "1 worker, Redis"))
    port, pgid = start_gateway(
        setup, "oidc-redis-2w", redis_plugin(idp.issuer, redis_port), workers=2
    )
    for _ in range(8):  # each worker caches the token once (from Redis)
        warm_token_cache(port, "oidc-redis-2w", authorization)
    targets.append(
        Target(
            "oidc-redis-2w",
            f"http://{LOOPBACK}:{port}/",
            pgid,
            headers=(f"Authorization: {authorization}",),
            note="2 workers, Redis, unpinned",
        )
    )
    runs = run_rounds(targets, args)
    summaries = summarize(targets, runs)
    table = render_table(summaries)
    by_name = {s.name: s for s in summaries}
    ratio = by_name["oidc-redis"].requests_per_sec / by_name["oidc"].requests_per_sec
    workers = by_name["oidc-redis-2w"].requests_per_sec / by_name["oidc-redis"].requests_per_sec
    nginx = by_name["nginx-2w"].requests_per_sec / by_name["nginx"].requests_per_sec
    return (
        f"{table}\n\nhit path, Redis configured / not: {ratio:.2f}x\n"
        f"--workers 2 / --workers 1 (both with Redis): {workers:.2f}x "
        f"(nginx 2 workers / 1: {nginx:.2f}x)"
    )


def first_request_ms(port: int, authorization: str) -> float:
    started = time.perf_counter()
    status, body = http_get(port, {"Authorization": authorization})
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise BenchError(f"first request answered {status}: {body[:200]!r}")
    return elapsed


def percentiles(samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9)]
    return f"p50 {statistics.median(ordered):.2f} ms, p90 {p90:.2f} ms"


def miss_latency(setup: Setup, idp, redis_port: int, credentials) -> str:
    """First requests on a gateway whose L1 is cold: tokens from Redis (another instance put
    them there) vs from the IdP (with and without Redis configured)."""
    writer, _ = start_gateway(setup, "writer", redis_plugin(idp.issuer, redis_port))
    reader, _ = start_gateway(setup, "reader", redis_plugin(idp.issuer, redis_port))
    direct, _ = start_gateway(setup, "direct", oidc_plugin(idp.issuer))
    shared = credentials[:LATENCY_SAMPLES]
    fresh = credentials[LATENCY_SAMPLES : 2 * LATENCY_SAMPLES]
    direct_only = credentials[2 * LATENCY_SAMPLES : 3 * LATENCY_SAMPLES]
    for client_id, secret in shared:
        warm_token_cache(writer, client_id, basic_authorization(client_id, secret))
    before = idp_token_requests(idp)
    from_redis = [first_request_ms(reader, basic_authorization(*c)) for c in shared]
    redis_calls = idp_token_requests(idp) - before
    from_idp_with_redis = [first_request_ms(reader, basic_authorization(*c)) for c in fresh]
    from_idp = [first_request_ms(direct, basic_authorization(*c)) for c in direct_only]
    return "\n".join(
        [
            f"L2 hit (Redis on loopback):        {percentiles(from_redis)}"
            f"  (IdP calls: {redis_calls})",
            f"IdP call, Redis configured (miss):  {percentiles(from_idp_with_redis)}",
            f"IdP call, no Redis:                 {percentiles(from_idp)}",
        ]
    )


def fleet_token_calls(setup: Setup, idp, redis_port: int | None, credentials) -> int:
    """FLEET instances; every client's first request sent to each of them, concurrently."""
    plugin = redis_plugin(idp.issuer, redis_port) if redis_port else oidc_plugin(idp.issuer)
    label = "redis" if redis_port else "local"
    ports = [
        start_gateway(setup, f"fleet-{label}-{index}", plugin, pin=False)[0]
        for index in range(FLEET)
    ]
    jobs = [(port, basic_authorization(*client)) for client in credentials for port in ports]
    before = idp_token_requests(idp)
    with concurrent.futures.ThreadPoolExecutor(FLEET_CONCURRENCY) as pool:
        statuses = list(pool.map(lambda job: http_get(job[0], {"Authorization": job[1]})[0], jobs))
    if set(statuses) != {200}:
        raise BenchError(f"fleet requests answered {sorted(set(statuses))}")
    return idp_token_requests(idp) - before


# -- the run --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=1000, help="new clients per fleet run")
    parser.add_argument("--skip-capacity", action="store_true", help="no wrk runs")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_ROOT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in ("nginx", "wrk", "redis-server") if find_tool(tool) is None]
    if missing:
        print(f"missing: {', '.join(missing)}: apt-get install -y nginx wrk redis-server")
        return 2
    args.wrk, args.pin = find_tool("wrk"), True
    results_dir = make_results_dir(args.results_dir, "-redis")
    import_test_support()
    from tests.support.redis import RedisServer

    sections: dict[str, str] = {}
    with exit_on_sigterm(), contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastgw-bench-")))
        (results_dir / "logs").mkdir()
        procs = Processes(results_dir / "logs", pin=True)
        stack.callback(procs.stop_all)
        setup = Setup(procs, work_dir, results_dir, find_tool("nginx") or "nginx")
        redis = stack.enter_context(RedisServer())
        idp = start_idp(stack, extra_clients=3 * LATENCY_SAMPLES + 2 * args.clients)
        credentials = extra_credentials(idp)
        try:
            if not args.skip_capacity:
                authorization = basic_authorization(*credentials[0])  # warmed later anyway
                print("capacity (wrk) ...", flush=True)
                sections["capacity"] = capacity(setup, idp, redis.port, authorization, args)
            else:
                start_upstream(setup)
            print("miss latency ...", flush=True)
            sections["miss latency"] = miss_latency(setup, idp, redis.port, credentials)
            print("fleet token calls ...", flush=True)
            unseen = credentials[3 * LATENCY_SAMPLES :]  # no instance has cached these yet
            batch_local = unseen[: args.clients]
            batch_redis = unseen[args.clients : 2 * args.clients]
            local = fleet_token_calls(setup, idp, None, batch_local)
            shared = fleet_token_calls(setup, idp, redis.port, batch_redis)
            sections["fleet"] = (
                f"{FLEET} instances x {args.clients} new clients (each client's first request "
                f"to every instance, {FLEET_CONCURRENCY} at a time):\n"
                f"  IdP token calls without Redis: {local}\n"
                f"  IdP token calls with Redis:    {shared}"
            )
        except BenchError as error:
            print(f"failed: {error}", file=sys.stderr)
            return 1
    report = "\n\n".join(f"## {name}\n\n{text}" for name, text in sections.items())
    (results_dir / "report.md").write_text(report + "\n")
    (results_dir / "report.json").write_text(json.dumps(sections, indent=2) + "\n")
    print()
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
