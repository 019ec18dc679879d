"""rate-limiting's throughput in one run: a proxied route without it, with `policy: local`, and
with `policy: redis` and `sync_rate: -1` (one Redis round trip per request), interleaved.

Owns the scenario and its report; servers, wrk and its parsing come from common.py and the
interleaved wrk rounds from compare.py. Needs nginx (the upstream), wrk, redis-server.

    .venv/bin/python bench/rate_limiting.py [--rounds 3 --duration 5 --warmup 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
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
    exit_on_sigterm,
    fastgw_conf,
    find_tool,
    free_port,
    http_get,
    import_test_support,
    make_results_dir,
    start_upstream,
)
from compare import render_table, run_rounds, summarize

# Limits no run reaches: every request is counted and proxied, none answered 429 (wrk would
# count those as errors). The hour limit makes each request count two windows, as Kong's
# typical configs do.
LIMITS = {"second": 1_000_000_000, "hour": 1_000_000_000_000}


def rate_limiting(policy: str, redis_port: int) -> dict:
    config: dict = {**LIMITS, "policy": policy}
    if policy == "redis":
        config.update(redis={"host": LOOPBACK, "port": redis_port}, sync_rate=-1)
    return {"name": "rate-limiting", "config": config}


def start_gateway(setup: Setup, name: str, plugins: list[dict], note: str) -> Target:
    """One fastgw worker on PROXY_CPU with one route carrying `plugins`."""
    port = free_port()
    conf = setup.write_config(f"{name}.kong.yml", fastgw_conf(port, setup.upstream_port, plugins))
    argv = [sys.executable, "-m", "fastgw", "run", "-c", str(conf), "--workers", "1"]
    argv += ["--admin-listen", "off", "--log-level", "warning"]
    pgid = setup.start_server(name, argv, port, PROXY_CPU)
    status, body = http_get(port)
    if status != 200:
        raise BenchError(f"{name}: first request answered {status}: {body[:200]!r}")
    return Target(name, f"http://{LOOPBACK}:{port}/", pgid, note=note)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_ROOT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in ("nginx", "wrk", "redis-server") if find_tool(tool) is None]
    if missing:
        print(f"missing: {', '.join(missing)}: apt-get install -y nginx wrk redis-server")
        return 2
    args.wrk, args.pin = find_tool("wrk"), True
    results_dir = make_results_dir(args.results_dir, "-rate-limiting")
    import_test_support()
    from tests.support.redis import RedisServer

    with exit_on_sigterm(), contextlib.ExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fastgw-bench-")))
        (results_dir / "logs").mkdir()
        procs = Processes(results_dir / "logs", pin=True)
        stack.callback(procs.stop_all)
        setup = Setup(procs, work_dir, results_dir, find_tool("nginx") or "nginx")
        redis = stack.enter_context(RedisServer())
        try:
            start_upstream(setup)
            targets = [
                start_gateway(setup, "plain", [], "no plugin"),
                start_gateway(
                    setup, "rl-local", [rate_limiting("local", redis.port)], "policy: local"
                ),
                start_gateway(
                    setup,
                    "rl-redis",
                    [rate_limiting("redis", redis.port)],
                    "policy: redis, sync_rate: -1",
                ),
            ]
            runs = run_rounds(targets, args)
        except BenchError as error:
            print(f"failed: {error}", file=sys.stderr)
            return 1
    summaries = summarize(targets, runs)
    by_name = {s.name: s for s in summaries}
    local = by_name["rl-local"].requests_per_sec
    lines = [
        render_table(summaries),
        "",
        f"rate-limiting local / no plugin: {local / by_name['plain'].requests_per_sec:.2f}x",
        f"rate-limiting redis (sync_rate -1) / local: "
        f"{by_name['rl-redis'].requests_per_sec / local:.2f}x",
    ]
    report = "\n".join(lines)
    (results_dir / "report.md").write_text(report + "\n")
    (results_dir / "report.json").write_text(
        json.dumps({s.name: s.requests_per_sec for s in summaries}, indent=2) + "\n"
    )
    print()
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
